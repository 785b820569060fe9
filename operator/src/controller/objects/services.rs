//! The Services every TrafficSplit owns, whatever its routing provider: the root Service and one
//! per backend. Rendering and drift comparison; pure, no I/O.
//!
//! Every field the API server would default (`targetPort`, `protocol`) is written out, so that
//! "live equals desired" is decided by comparing what we set and an unchanged Service is never
//! re-applied (a weight change then writes only the route, and a resync writes nothing).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::ownership::{meta_matches, owned_meta};
use crate::controller::api::trafficsplit::{TrafficSplit, backend_service_name};

/// Label on backend Services naming the backend.
pub const BACKEND_LABEL: &str = "splitscope.dev/backend";

/// The root Service first, then one per backend in spec order. Call only on a spec that passed
/// `validate`.
pub fn render(ts: &TrafficSplit) -> Vec<Service> {
    let service = ts.service_name();
    let ports: Vec<K8sServicePort> = ts
        .spec
        .ports
        .iter()
        .map(|p| K8sServicePort {
            name: p.name.clone(),
            port: p.port,
            target_port: Some(p.target_port.clone().unwrap_or(IntOrString::Int(p.port))),
            protocol: Some(p.protocol.as_str().to_string()),
            ..K8sServicePort::default()
        })
        .collect();
    let service_object = |meta: ObjectMeta, selector: BTreeMap<String, String>| Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports.clone()),
            ..ServiceSpec::default()
        }),
        status: None,
    };

    let mut services = vec![service_object(
        owned_meta(ts, service.clone(), None),
        ts.spec.selector.clone(),
    )];
    for b in &ts.spec.backends {
        let mut selector = ts.spec.selector.clone();
        selector.extend(b.labels.clone());
        services.push(service_object(
            owned_meta(
                ts,
                backend_service_name(&service, &b.name),
                Some((BACKEND_LABEL, &b.name)),
            ),
            selector,
        ));
    }
    services
}

/// Whether the live Service already holds everything we would apply.
pub fn unchanged(live: &Service, desired: &Service) -> bool {
    if !meta_matches(&live.metadata, &desired.metadata) {
        return false;
    }
    let (Some(live), Some(want)) = (live.spec.as_ref(), desired.spec.as_ref()) else {
        return false;
    };
    let ports = |spec: &ServiceSpec| {
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
                        IntOrString::Int(n) => n.to_string(),
                        IntOrString::String(s) => s,
                    }),
                )
            })
            .collect();
        ports.sort();
        ports
    };
    live.selector == want.selector && ports(live) == ports(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api::trafficsplit::{MANAGED_BY_LABEL, TRAFFIC_SPLIT_LABEL};
    use crate::controller::objects::ownership::controlled_by;
    use crate::controller::testing::fixtures::{UID, traffic_split};

    #[test]
    fn services_have_selectors_ports_labels_and_owner() {
        let ts = traffic_split();
        let services = render(&ts);
        let names: Vec<_> = services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["checkout", "checkout-stable", "checkout-canary"]);

        let root = &services[0];
        let spec = root.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.as_ref().unwrap(),
            &BTreeMap::from([("app".to_string(), "checkout".to_string())])
        );
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
        assert_eq!(port.protocol.as_deref(), Some("TCP"));

        let canary = services[2].spec.as_ref().unwrap();
        assert_eq!(
            canary.selector.as_ref().unwrap(),
            &BTreeMap::from([
                ("app".to_string(), "checkout".to_string()),
                ("version".to_string(), "v2".to_string())
            ])
        );

        for svc in &services {
            let labels = svc.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[MANAGED_BY_LABEL], "splitscope");
            assert_eq!(labels[TRAFFIC_SPLIT_LABEL], "checkout");
            assert_eq!(svc.metadata.namespace.as_deref(), Some("shop"));
            let owner = &svc.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.uid, UID);
            assert_eq!(owner.kind, "TrafficSplit");
            assert_eq!(owner.api_version, "splitscope.dev/v1alpha1");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(owner.block_owner_deletion, Some(true));
            assert!(controlled_by(svc.metadata.owner_references.as_ref(), UID));
        }
        assert_eq!(
            services[1].metadata.labels.as_ref().unwrap()[BACKEND_LABEL],
            "stable"
        );
    }

    #[test]
    fn target_port_defaults_to_port() {
        let mut ts = traffic_split();
        ts.spec.ports[0].target_port = None;
        let services = render(&ts);
        let port = &services[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    }

    #[test]
    fn explicit_service_name_names_every_service() {
        let mut ts = traffic_split();
        ts.spec.service = Some("cart".into());
        let names: Vec<_> = render(&ts)
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["cart", "cart-stable", "cart-canary"]);
    }

    #[test]
    fn a_defaulted_live_service_equals_the_desired_one() {
        let desired = render(&traffic_split()).remove(0);
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
        assert!(unchanged(&live, &desired));
    }

    #[test]
    fn a_changed_selector_port_label_or_owner_is_drift() {
        let desired = render(&traffic_split()).remove(1);

        let mut live = desired.clone();
        live.spec
            .as_mut()
            .unwrap()
            .selector
            .as_mut()
            .unwrap()
            .insert("version".into(), "v3".into());
        assert!(!unchanged(&live, &desired));

        let mut live = desired.clone();
        live.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        assert!(!unchanged(&live, &desired));

        let mut live = desired.clone();
        live.metadata.labels = None;
        assert!(!unchanged(&live, &desired));

        let mut live = desired.clone();
        live.metadata.owner_references = None;
        assert!(!unchanged(&live, &desired));
    }

    #[test]
    fn a_weight_change_leaves_every_service_unchanged() {
        let before = render(&traffic_split());
        let mut ts = traffic_split();
        ts.spec.backends[0].weight = 50;
        ts.spec.backends[1].weight = 50;
        for (live, want) in before.iter().zip(&render(&ts)) {
            assert!(unchanged(live, want));
        }
    }
}
