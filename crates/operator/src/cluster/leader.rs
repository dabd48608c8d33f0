//! Leader election with a coordination.k8s.io Lease (kube-lease-manager). Every replica serves
//! streams; only the holder writes status and Events and runs the probes. The Lease is released
//! on shutdown so that a rollout hands over in seconds, not a lease duration.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::state::Shared;

/// Campaigns for `name` as `identity` until shutdown, mirroring the state into
/// `shared.leader`; then releases the Lease if held.
pub async fn elect(
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    seconds: u64,
    shared: Arc<Shared>,
) {
    let mut stopping = shared.stopping.subscribe();
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_field_manager(format!("llmroute-operator-{identity}"))
            .with_duration(seconds)
            .with_grace((seconds / 3).max(1))
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(error = %e, lease = %name, "cannot use the Lease; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        }
    };
    let (mut state, task) = manager.watch().await;
    loop {
        let leading = *state.borrow_and_update();
        if *shared.leader.borrow() != leading {
            tracing::info!(leading, lease = %name, "leadership changed");
            shared.leader.send_replace(leading);
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { break },
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    shared.leader.send_replace(false);
    drop(state);
    match tokio::time::timeout(Duration::from_secs(3), task).await {
        Ok(Ok(Ok(manager))) => {
            if let Err(e) = manager.release().await {
                tracing::warn!(error = %e, "releasing the Lease failed; it expires on its own");
            } else {
                tracing::info!(lease = %name, "Lease released");
            }
        }
        _ => tracing::warn!("the election did not stop in time; the Lease expires on its own"),
    }
}
