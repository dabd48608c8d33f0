//! Assembling a team's view from its two parts: the global part and the team's overlay. The
//! compile and a sidecar that receives the parts separately build the view the same way.

use crate::v1::{Deployment, Part, Snapshot};

/// The view of `team` at `version`: every deployment of both parts, by id (the overlay's
/// private ones among the global ones), and the overlay's routes before the global ones.
pub fn assemble(version: String, team: &str, global: &Part, overlay: &Part) -> Snapshot {
    Snapshot {
        version,
        generation: 0,
        team: team.to_owned(),
        deployments: merge_by_id(&global.deployments, &overlay.deployments),
        routes: overlay.routes.iter().chain(&global.routes).cloned().collect(),
    }
}

fn merge_by_id(a: &[Deployment], b: &[Deployment]) -> Vec<Deployment> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].id <= b[j].id {
            out.push(a[i].clone());
            i += 1;
        } else {
            out.push(b[j].clone());
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(id: &str) -> Deployment {
        Deployment { id: id.into(), ..Default::default() }
    }

    #[test]
    fn deployments_merge_by_id_and_overlay_routes_come_first() {
        let global = Part { deployments: vec![dep("a"), dep("c")], routes: vec![Default::default()] };
        let own_route = crate::v1::Route { public_name: "own".into(), ..Default::default() };
        let overlay = Part { deployments: vec![dep("b")], routes: vec![own_route] };
        let view = assemble("v".into(), "t", &global, &overlay);
        let ids: Vec<&str> = view.deployments.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(view.routes[0].public_name, "own");
        assert_eq!((view.version.as_str(), view.team.as_str()), ("v", "t"));
    }
}
