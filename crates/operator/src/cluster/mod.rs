//! The cluster layer: an edge around the same compile and stream as manifests mode. Reflector
//! stores feed builds; the leader (a Lease) writes status and Events, runs the probes and
//! publishes the CA bundle; followers report their acknowledgements to it.

pub mod adaptive;
pub mod ca;
pub mod conditions;
pub mod fleet;
pub mod inputs;
pub mod leader;
pub mod source;
pub mod writer;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use llmroute_api::ResourceStatus;
use llmroute_proto::v1;
use llmroute_snapshot::{Kind, ObjectKey};
use tokio::sync::Notify;

use crate::auth::{Authenticator, TokenReviewer};
use crate::flags::{Flags, TlsMode};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::serve::{
    ConfigurationError, DEBOUNCE_MAX, DEBOUNCE_QUIET, Listeners, admission, cert_files, new_prober, serve,
};
use crate::state::Shared;
use fleet::{DATA_KEY, FLEET_LABEL, Report};
use inputs::{Assembler, Settings};
use source::Stores;
use writer::StatusWriter;

/// How the cluster layer runs (from flags, or from a test).
#[derive(Clone, Debug)]
pub struct Options {
    /// The operator's namespace.
    pub namespace: String,
    /// This replica's name.
    pub pod: String,
    /// Sources: trusted namespaces, config name, grace period.
    pub settings: Settings,
    /// The Lease's name.
    pub lease_name: String,
    /// Status writes per second.
    pub writes_per_second: f64,
    /// Share of sidecars for `Ready`.
    pub ready_threshold: f64,
    /// How often the status writer and the reports run.
    pub tick: Duration,
    /// Lease duration (grace is a third of it).
    pub lease_seconds: u64,
}

/// The name of the health ConfigMap the leader writes.
const HEALTH_CONFIGMAP: &str = "llmroute-fleet-health";
/// The ConfigMap in which the leader publishes the fleet's decisions for followers.
const STATE_CONFIGMAP: &str = "llmroute-fleet-state";
/// The key of a follower's report ConfigMap holding what its sidecars reported.
const FORWARD_KEY: &str = "fleet-forward.json";

/// Runs the in-cluster operator until SIGINT/SIGTERM.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let namespace = flags.namespace.clone().ok_or_else(|| {
        ConfigurationError("cluster mode needs --namespace (POD_NAMESPACE), or use --manifests".into())
    })?;
    let pod = flags.pod_name.clone().unwrap_or_else(|| format!("llmroute-operator-{:08x}", rand::random::<u32>()));
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    let listeners = Listeners::bind(&flags).await?;
    let mut shared = Shared::new(Metrics::new().context("registering metrics")?);
    shared.ready_threshold = flags.ready_threshold;
    shared.fleet = Arc::new(crate::fleet::Fleet::new(flags.fleet()));
    let shared = Arc::new(shared);
    let (serving, bundle) = match flags.tls_mode.unwrap_or(TlsMode::SelfSigned) {
        TlsMode::Off => (None, None),
        TlsMode::Files => {
            let files = cert_files(&flags)?;
            let (cert, follow) = files
                .load(crate::tls::files::POLL)
                .map_err(|e| ConfigurationError(format!("--tls-cert-file/--tls-key-file: {e}")))?;
            tokio::spawn(follow);
            let bundle = match &flags.tls_ca_file {
                Some(path) => {
                    let pem = crate::tls::files::read_pem(path)
                        .map_err(|e| ConfigurationError(format!("--tls-ca-file: {e}")))?;
                    Some(String::from_utf8_lossy(&pem).into_owned())
                }
                None => None,
            };
            (Some(cert), bundle)
        }
        TlsMode::SelfSigned => {
            let ca = ca::ensure_ca(&client, &namespace, &flags.ca_secret).await?;
            let names = crate::tls::pki::service_names(&flags.service_name, &namespace);
            let bundle = ca.cert_pem.clone();
            (Some(ca::serve_from(ca, names)?), Some(bundle))
        }
    };
    let global_namespaces: BTreeSet<String> = if flags.global_namespaces.is_empty() {
        BTreeSet::from([namespace.clone()])
    } else {
        flags.global_namespaces.iter().cloned().collect()
    };
    let options = Options {
        settings: Settings {
            global_namespaces,
            config_name: flags.routing_config.clone(),
            namespace: namespace.clone(),
            grace: Duration::from_secs(flags.grace_period_seconds),
        },
        namespace,
        pod,
        lease_name: flags.lease_name.clone(),
        writes_per_second: flags.status_writes_per_second,
        ready_threshold: flags.ready_threshold,
        tick: Duration::from_millis(500),
        lease_seconds: 15,
    };
    let controller = Controller::start(client.clone(), options, shared.clone(), Some(new_prober(&shared)?));
    if let Some(bundle) = bundle {
        tokio::spawn(publish_bundle(client.clone(), flags.ca_configmap.clone(), bundle, shared.clone()));
    }
    let auth = Authenticator::Cluster(Box::new(TokenReviewer::new(client, flags.token_audience.clone())));
    let served = serve(listeners, shared, admission(&flags, auth), serving).await;
    controller.stop().await;
    served
}

