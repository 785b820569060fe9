//! Test data: the design's example TrafficSplit, live copies of its children as the API server
//! returns them, EndpointSlices, and the statuses a reconcile must write — as literal JSON, never
//! computed by the production status code they are meant to check.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::controller::api::trafficsplit::{
    Backend, DeletionPolicy, FINALIZER, Protocol, Routing, ServicePort, TrafficSplit, TrafficSplitSpec,
};
use crate::controller::runtime::endpoints::SERVICE_NAME_LABEL;

pub const UID: &str = "5c7e0a56-4a44-4d2c-9a2e-0f3d1b6c8e11";

/// When the settled statuses below were written (1_600_000_000 s).
pub const EARLIER: &str = "2020-09-13T12:26:40Z";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The design's example: shop/checkout, 95/5 between stable and canary.
pub fn traffic_split() -> TrafficSplit {
    let mut ts = TrafficSplit::new(
        "checkout",
        TrafficSplitSpec {
            service: None,
            selector: labels(&[("app", "checkout")]),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Protocol::Tcp,
            }],
            backends: vec![
                Backend {
                    name: "stable".into(),
                    labels: labels(&[("version", "v1")]),
                    weight: 95,
                },
                Backend {
                    name: "canary".into(),
                    labels: labels(&[("version", "v2")]),
                    weight: 5,
                },
            ],
            routing: Routing::default(),
            deletion_policy: DeletionPolicy::Delete,
            rollout: None,
        },
    );
    ts.metadata = ObjectMeta {
        name: Some("checkout".into()),
        namespace: Some("shop".into()),
        uid: Some(UID.into()),
        generation: Some(1),
        resource_version: Some("100".into()),
        ..ObjectMeta::default()
    };
    ts
}

/// The example with our finalizer (past the first reconcile).
pub fn with_finalizer(mut ts: TrafficSplit) -> TrafficSplit {
    ts.metadata.finalizers = Some(vec![FINALIZER.into()]);
    ts
}

/// Marked for deletion.
pub fn deleting(ts: TrafficSplit) -> TrafficSplit {
    let mut ts = with_finalizer(ts);
    ts.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    ts
}

/// `ts` with `status` (a literal) as written by an earlier reconcile.
pub fn with_status(mut ts: TrafficSplit, status: Value) -> TrafficSplit {
    ts.status = Some(serde_json::from_value(status).unwrap());
    ts
}

/// A live copy of a rendered child, as the API server returns it (uid, resourceVersion, and the
/// defaults it fills in).
pub fn live<T: serde::Serialize>(object: &T) -> Value {
    let mut v = serde_json::to_value(object).unwrap();
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    let kind = v["kind"].as_str().unwrap().to_lowercase();
    v["metadata"]["uid"] = json!(format!("uid-{kind}-{name}"));
    v["metadata"]["resourceVersion"] = json!("7");
    if kind == "service" {
        v["spec"]["clusterIP"] = json!("10.96.0.42");
        v["spec"]["type"] = json!("ClusterIP");
        v["spec"]["sessionAffinity"] = json!("None");
    }
    v
}

/// A slice of `service` with one endpoint per entry (pod uid, ready?), labelled as the
/// EndpointSlice controller labels the slices of our Services.
pub fn slice(
    namespace: &str,
    service: &str,
    suffix: &str,
    endpoints: &[(&str, Option<bool>)],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-{suffix}")),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), service.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "splitscope".to_string(),
                ),
                ("splitscope.dev/traffic-split".to_string(), "checkout".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            endpoints
                .iter()
                .enumerate()
                .map(|(i, (uid, ready))| Endpoint {
                    addresses: vec![format!("10.0.0.{i}")],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        name: Some(format!("pod-{uid}")),
                        uid: Some(uid.to_string()),
                        ..ObjectReference::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: None,
    }
}

/// Ready EndpointSlices for both backends of the example: stable 2 pods, canary 1.
pub fn ready_slices() -> Vec<EndpointSlice> {
    vec![
        slice(
            "shop",
            "checkout-stable",
            "x1",
            &[("p1", Some(true)), ("p2", Some(true))],
        ),
        slice("shop", "checkout-canary", "x1", &[("p3", Some(true))]),
    ]
}

/// One status condition, literally.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    since: &str,
) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": since,
    })
}

