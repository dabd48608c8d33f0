//! The merged adaptive state in ConfigMaps the leader owns, sharded below the 1 MiB object
//! limit. Shards are written in two alternating sets; the index, written last, names the set
//! and how many shards it holds, so a leader that dies mid-save leaves the previous complete
//! state readable, never half of one.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::{Deserialize, Serialize};

use super::fleet::{DATA_KEY, FLEET_LABEL};
use crate::fleet::replicas::Persisted;

/// The index ConfigMap.
pub const INDEX: &str = "llmroute-adaptive-index";
/// Largest shard written, bytes of JSON (well below the 1 MiB object limit).
const SHARD_BYTES: usize = 512 * 1024;
/// Most shards (a larger state is cut, its oldest cells last).
const MAX_SHARDS: usize = 64;

#[derive(Serialize, Deserialize)]
struct Index {
    generation: u64,
    shards: usize,
    absorbed: crate::fleet::replicas::AbsorbedTotals,
}

#[derive(Serialize, Deserialize)]
struct Shard {
    generation: u64,
    cells: Vec<(llmroute_fleet::learning::Cell, f64, f64)>,
}

fn shard_name(generation: u64, i: usize) -> String {
    format!("llmroute-adaptive-{}-{i}", generation % 2)
}

fn body(name: &str, data: String) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {FLEET_LABEL: "adaptive"}},
        "data": {DATA_KEY: data},
    })
}

/// Splits `cells` into shards of at most [`SHARD_BYTES`] of JSON each.
fn split(cells: &[(llmroute_fleet::learning::Cell, f64, f64)]) -> Vec<Vec<(llmroute_fleet::learning::Cell, f64, f64)>> {
    let mut shards = vec![Vec::new()];
    let mut size = 0;
    for cell in cells {
        let len = serde_json::to_string(cell).map_or(0, |s| s.len()) + 1;
        if size + len > SHARD_BYTES && !shards.last().is_some_and(Vec::is_empty) {
            if shards.len() >= MAX_SHARDS {
                break;
            }
            shards.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = shards.last_mut() {
            last.push(cell.clone());
        }
    }
    shards
}

/// Writes `persisted` as generation `generation`: the shards, then the index.
pub async fn save(
    api: &Api<ConfigMap>,
    field_manager: &str,
    persisted: &Persisted,
    generation: u64,
) -> kube::Result<()> {
    let params = PatchParams::apply(field_manager).force();
    let shards = split(&persisted.cells);
    for (i, cells) in shards.iter().enumerate() {
        let name = shard_name(generation, i);
        let data = serde_json::to_string(&Shard { generation, cells: cells.clone() }).unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&body(&name, data))).await?;
    }
    let index = Index { generation, shards: shards.len(), absorbed: persisted.absorbed.clone() };
    api.patch(INDEX, &params, &Patch::Apply(&body(INDEX, serde_json::to_string(&index).unwrap_or_default()))).await?;
    // Shards of this set beyond the new count are left from a larger state: removed.
    for i in shards.len()..MAX_SHARDS {
        let name = shard_name(generation, i);
        if api.delete(&name, &DeleteParams::default()).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The state the index names, with its generation; `None` when there is none or a shard of
/// it is missing or of another generation.
pub fn load(store: &Store<ConfigMap>, namespace: &str) -> Option<(u64, Persisted)> {
    let read = |name: &str| -> Option<String> {
        let cm = store.get(&ObjectRef::new(name).within(namespace))?;
        cm.data.as_ref()?.get(DATA_KEY).cloned()
    };
    let index: Index = serde_json::from_str(&read(INDEX)?).ok()?;
    let mut cells = Vec::new();
    for i in 0..index.shards.min(MAX_SHARDS) {
        let shard: Shard = serde_json::from_str(&read(&shard_name(index.generation, i))?).ok()?;
        if shard.generation != index.generation {
            return None;
        }
        cells.extend(shard.cells);
    }
    Some((index.generation, Persisted { cells, absorbed: index.absorbed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_stay_below_the_object_limit_and_keep_every_cell() {
        let cells: Vec<_> = (0..40_000)
            .map(|i| ((format!("group-{i}"), "writing".to_string(), format!("ns/deployment-{i}")), 1.5, 2.5))
            .collect();
        let shards = split(&cells);
        assert!(shards.len() > 1);
        for s in &shards {
            assert!(serde_json::to_string(&Shard { generation: 1, cells: s.clone() }).unwrap().len() < 1024 * 1024);
        }
        assert_eq!(shards.concat(), cells);
        assert_eq!(split(&[]), vec![Vec::new()], "an empty state is one empty shard");
    }
}