/// The running cluster layer.
pub struct Controller {
    leader: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    report: Option<(Client, String, String)>,
}

impl Controller {
    /// Starts the sources, the build loop, the election, the status writer and the reports.
    pub fn start(
        client: Client,
        options: Options,
        shared: Arc<Shared>,
        prober: Option<llmroute_upstream::Prober>,
    ) -> Self {
        shared.leader.send_replace(false);
        let changed = Arc::new(Notify::new());
        let stores = Stores::start(&client, &options.namespace, &changed);
        let fleet = fleet_store(&client, &options.namespace);
        tokio::spawn(build_loop(stores.clone(), options.settings.clone(), shared.clone(), changed, prober));
        let leader = tokio::spawn(leader::elect(
            client.clone(),
            options.namespace.clone(),
            options.lease_name.clone(),
            options.pod.clone(),
            options.lease_seconds,
            shared.clone(),
        ));
        tokio::spawn(status_loop(client.clone(), options.clone(), stores, fleet.clone(), shared.clone()));
        tokio::spawn(report_loop(client.clone(), options.clone(), fleet, shared.clone()));
        let report = Some((client, options.namespace.clone(), report_name(&options.pod)));
        Self { leader, shared, report }
    }

    /// Releases the Lease (a rollout hands over in seconds) and removes this replica's report.
    pub async fn stop(self) {
        self.shared.stopping.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.leader).await;
        if let Some((client, namespace, name)) = self.report {
            let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
            let _ = tokio::time::timeout(Duration::from_secs(2), api.delete(&name, &DeleteParams::default())).await;
        }
    }
}

fn report_name(pod: &str) -> String {
    let name = format!("llmroute-report-{pod}");
    name.chars().take(253).collect()
}

/// Reflector over the fleet ConfigMaps of the operator's namespace.
fn fleet_store(client: &Client, namespace: &str) -> Store<ConfigMap> {
    let (reader, writer) = reflector::store::<ConfigMap>();
    let config = watcher::Config::default().labels(FLEET_LABEL);
    let stream =
        watcher(Api::<ConfigMap>::namespaced(client.clone(), namespace), config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        use futures_util::StreamExt;
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "fleet ConfigMap watch failed; retrying");
            }
        }
    });
    reader
}

