//! The reconciler's lifecycle against the scripted mock API, one test per named scenario: what
//! it sends (order, bodies, RBAC), the Events it publishes and the metric series it leaves.

use kube::runtime::controller::Action;

use super::scenarios::Scenario;
use crate::controller::reconcile::{CONFLICT_RETRY, RESYNC, ROUTE_API_RETRY};

/// The value of one series in the registry's text, `None` when there is no such series.
fn series(metrics: &str, name_and_labels: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')
            .map(str::to_owned)
    })
}

const READY: &str = r#"splitscope_trafficsplit_ready{name="checkout",namespace="shop"}"#;
const STABLE: &str =
    r#"splitscope_trafficsplit_backend_weight{backend="stable",name="checkout",namespace="shop"}"#;
const CANARY: &str =
    r#"splitscope_trafficsplit_backend_weight{backend="canary",name="checkout",namespace="shop"}"#;
const SUCCESSES: &str = r#"splitscope_reconcile_total{result="success"}"#;
const ERRORS: &str = r#"splitscope_reconcile_total{result="error"}"#;

#[tokio::test]
async fn first_reconcile_only_adds_the_finalizer() {
    let run = Scenario::FinalizerCreation.run().await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    assert_eq!(run.transcript.requests.len(), 1, "{:?}", run.transcript.requests);
}

#[tokio::test]
async fn creation_applies_three_services_and_the_route() {
    let run = Scenario::Creation.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(
        run.transcript.writes(),
        [
            "PATCH /api/v1/namespaces/shop/services/checkout?&force=true&fieldManager=splitscope",
            "PATCH /api/v1/namespaces/shop/services/checkout-stable?&force=true&fieldManager=splitscope",
            "PATCH /api/v1/namespaces/shop/services/checkout-canary?&force=true&fieldManager=splitscope",
            "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout?&force=true&fieldManager=splitscope",
            "PATCH /apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout/status?&force=true&fieldManager=splitscope",
        ]
    );
    assert_eq!(run.transcript.event_reasons(), ["Created"; 4]);
    let note = run.transcript.events[3]["note"].as_str().unwrap();
    assert_eq!(note, "HTTPRoute shop/checkout created");
    // Pending (no endpoints yet) is not ready; the weights are recorded as applied.
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, READY).as_deref(), Some("0"), "{metrics}");
    assert_eq!(series(&metrics, CANARY).as_deref(), Some("5"), "{metrics}");
    assert_eq!(series(&metrics, SUCCESSES).as_deref(), Some("1"), "{metrics}");
    assert_eq!(series(&metrics, ERRORS).as_deref(), Some("0"), "{metrics}");
}

#[tokio::test]
async fn resync_of_an_unchanged_object_writes_nothing() {
    let run = Scenario::Resync.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(run.transcript.writes(), Vec::<String>::new());
    assert!(run.transcript.events.is_empty());
    // The registry started empty: the series are this reconcile's.
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, READY).as_deref(), Some("1"), "{metrics}");
    assert_eq!(series(&metrics, STABLE).as_deref(), Some("95"), "{metrics}");
}

#[tokio::test]
async fn a_weight_change_writes_only_the_route() {
    let run = Scenario::WeightChange.run().await;
    run.result.unwrap();
    let writes = run.transcript.writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes[0]
            .starts_with("PATCH /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout?")
    );
    assert!(writes[1].contains("/trafficsplits/checkout/status?"));
    assert_eq!(run.transcript.event_reasons(), ["Updated"]);
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, CANARY).as_deref(), Some("50"), "{metrics}");
    assert_eq!(series(&metrics, READY).as_deref(), Some("1"), "{metrics}");
}

#[tokio::test]
async fn a_foreign_service_is_a_conflict_and_left_alone() {
    let run = Scenario::Conflict.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(CONFLICT_RETRY));
    let writes = run.transcript.writes();
    assert_eq!(writes.len(), 1, "only the status may be written: {writes:?}");
    assert!(writes[0].contains("/trafficsplits/checkout/status?"));
    assert_eq!(run.transcript.event_reasons(), ["Conflict"]);
    assert_eq!(run.transcript.events[0]["type"], "Warning");
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, READY).as_deref(), Some("0"), "{metrics}");
}

#[tokio::test]
async fn a_removed_backend_loses_its_service() {
    let run = Scenario::BackendRemoved.run().await;
    run.result.unwrap();
    assert!(
        run.transcript
            .writes()
            .contains(&"DELETE /api/v1/namespaces/shop/services/checkout-canary".to_string()),
        "{:?}",
        run.transcript.writes()
    );
    assert_eq!(run.transcript.event_reasons(), ["Updated", "Deleted"]);
    // The setup seeded the 95/5 series: the canary's must be gone, the stable one updated.
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, CANARY), None, "{metrics}");
    assert_eq!(series(&metrics, STABLE).as_deref(), Some("100"), "{metrics}");
    assert_eq!(series(&metrics, READY).as_deref(), Some("1"), "{metrics}");
}

#[tokio::test]
async fn an_invalid_spec_writes_status_only_and_waits() {
    let run = Scenario::InvalidSpec.run().await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    assert_eq!(
        run.transcript
            .requests
            .iter()
            .filter(|r| !r.contains("/events"))
            .count(),
        1
    );
    assert_eq!(run.transcript.event_reasons(), ["InvalidSpec"]);
    assert!(
        run.transcript.events[0]["note"]
            .as_str()
            .unwrap()
            .contains("spec.backends")
    );
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, READY).as_deref(), Some("0"), "{metrics}");
    assert_eq!(series(&metrics, STABLE), None, "{metrics}");
}

