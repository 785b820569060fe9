//! The requests each program sends outside a reconcile — the controller's list/watch streams,
//! start-up discovery and leader Lease, the agent's Pod watcher — run against a permissive mock
//! API, with every request checked against `crate::rbac` (mock_api.rs). Together with the
//! reconcile scenarios (scenarios.rs), which check every reconcile and cleanup request, this
//! covers everything the controller sends; and it proves each program's rules grant exactly
//! what it uses.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::Recorder;
use kube::runtime::reflector;
use tokio_util::sync::CancellationToken;

use super::mock_api::{self, Authz, Grants, Permissive, Seen, authz, used};
use super::rollout_scenarios::RolloutScenario;
use super::scenarios::Scenario;
use crate::controller::events;
use crate::controller::reconcile::reconcile;
use crate::controller::rollout::analysis::prometheus::Prometheus;
use crate::controller::routing::RouteApis;
use crate::controller::runtime::backoff::ErrorBackoff;
use crate::controller::runtime::context::Context;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::{leader, watches};
use crate::metrics_server::Readiness;

/// How long a test waits for a signal before it fails.
const LIMIT: Duration = Duration::from_secs(10);

/// Every kind the Controller lists and watches when every routing API is served.
const WATCHED: [&str; 6] = [
    "trafficsplits",
    "services",
    "endpointslices",
    "httproutes",
    "destinationrules",
    "virtualservices",
];

fn granted_as(seen: &[Seen]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = seen
        .iter()
        .filter_map(|s| match authz(&s.method, &s.path, &s.query, &s.content_type) {
            Authz::Resource { resource, verbs, .. } => Some((resource, verbs[0].to_string())),
            Authz::Discovery => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether every kind in `kinds` has been listed and watched.
fn listed_and_watched(seen: &[Seen], kinds: &[&str]) -> bool {
    let verbs = granted_as(seen);
    kinds.iter().all(|k| {
        ["list", "watch"]
            .iter()
            .all(|v| verbs.contains(&(k.to_string(), v.to_string())))
    })
}

/// A controller context on `client` with every routing API served (so every kind is watched),
/// and the writer of its EndpointSlice cache.
fn context(client: kube::Client) -> (Arc<Context>, reflector::store::Writer<EndpointSlice>) {
    let (slices, writer) = reflector::store::<EndpointSlice>();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), events::reporter(None)),
        client,
        metrics: Arc::new(Metrics::new().unwrap()),
        slices,
        route_apis: RouteApis::new(true, true),
        backoff: ErrorBackoff::default(),
        prometheus: Prometheus::new().unwrap(),
        prometheus_url: None,
        term: tokio_util::sync::CancellationToken::new(),
    });
    (ctx, writer)
}

/// Runs the Controller's streams against `server` until every kind is listed and watched and
/// the caches report synced (each waited for as a signal, failing after [`LIMIT`]), then stops it.
async fn run_streams(
    ctx: Arc<Context>,
    writer: reflector::store::Writer<EndpointSlice>,
    server: &mut Permissive,
) {
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(watches::run(
        ctx,
        writer,
        None,
        readiness.clone(),
        stop.clone(),
        reconcile,
    ));
    server
        .wait_for("every kind listed and watched", LIMIT, |seen| {
            listed_and_watched(seen, &WATCHED)
        })
        .await;
    tokio::time::timeout(LIMIT, readiness.ready())
        .await
        .expect("the caches never reported synced");
    stop.cancel();
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("the controller did not stop on cancel")
        .unwrap();
}

#[tokio::test]
async fn the_controller_streams_list_and_watch_only_what_rbac_grants() {
    let (client, handle) = mock_api::client();
    let mut server = mock_api::serve_permissive(handle, Grants::CONTROLLER);
    let (ctx, writer) = context(client);
    run_streams(ctx, writer, &mut server).await;
    let seen = server.finish().await;
    // Owned kinds and slices are watched through our label only.
    for s in &seen {
        if ["services", "endpointslices", "httproutes"]
            .iter()
            .any(|r| s.path.ends_with(r))
        {
            assert!(
                s.query
                    .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsplitscope"),
                "{}",
                s.line()
            );
        }
    }
}