/// Waits for every store, then builds on every change (debounced like manifests mode) and
/// when a lingering Secret's grace period ends.
async fn build_loop(
    stores: Stores,
    settings: Settings,
    shared: Arc<Shared>,
    changed: Arc<Notify>,
    prober: Option<llmroute_upstream::Prober>,
) {
    stores.ready().await;
    tracing::info!("every store is ready; building views");
    let mut assembler = Assembler::default();
    let mut publisher = Publisher::new(shared.clone(), None);
    let mut leader = shared.leader.subscribe();
    let mut expiry: Option<SystemTime> = None;
    let mut detected = Instant::now();
    loop {
        let contents = stores.contents();
        let assembled = assembler.assemble(&contents.objects(), &settings, SystemTime::now());
        shared.namespace_teams.send_replace(Arc::new(inputs::namespace_teams(contents.objects().namespaces)));
        if let Ok(mut slot) = shared.config_problem.lock() {
            *slot = assembled.config_problem;
        }
        expiry = assembled.next_expiry.or(expiry.filter(|_| false));
        // The compile of a large store takes tens of milliseconds: off the async workers.
        let (store, mut moved) = (assembled.store, publisher);
        let result = tokio::task::spawn_blocking(move || {
            let built = moved.publish(&store, detected);
            (moved, built)
        })
        .await;
        let Ok((back, built)) = result else { return };
        publisher = back;
        // Only the leader probes; a follower serves the leader's table.
        if let Some(prober) = &prober {
            if *leader.borrow_and_update() {
                let mut all = built.compiled.view("").deployments;
                for team in built.compiled.teams() {
                    all.extend(built.compiled.team_part(team).1.deployments);
                }
                prober.reconcile(&all);
            } else {
                prober.reconcile(&[]);
            }
        }
        // Next change: debounce.
        let until_expiry = expiry.map(|e| e.duration_since(SystemTime::now()).unwrap_or_default());
        tokio::select! {
            () = changed.notified() => {}
            _ = leader.changed() => {}
            () = sleep_or_never(until_expiry) => {}
        }
        detected = Instant::now();
        let first = Instant::now();
        loop {
            let quiet = tokio::time::timeout(DEBOUNCE_QUIET, changed.notified()).await.is_err();
            if quiet || first.elapsed() >= DEBOUNCE_MAX {
                break;
            }
        }
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The status of a dynamic object in a store.
fn status_in(store: &Store<DynamicObject>, key: &ObjectKey) -> Option<ResourceStatus> {
    let object = store.get(&ObjectRef::new_with(&key.name, source_resource(store)).within(&key.namespace))?;
    serde_json::from_value(object.data.get("status")?.clone()).ok()
}

fn source_resource(_store: &Store<DynamicObject>) -> kube::api::ApiResource {
    // Both kinds share the group and version; the key only needs the dynamic type to exist.
    source::resource::<llmroute_api::ModelDeployment>()
}

/// The leader's loop: merge reports, write what changed within the budget, publish health.
async fn status_loop(client: Client, options: Options, stores: Stores, fleet: Store<ConfigMap>, shared: Arc<Shared>) {
    let mut writer =
        StatusWriter::new(client.clone(), &options.pod, options.writes_per_second, options.ready_threshold);
    let mut was_leader = false;
    let mut published_health: Option<Arc<Vec<v1::HealthEntry>>> = None;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &options.namespace);
    let mut stopping = shared.stopping.subscribe();
    let mut learning = LearningSync::default();
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(options.tick) => false,
            _ = stopping.wait_for(|s| *s) => true,
        };
        if stop {
            // The leader saves what it learned for the next one.
            let leading = *shared.leader.borrow();
            if leading {
                let save = learning.save(&configmaps, &shared, true);
                let _ = tokio::time::timeout(Duration::from_secs(2), save).await;
            }
            return;
        }
        let leader = *shared.leader.borrow();
        if !leader {
            if was_leader {
                writer.forget();
                published_health = None;
            }
            was_leader = false;
            // A follower serves the leader's health table and fleet decisions.
            if let Some(table) = read_health(&fleet, &options.namespace)
                && *shared.health.borrow() != table
            {
                shared.health.send_replace(table);
            }
            if let Some(published) =
                read_data::<crate::fleet::replicas::Published>(&fleet, &options.namespace, STATE_CONFIGMAP)
            {
                shared.fleet.adopt(&published, Instant::now());
            }
            continue;
        }
        if !was_leader {
            // Go on from what the last leader saved.
            learning = LearningSync::default();
            if let Some((generation, persisted)) = adaptive::load(&fleet, &options.namespace) {
                tracing::info!(cells = persisted.cells.len(), generation, "adaptive state loaded from its ConfigMaps");
                shared.fleet.restore(&options.pod, &persisted);
                learning.saved = generation;
            }
        }
        was_leader = true;
        learning.absorb(&fleet, &options, &shared);
        learning.publish(&configmaps, &shared).await;
        learning.save(&configmaps, &shared, false).await;
        let Some(built) = shared.built() else { continue };
        let term = term(&leases, &options.lease_name).await;
        let reports: Vec<Report> = fleet
            .state()
            .iter()
            .filter(|c| {
                c.metadata.labels.as_ref().and_then(|l| l.get(FLEET_LABEL)).map(String::as_str) == Some("report")
            })
            .filter_map(|c| serde_json::from_str(c.data.as_ref()?.get(DATA_KEY)?).ok())
            .collect();
        let teams = fleet::merge(&shared.registry.teams(), &reports, &options.pod, term, crate::clock::now_ms());
        let health = shared.health.borrow().clone();
        let current = |kind: Kind, key: &ObjectKey| match kind {
            Kind::ModelDeployment => status_in(&stores.deployments, key),
            Kind::TeamModel => status_in(&stores.team_models, key),
        };
        let pending = writer.pending(&built, &teams, &health, &current, Timestamp::now());
        if !pending.is_empty() {
            let uid = |kind: Kind, key: &ObjectKey| {
                let store = match kind {
                    Kind::ModelDeployment => &stores.deployments,
                    Kind::TeamModel => &stores.team_models,
                };
                store
                    .get(&ObjectRef::new_with(&key.name, source_resource(store)).within(&key.namespace))
                    .and_then(|o| o.metadata.uid.clone())
            };
            let written = writer.write(pending, &uid).await;
            shared.metrics.status_writes.inc_by(written as u64);
        }
        if published_health.as_ref() != Some(&health) {
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": HEALTH_CONFIGMAP, "labels": {FLEET_LABEL: "health"}},
                "data": {DATA_KEY: serde_json::to_string(&HealthTable::from(&health[..])).unwrap_or_default()},
            });
            let params = PatchParams::apply(writer::FIELD_MANAGER).force();
            if configmaps.patch(HEALTH_CONFIGMAP, &params, &Patch::Apply(&body)).await.is_ok() {
                published_health = Some(health);
            }
        }
    }
}

