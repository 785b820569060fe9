//! Whether a live object already holds everything we would apply, so the apply can be skipped
//! (a weight change then writes only the route, and a resync writes nothing).
//!
//! Only the fields we set are compared; render.rs writes the API server's defaults explicitly so
//! that a freshly defaulted live object compares equal.

use std::collections::BTreeMap;

use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Service;
use kube::api::ObjectMeta;
use kube::core::DynamicObject;

/// Labels and ownerReferences we set are all present on `live`.
fn meta_matches(live: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let empty = BTreeMap::new();
    let live_labels = live.labels.as_ref().unwrap_or(&empty);
    let labels_ok = desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| live_labels.get(k) == Some(v));
    let owners_ok = desired.owner_references.iter().flatten().all(|want| {
        live.owner_references.iter().flatten().any(|have| {
            have.uid == want.uid
                && have.controller == want.controller
                && have.block_owner_deletion == want.block_owner_deletion
        })
    });
    labels_ok && owners_ok
}

pub fn service_unchanged(live: &Service, desired: &Service) -> bool {
    if !meta_matches(&live.metadata, &desired.metadata) {
        return false;
    }
    let (Some(live), Some(want)) = (live.spec.as_ref(), desired.spec.as_ref()) else {
        return false;
    };
    let ports = |spec: &k8s_openapi::api::core::v1::ServiceSpec| {
        let mut ports: Vec<_> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone(),
                    p.port,
                    p.protocol.clone(),
                    p.target_port.clone().map(|t| match t {
                        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n.to_string(),
                        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
                    }),
                )
            })
            .collect();
        ports.sort();
        ports
    };
    live.selector == want.selector && ports(live) == ports(want)
}

pub fn http_route_unchanged(live: &HttpRoute, desired: &HttpRoute) -> bool {
    meta_matches(&live.metadata, &desired.metadata) && live.spec == desired.spec
}

pub fn dynamic_unchanged(live: &DynamicObject, desired: &DynamicObject) -> bool {
    meta_matches(&live.metadata, &desired.metadata) && live.data.get("spec") == desired.data.get("spec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::traffic_split;
    use crate::controller::render::{Route, render};

    #[test]
    fn a_defaulted_live_service_equals_the_desired_one() {
        let desired = render(&traffic_split()).services.remove(0);
        let mut live = desired.clone();
        // What the API server adds: other labels, cluster IP, session affinity, managed fields.
        live.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "shop".into());
        live.metadata.resource_version = Some("42".into());
        let spec = live.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.96.0.10".into());
        spec.type_ = Some("ClusterIP".into());
        spec.session_affinity = Some("None".into());
        assert!(service_unchanged(&live, &desired));
    }

    #[test]
    fn a_changed_selector_port_label_or_owner_is_drift() {
        let desired = render(&traffic_split()).services.remove(1);

        let mut live = desired.clone();
        live.spec
            .as_mut()
            .unwrap()
            .selector
            .as_mut()
            .unwrap()
            .insert("version".into(), "v3".into());
        assert!(!service_unchanged(&live, &desired));

        let mut live = desired.clone();
        live.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        assert!(!service_unchanged(&live, &desired));

        let mut live = desired.clone();
        live.metadata.labels = None;
        assert!(!service_unchanged(&live, &desired));

        let mut live = desired.clone();
        live.metadata.owner_references = None;
        assert!(!service_unchanged(&live, &desired));
    }

    #[test]
    fn a_weight_change_is_route_drift_only() {
        let before = render(&traffic_split());
        let mut ts = traffic_split();
        ts.spec.backends[0].weight = 50;
        ts.spec.backends[1].weight = 50;
        let after = render(&ts);
        for (live, want) in before.services.iter().zip(&after.services) {
            assert!(service_unchanged(live, want));
        }
        let (Route::GatewayApi(live), Route::GatewayApi(want)) = (before.route, after.route) else {
            panic!()
        };
        assert!(!http_route_unchanged(&live, &want));
        assert!(http_route_unchanged(&want, &want));
    }
}