#[tokio::test]
async fn the_lease_manager_only_uses_granted_verbs() {
    let (client, handle) = mock_api::client();
    let server = mock_api::serve_permissive(handle, Grants::CONTROLLER);
    let manager = leader::manager(client, "splitscope-system", "splitscope-controller", "pod-a")
        .await
        .unwrap();
    let leading = tokio::time::timeout(Duration::from_secs(20), manager.changed())
        .await
        .expect("never became leader")
        .unwrap();
    assert!(leading, "the only candidate must win the Lease");
    manager.release().await.unwrap();
    drop(manager);
    let seen = server.finish().await;
    let verbs = granted_as(&seen);
    assert!(verbs.iter().all(|(r, _)| r == "leases"), "{verbs:?}");
    let used: Vec<&str> = verbs.iter().map(|(_, v)| v.as_str()).collect();
    assert!(used.contains(&"get") && used.contains(&"patch"), "{used:?}");
    assert!(
        seen.iter().all(|s| s
            .path
            .starts_with("/apis/coordination.k8s.io/v1/namespaces/splitscope-system/leases")),
        "{:?}",
        seen.iter().map(Seen::line).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_leader_runs_the_term_and_releases_the_lease_on_shutdown() {
    let (client, handle) = mock_api::client();
    let server = mock_api::serve_permissive(handle, Grants::CONTROLLER);
    let manager = leader::manager(client, "default", "splitscope-controller", "pod-a")
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let readiness = Arc::new(Readiness::default());
    let shutdown = CancellationToken::new();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let mut started_tx = Some(started_tx);
    let election = tokio::spawn(leader::run(
        manager,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
        move |term: CancellationToken| {
            let tx = started_tx.take();
            async move {
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                term.cancelled().await;
            }
        },
    ));
    tokio::time::timeout(Duration::from_secs(20), started_rx)
        .await
        .expect("the leader term never started")
        .unwrap();
    assert_eq!(metrics.leader.get(), 1);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), election)
        .await
        .expect("the election did not stop on shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(metrics.leader.get(), 0);
    let seen = server.finish().await;
    // Released: a final PATCH clears the holder, so a standby need not wait for expiry.
    let release = seen
        .iter()
        .rposition(|s| s.method == "PATCH")
        .map(|i| &seen[i])
        .unwrap();
    assert_eq!(
        release.body["spec"]["holderIdentity"],
        serde_json::Value::Null,
        "{}",
        release.body
    );
}

/// The controller's RBAC lists are exactly what the code uses: every rule's every verb is
/// exercised by some reconcile scenario, the Controller's streams, the Event recorder or the
/// Lease manager — except `update` on `trafficsplits/finalizers`, which no request uses: the API
/// server's OwnerReferencesPermissionEnforcement admission checks it when we set
/// `blockOwnerDeletion`.
#[tokio::test]
async fn controller_rbac_rules_are_exactly_what_the_controller_uses() {
    let mut seen: Vec<Seen> = Vec::new();
    for scenario in Scenario::ALL {
        let run = scenario.run().await;
        seen.extend(run.transcript.seen);
    }
    for scenario in RolloutScenario::ALL {
        let (run, _) = scenario.run().await;
        seen.extend(run.transcript.seen);
    }

    // Streams (list/watch of every kind).
    let (client, handle) = mock_api::client();
    let mut server = mock_api::serve_permissive(handle, Grants::CONTROLLER);
    let (ctx, writer) = context(client.clone());
    run_streams(ctx.clone(), writer, &mut server).await;

    // The Recorder patches an Event it already created (a series) when it repeats.
    let ts = super::fixtures::traffic_split();
    for _ in 0..2 {
        events::publish(
            &ctx.recorder,
            &ts,
            kube::runtime::events::EventType::Normal,
            "Created",
            "Apply",
            "Service shop/checkout created".into(),
            None,
        )
        .await;
    }

    // The Lease manager.
    let manager = leader::manager(client, "default", "splitscope-controller", "pod-a")
        .await
        .unwrap();
    manager.changed().await.unwrap();
    manager.release().await.unwrap();
    drop((manager, ctx));
    seen.extend(server.finish().await);

    let used = used(&seen);
    let granted = Grants::CONTROLLER.all();
    let admission_only = (
        "splitscope.dev".to_string(),
        "trafficsplits/finalizers".to_string(),
        "update".to_string(),
    );
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|g| **g != admission_only)
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
    assert!(
        unused.is_empty(),
        "granted but never used (remove from operator/src/rbac.rs): {unused:?}"
    );
}

/// The agent's RBAC is exactly what its Pod watcher (agent/pods.rs) uses: it lists and watches
/// this node's Pods; nothing else.
#[tokio::test]
async fn agent_rbac_rules_are_exactly_what_the_pod_watcher_uses() {
    let (client, handle) = mock_api::client();
    let mut server = mock_api::serve_permissive(handle, Grants::AGENT);
    let directory = Arc::new(crate::agent::pods::PodDirectory::default());
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(crate::agent::pods::reflect(
        client,
        "node-a".into(),
        directory,
        shutdown.clone(),
    ));
    server
        .wait_for("the Pod list and watch", LIMIT, |seen| {
            listed_and_watched(seen, &["pods"])
        })
        .await;
    shutdown.cancel();
    tokio::time::timeout(LIMIT, watcher)
        .await
        .expect("the Pod watcher did not stop on shutdown")
        .unwrap();
    let seen = server.finish().await;
    for s in &seen {
        assert!(
            s.query.contains("fieldSelector=spec.nodeName%3Dnode-a"),
            "the agent must watch its own node's Pods only: {}",
            s.line()
        );
    }
    let used = used(&seen);
    let granted = Grants::AGENT.all();
    assert_eq!(
        used, granted,
        "the agent's rules (operator/src/rbac.rs) must equal what its Pod watcher uses"
    );
}