/// The health table as JSON (the wire type's fields).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct HealthTable {
    entries: Vec<HealthRow>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct HealthRow {
    deployment_id: String,
    spec_hash: String,
    healthy: bool,
    message: String,
    observed_at_unix_ms: i64,
}

impl From<&[v1::HealthEntry]> for HealthTable {
    fn from(entries: &[v1::HealthEntry]) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|e| HealthRow {
                    deployment_id: e.deployment_id.clone(),
                    spec_hash: e.spec_hash.clone(),
                    healthy: e.healthy,
                    message: e.message.clone(),
                    observed_at_unix_ms: e.observed_at_unix_ms,
                })
                .collect(),
        }
    }
}

/// The leader's side of fleet learning across replicas: followers' forwards absorbed, the
/// decisions published for them, the merged state saved once per epoch.
#[derive(Default)]
struct LearningSync {
    /// Generation of the last saved state.
    saved: u64,
    /// Epoch count at the last save.
    saved_epochs: u64,
    /// Generation of the fleet state last published, and when.
    published: Option<(u64, Instant)>,
}

impl LearningSync {
    fn absorb(&self, fleet: &Store<ConfigMap>, options: &Options, shared: &Shared) {
        let now_ms = crate::clock::now_ms();
        for cm in fleet.state() {
            let labels = cm.metadata.labels.as_ref();
            if labels.and_then(|l| l.get(FLEET_LABEL)).map(String::as_str) != Some("report") {
                continue;
            }
            let Some(data) = cm.data.as_ref() else { continue };
            let Some(report) = data.get(DATA_KEY).and_then(|d| serde_json::from_str::<Report>(d).ok()) else {
                continue;
            };
            if report.replica == options.pod || now_ms.saturating_sub(report.at_ms) > fleet::REPORT_TTL_MS {
                continue;
            }
            if let Some(forward) = data.get(FORWARD_KEY).and_then(|d| serde_json::from_str(d).ok()) {
                shared.fleet.absorb(&report.replica, &forward, shared.built().as_deref(), Instant::now());
            }
        }
    }

    async fn publish(&mut self, configmaps: &Api<ConfigMap>, shared: &Shared) {
        let now = Instant::now();
        let published = shared.fleet.published(now);
        let due = self.published.is_none_or(|(generation, at)| {
            generation != published.generation && now.duration_since(at) >= Duration::from_secs(1)
        });
        if !due {
            return;
        }
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": STATE_CONFIGMAP, "labels": {FLEET_LABEL: "state"}},
            "data": {DATA_KEY: serde_json::to_string(&published).unwrap_or_default()},
        });
        let params = PatchParams::apply(writer::FIELD_MANAGER).force();
        match configmaps.patch(STATE_CONFIGMAP, &params, &Patch::Apply(&body)).await {
            Ok(_) => self.published = Some((published.generation, now)),
            Err(e) => tracing::debug!(error = %e, "publishing the fleet state failed"),
        }
    }

    async fn save(&mut self, configmaps: &Api<ConfigMap>, shared: &Shared, now: bool) {
        let epochs = shared.fleet.epochs();
        if !now && epochs == self.saved_epochs {
            return;
        }
        let generation = self.saved + 1;
        match adaptive::save(configmaps, writer::FIELD_MANAGER, &shared.fleet.persisted(), generation).await {
            Ok(()) => {
                self.saved = generation;
                self.saved_epochs = epochs;
            }
            Err(e) => tracing::warn!(error = %e, "saving the adaptive state failed; retrying next pass"),
        }
    }
}

