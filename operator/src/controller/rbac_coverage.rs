//! The requests the controller sends outside a reconcile — the Controller's list/watch streams,
//! start-up discovery and the leader Lease — run against a permissive mock API, with every
//! request checked against `crate::rbac` (mock_api.rs). Together with the reconcile scenarios
//! (fixtures.rs), which check every reconcile and cleanup request, this covers everything the
//! controller sends.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::Recorder;
use kube::runtime::reflector;
use tokio_util::sync::CancellationToken;

use super::backoff::ErrorBackoff;
use super::context::Context;
use super::leader;
use super::metrics::Metrics;
use super::mock_api::{self, Authz, Seen, authz};
use super::route_apis::RouteApis;
use super::watches;
use crate::metrics_server::Readiness;

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

/// A controller context on `client` with every routing API served (so every kind is watched),
/// and the writer of its EndpointSlice cache.
fn context(client: kube::Client) -> (Arc<Context>, reflector::store::Writer<EndpointSlice>) {
    let (slices, writer) = reflector::store::<EndpointSlice>();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), super::events::reporter(None)),
        client,
        metrics: Arc::new(Metrics::new().unwrap()),
        slices,
        route_apis: RouteApis::new(true, true),
        backoff: ErrorBackoff::default(),
    });
    (ctx, writer)
}

#[tokio::test]
async fn the_controller_streams_list_and_watch_only_what_rbac_grants() {
    let (client, handle) = mock_api::client();
    let server = mock_api::serve_permissive(handle);
    let (ctx, writer) = context(client);
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(watches::run(ctx, writer, None, readiness.clone(), stop.clone()));
    // Every stream lists, then opens its watch; caches report synced.
    let synced = tokio::time::timeout(Duration::from_secs(10), async {
        while !readiness.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller did not stop on cancel")
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert!(
        synced.is_ok(),
        "the caches never reported synced; requests: {lines:#?}"
    );
    let verbs = granted_as(&seen);
    for resource in [
        "trafficsplits",
        "services",
        "endpointslices",
        "httproutes",
        "destinationrules",
        "virtualservices",
    ] {
        for verb in ["list", "watch"] {
            assert!(
                verbs.contains(&(resource.to_string(), verb.to_string())),
                "no {verb} of {resource} in {verbs:?}"
            );
        }
    }
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
    let server = mock_api::serve_permissive(handle);
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
    let seen = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
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
    let server = mock_api::serve_permissive(handle);
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
    let seen = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
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

/// The RBAC lists are exactly what the code uses: every rule's every verb is exercised by some
/// reconcile scenario, the Controller's streams, the Event recorder or the Lease manager — except
/// `update` on `trafficsplits/finalizers`, which no request uses: the API server's
/// OwnerReferencesPermissionEnforcement admission checks it when we set `blockOwnerDeletion`.
#[tokio::test]
async fn rbac_rules_are_exactly_what_the_controller_uses() {
    use std::collections::BTreeSet;

    use super::fixtures::Scenario;
    use crate::rbac::{CONTROLLER_CLUSTER_RULES, CONTROLLER_NAMESPACE_RULES};

    let mut seen: Vec<Seen> = Vec::new();
    for scenario in Scenario::ALL {
        let run = scenario.run().await;
        seen.extend(run.transcript.seen);
    }

    // Streams (list/watch of every kind).
    let (client, handle) = mock_api::client();
    let server = mock_api::serve_permissive(handle);
    let (ctx, writer) = context(client.clone());
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(watches::run(
        ctx.clone(),
        writer,
        None,
        readiness.clone(),
        stop.clone(),
    ));
    while !readiness.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    run.await.unwrap();

    // The Recorder patches an Event it already created (a series) when it repeats.
    let ts = super::fixtures::traffic_split();
    for _ in 0..2 {
        super::events::publish(
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
    seen.extend(
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap(),
    );

    let mut used = BTreeSet::new();
    for s in &seen {
        if let Authz::Resource {
            group,
            resource,
            verbs,
        } = authz(&s.method, &s.path, &s.query, &s.content_type)
        {
            for verb in verbs {
                used.insert((group.clone(), resource.clone(), verb.to_string()));
            }
        }
    }
    let mut granted = BTreeSet::new();
    for rule in CONTROLLER_CLUSTER_RULES.iter().chain(CONTROLLER_NAMESPACE_RULES) {
        for resource in rule.resources {
            for verb in rule.verbs {
                granted.insert((rule.api_group.to_string(), resource.to_string(), verb.to_string()));
            }
        }
    }
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