#[tokio::test]
async fn a_missing_route_api_is_reported_and_services_still_applied() {
    let run = Scenario::RouteApiMissing.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(ROUTE_API_RETRY));
    assert_eq!(run.transcript.writes().len(), 4, "{:?}", run.transcript.writes());
    assert_eq!(
        run.transcript.event_reasons(),
        ["Created", "Created", "Created", "RouteAPIUnavailable"]
    );
}

#[tokio::test]
async fn a_route_api_installed_after_start_is_found_and_used() {
    let run = Scenario::RouteApiInstalledLater.run().await;
    assert_eq!(run.result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(run.transcript.event_reasons(), ["Created"; 4]);
}

#[tokio::test]
async fn istio_applies_destination_rule_then_virtual_service() {
    let run = Scenario::IstioCreation.run().await;
    run.result.unwrap();
    let writes = run.transcript.writes();
    assert!(writes[3].contains("/destinationrules/checkout?"), "{writes:?}");
    assert!(writes[4].contains("/virtualservices/checkout?"), "{writes:?}");
}

#[tokio::test]
async fn an_orphaned_root_service_with_our_labels_is_adopted() {
    let run = Scenario::Adoption.run().await;
    run.result.unwrap();
    assert_eq!(
        run.transcript.event_reasons(),
        ["Adopted", "Created", "Created", "Created"]
    );
}

#[tokio::test]
async fn cleanup_deletes_route_then_backends_then_root_then_releases_the_finalizer() {
    let run = Scenario::Cleanup.run().await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    assert_eq!(
        run.transcript.writes(),
        [
            "DELETE /apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout",
            "DELETE /api/v1/namespaces/shop/services/checkout-stable",
            "DELETE /api/v1/namespaces/shop/services/checkout-canary",
            "DELETE /api/v1/namespaces/shop/services/checkout",
            "PATCH /apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout",
        ]
    );
    assert_eq!(
        run.transcript.event_reasons(),
        ["Deleted", "Deleted", "Deleted", "Deleted", "CleanedUp"]
    );
    // The setup seeded the live object's series: teardown must drop every one of them.
    let metrics = run.metrics.render();
    assert!(
        !metrics.contains("name=\"checkout\""),
        "series left behind:\n{metrics}"
    );
    assert_eq!(series(&metrics, ERRORS).as_deref(), Some("0"), "{metrics}");
}

#[tokio::test]
async fn orphan_policy_keeps_the_root_service_without_our_owner_reference() {
    let run = Scenario::CleanupOrphan.run().await;
    run.result.unwrap();
    let writes = run.transcript.writes();
    assert_eq!(writes.len(), 5, "{writes:?}");
    assert_eq!(writes[3], "PATCH /api/v1/namespaces/shop/services/checkout");
    assert!(
        !writes
            .iter()
            .any(|w| w == "DELETE /api/v1/namespaces/shop/services/checkout")
    );
    assert_eq!(
        run.transcript.event_reasons(),
        ["Deleted", "Deleted", "Deleted", "Orphaned", "CleanedUp"]
    );
    assert!(!run.metrics.render().contains("name=\"checkout\""));
}

#[tokio::test]
async fn istio_cleanup_deletes_virtual_service_then_destination_rule() {
    let run = Scenario::CleanupIstio.run().await;
    run.result.unwrap();
    let writes = run.transcript.writes();
    assert!(
        writes[0].starts_with("DELETE /apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout"),
        "{writes:?}"
    );
    assert!(
        writes[1]
            .starts_with("DELETE /apis/networking.istio.io/v1/namespaces/shop/destinationrules/checkout"),
        "{writes:?}"
    );
    assert!(!run.metrics.render().contains("name=\"checkout\""));
}

/// The deletion race a real API server shows (reconcile/mod.rs, `fresh_enough`): the
/// teardown's own deletions queue another reconcile, which the Controller hands the cached copy
/// of the TrafficSplit — still with our finalizer — after the previous reconcile removed the
/// finalizer and the object is gone. Before the fresh read, that reconcile ran the teardown again
/// (GET route, LIST Services, a second `CleanedUp` Event) and ended in
/// `failed to remove finalizer: NotFound`, counted as an error. Now it reads, finds nothing to
/// do, and counts a success.
#[tokio::test]
async fn a_repeated_reconcile_of_a_deleted_object_does_not_tear_down_again() {
    let run = Scenario::CleanupAlreadyDone.run().await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    assert_eq!(
        run.transcript.requests,
        ["GET /apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout"]
    );
    assert!(run.transcript.events.is_empty());
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, ERRORS).as_deref(), Some("0"), "{metrics}");
    assert_eq!(series(&metrics, SUCCESSES).as_deref(), Some("1"), "{metrics}");
}

#[tokio::test]
async fn a_deleted_object_without_our_finalizer_is_not_torn_down_again() {
    let run = Scenario::CleanupFinalizerAlreadyRemoved.run().await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    assert_eq!(run.transcript.requests.len(), 1, "{:?}", run.transcript.requests);
    assert!(run.transcript.events.is_empty());
    assert_eq!(series(&run.metrics.render(), ERRORS).as_deref(), Some("0"));
}

/// The object vanishes after the fresh read (its finalizer removed by hand, say): the
/// finalizer's removal answers 404, which means the teardown is done — not an error.
#[tokio::test]
async fn an_object_gone_when_the_finalizer_is_removed_counts_as_done() {
    let run = Scenario::CleanupObjectGoneMeanwhile.run().await;
    assert_eq!(run.result.unwrap(), Action::await_change());
    assert_eq!(run.transcript.event_reasons(), ["CleanedUp"]);
    let metrics = run.metrics.render();
    assert_eq!(series(&metrics, ERRORS).as_deref(), Some("0"), "{metrics}");
    assert_eq!(series(&metrics, SUCCESSES).as_deref(), Some("1"), "{metrics}");
}