/// Stands for "the time of this reconcile" in an expected status (see `status_matches`).
pub const NOW: &str = "<now>";

/// Backends of an expected status: (name, weight, ready endpoints).
pub fn backends(list: &[(&str, i32, i32)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(name, weight, ready)| {
                json!({"name": name, "service": format!("checkout-{name}"), "weight": weight, "readyEndpoints": ready})
            })
            .collect(),
    )
}

/// The status of the example after a reconcile with every backend ready (2 stable, 1 canary
/// endpoints), written at [`EARLIER`].
pub fn settled_ready_status() -> Value {
    json!({
        "observedGeneration": 1,
        "phase": "Ready",
        "service": "checkout",
        "weights": "stable=95,canary=5",
        "conditions": [
            condition("Ready", "True", "Reconciled", "HTTPRoute checkout applied with weights stable=95,canary=5", 1, EARLIER),
            condition("Accepted", "True", "Valid", "the spec is valid", 1, EARLIER),
            condition("BackendsAvailable", "True", "AllBackendsReady", "stable: 2 ready, canary: 1 ready", 1, EARLIER),
        ],
        "backends": backends(&[("stable", 95, 2), ("canary", 5, 1)]),
    })
}

/// The status of the example (generation 1) applied before any EndpointSlice exists.
pub fn pending_status() -> Value {
    let pending =
        "no EndpointSlice yet for Service checkout-stable; no EndpointSlice yet for Service checkout-canary";
    json!({
        "observedGeneration": 1,
        "phase": "Pending",
        "service": "checkout",
        "weights": "stable=95,canary=5",
        "conditions": [
            condition("Ready", "False", "EndpointsPending", pending, 1, NOW),
            condition("Accepted", "True", "Valid", "the spec is valid", 1, NOW),
            condition("BackendsAvailable", "Unknown", "EndpointsPending", pending, 1, NOW),
        ],
        "backends": backends(&[("stable", 95, 0), ("canary", 5, 0)]),
    })
}

/// Asserts `actual` equals `expected`, where a time of [`NOW`] in `expected` — a condition's
/// `lastTransitionTime`, or the rollout's `stepStartedAt`, `weightChangedAt` and metrics'
/// `lastMeasuredAt` — stands for any RFC 3339 time at or after [`EARLIER`] (the reconcile's own
/// clock).
pub fn status_matches(actual: &Value, expected: &Value) {
    let mut actual = actual.clone();
    let now = |have: &mut Value, want: &Value| {
        if want == NOW {
            let at = have.as_str().unwrap_or_default();
            assert!(
                at.ends_with('Z') && at > EARLIER,
                "{at:?} is not this reconcile's time"
            );
            *have = json!(NOW);
        }
    };
    if let (Some(have), Some(want)) = (
        actual["conditions"].as_array_mut(),
        expected["conditions"].as_array(),
    ) {
        for (have, want) in have.iter_mut().zip(want) {
            now(&mut have["lastTransitionTime"], &want["lastTransitionTime"]);
        }
    }
    if actual["rollout"].is_object() {
        for field in ["stepStartedAt", "weightChangedAt"] {
            if expected["rollout"][field] == NOW {
                now(&mut actual["rollout"][field], &expected["rollout"][field]);
            }
        }
        if let (Some(have), Some(want)) = (
            actual["rollout"]["metrics"].as_array_mut(),
            expected["rollout"]["metrics"].as_array(),
        ) {
            for (have, want) in have.iter_mut().zip(want) {
                if want["lastMeasuredAt"] == NOW {
                    now(&mut have["lastMeasuredAt"], &want["lastMeasuredAt"]);
                }
            }
        }
    }
    assert_eq!(
        actual,
        *expected,
        "status written:\n{}\nexpected:\n{}",
        serde_json::to_string_pretty(&actual).unwrap_or_default(),
        serde_json::to_string_pretty(expected).unwrap_or_default()
    );
}
