//! Test data and mock-API scenarios for the reconciler (as in kube-rs/controller-rs).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::trafficsplit::{
    Backend, DeletionPolicy, Protocol, Routing, ServicePort, TrafficSplit, TrafficSplitSpec,
};

pub const UID: &str = "5c7e0a56-4a44-4d2c-9a2e-0f3d1b6c8e11";

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
