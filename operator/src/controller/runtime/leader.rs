//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): only the replica that
//! holds the Lease runs the Controller; losing it stops reconciling at once (in-flight
//! reconciles finish), and shutdown releases it so a standby takes over without waiting for
//! expiry.

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::controller::api::trafficsplit::FIELD_MANAGER;
use crate::metrics_server::Readiness;

/// Lease duration and renew-before-expiry grace, in seconds.
pub const LEASE_SECONDS: u64 = 15;
pub const GRACE_SECONDS: u64 = 5;

/// Where the in-cluster service account's namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot set up the leader Lease {namespace}/{name}: {source}")]
    Setup {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("the leader election task stopped: {0}")]
    Stopped(String),
}

/// This replica's readable name: the pod name (`POD_NAME`, from the downward API), else the
/// host name. Not unique on its own: two processes on one host without `POD_NAME` (a local run
/// beside another, or `hostNetwork` pods) share it.
pub fn instance() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "splitscope".into())
}

/// This process's identity in the Lease: `<instance>_<random UUID>`, unique per process as
/// client-go makes it (host name + "_" + UUID), so two processes never both believe they hold
/// the Lease, while the pod name stays readable in `holderIdentity`.
pub fn identity(instance: &str) -> String {
    format!("{instance}_{}", uuid::Uuid::new_v4())
}

/// The Lease namespace: the flag, else the pod's own namespace, else `default`.
pub fn lease_namespace(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The Lease manager (creates the Lease if it does not exist).
pub async fn manager(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<LeaseManager, LeaderError> {
    LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_field_manager(format!("{FIELD_MANAGER}-{identity}"))
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            namespace: namespace.into(),
            name: name.into(),
            source,
        })
}

/// Runs `lead` for every term this replica holds the Lease, until `shutdown`. `lead` gets a
/// token cancelled when the term ends and must return soon after.
pub async fn run<F, Fut>(
    manager: LeaseManager,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
    mut lead: F,
) -> Result<(), LeaderError>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let (mut leading, task) = manager.watch().await;
    // A standby is healthy and ready; the leader is ready once its caches are synced.
    readiness.set_ready(true);
    tracing::info!("waiting for the leader Lease");
    let result = 'election: loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() {
                    break 'election Err(LeaderError::Stopped("the Lease watch ended".into()));
                },
                () = shutdown.cancelled() => break 'election Ok(()),
            }
        }
        tracing::info!("acquired the leader Lease: reconciling");
        metrics.leader.set(1);
        readiness.set_ready(false);
        let term = shutdown.child_token();
        let run = lead(term.clone());
        tokio::pin!(run);
        let mut lost = false;
        let failed = loop {
            tokio::select! {
                // The term only ends by itself on shutdown or after losing the Lease; anything
                // else is a failure: give up the Lease rather than spin.
                () = &mut run => break !lost && !shutdown.is_cancelled(),
                changed = leading.changed(), if !lost => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        tracing::warn!("lost the leader Lease: stopping reconciles");
                        lost = true;
                        term.cancel();
                    }
                }
            }
        };
        metrics.leader.set(0);
        readiness.set_ready(true);
        if failed {
            break Err(LeaderError::Stopped(
                "the controller stopped while leading (see the error above)".into(),
            ));
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
    };
    // Closing the channel makes the manager release the Lease and end its task.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => tracing::info!("released the leader Lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader Lease"),
        Err(e) => tracing::warn!(error = %e, "leader election task failed"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_unique_per_process_and_keep_the_pod_name() {
        let a = identity("splitscope-controller-7d9f8-x2k4q");
        let b = identity("splitscope-controller-7d9f8-x2k4q");
        assert_ne!(
            a, b,
            "two processes with one pod name must not share a Lease identity"
        );
        for id in [&a, &b] {
            let suffix = id
                .strip_prefix("splitscope-controller-7d9f8-x2k4q_")
                .unwrap_or_else(|| panic!("{id} lost the pod name"));
            assert!(uuid::Uuid::parse_str(suffix).is_ok(), "{id}");
        }
    }
}