/// The JSON document of ConfigMap `name`.
fn read_data<T: serde::de::DeserializeOwned>(fleet: &Store<ConfigMap>, namespace: &str, name: &str) -> Option<T> {
    let cm = fleet.get(&ObjectRef::new(name).within(namespace))?;
    serde_json::from_str(cm.data.as_ref()?.get(DATA_KEY)?).ok()
}

fn read_health(fleet: &Store<ConfigMap>, namespace: &str) -> Option<Arc<Vec<v1::HealthEntry>>> {
    let cm = fleet.get(&ObjectRef::new(HEALTH_CONFIGMAP).within(namespace))?;
    let table: HealthTable = serde_json::from_str(cm.data.as_ref()?.get(DATA_KEY)?).ok()?;
    Some(Arc::new(
        table
            .entries
            .into_iter()
            .map(|r| v1::HealthEntry {
                deployment_id: r.deployment_id,
                spec_hash: r.spec_hash,
                healthy: r.healthy,
                message: r.message,
                observed_at_unix_ms: r.observed_at_unix_ms,
                ..Default::default()
            })
            .collect(),
    ))
}

/// The Lease's term (`spec.leaseTransitions`), 0 when unknown.
async fn term(leases: &Api<Lease>, name: &str) -> i32 {
    match tokio::time::timeout(Duration::from_secs(2), leases.get_opt(name)).await {
        Ok(Ok(Some(lease))) => lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        _ => 0,
    }
}

/// A follower's loop: its acknowledgements and what its sidecars reported, written when they
/// change (and every 5 s, so the leader knows the report is alive), under the current term.
async fn report_loop(client: Client, options: Options, _fleet: Store<ConfigMap>, shared: Arc<Shared>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &options.namespace);
    let name = report_name(&options.pod);
    let mut last: Option<(Report, crate::fleet::replicas::Forward, Instant)> = None;
    let mut stopping = shared.stopping.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.tick) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if *shared.leader.borrow() {
            continue;
        }
        let term = term(&leases, &options.lease_name).await;
        let report = Report::of(&options.pod, term, 0, &shared.registry.teams());
        // What this replica's sidecars reported, for the leader to merge.
        let forward = shared.fleet.forward(shared.registry.len(), Instant::now());
        let fresh = last
            .as_ref()
            .is_some_and(|(r, f, at)| *r == report && *f == forward && at.elapsed() < Duration::from_secs(5));
        if fresh {
            continue;
        }
        let stamped = Report { at_ms: crate::clock::now_ms(), ..report.clone() };
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {FLEET_LABEL: "report"}},
            "data": {
                DATA_KEY: serde_json::to_string(&stamped).unwrap_or_default(),
                FORWARD_KEY: serde_json::to_string(&forward).unwrap_or_default(),
            },
        });
        let params = PatchParams::apply(writer::FIELD_MANAGER).force();
        match configmaps.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => last = Some((report, forward, Instant::now())),
            Err(e) => tracing::debug!(error = %e, "writing the report failed"),
        }
    }
}

/// The leader publishes the CA bundle into every team namespace, again when teams change.
async fn publish_bundle(client: Client, name: String, bundle: String, shared: Arc<Shared>) {
    let mut publisher = ca::BundlePublisher::new(client, name, bundle);
    let mut teams = shared.namespace_teams.subscribe();
    let mut leader = shared.leader.subscribe();
    loop {
        if *leader.borrow_and_update() {
            let namespaces = teams.borrow_and_update().clone();
            publisher.publish(namespaces.keys()).await;
        }
        tokio::select! {
            _ = teams.changed() => {}
            _ = leader.changed() => {}
            // Retry failures and repair edits now and then.
            () = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
    }
}
