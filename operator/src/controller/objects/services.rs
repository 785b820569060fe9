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
use crate::controller::api::trafficsplit::{FIELD_MANAGER, TrafficSplit, backend_service_name};

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
///
/// Ports are a list keyed by (port, protocol) that server-side apply merges: a port someone else
/// added stays whatever we apply, so it must not count as drift, or every reconcile would
/// re-apply (and publish `Updated`) without ever matching. A port we applied earlier and no
/// longer want does count: the next apply removes it. Which live ports are ours comes from the
/// Service's managedFields; without them (an API server that keeps none) every live port must be
/// one we want.
pub fn unchanged(live: &Service, desired: &Service) -> bool {
    if !meta_matches(&live.metadata, &desired.metadata) {
        return false;
    }
    let ours = applied_port_keys(&live.metadata);
    let (Some(live), Some(want)) = (live.spec.as_ref(), desired.spec.as_ref()) else {
        return false;
    };
    let wanted: Vec<PortFields> = want.ports.iter().flatten().map(port_fields).collect();
    let live_ports: Vec<&K8sServicePort> = live.ports.iter().flatten().collect();
    // Every port we want is live as we want it, whoever added it since; every live port of ours
    // is still wanted.
    let all_live = wanted
        .iter()
        .all(|w| live_ports.iter().any(|p| port_fields(p) == *w));
    let ours_wanted = live_ports
        .iter()
        .filter(|p| ours.as_ref().is_none_or(|keys| keys.contains(&port_key(p))))
        .all(|p| wanted.contains(&port_fields(p)));
    live.selector == want.selector && all_live && ours_wanted
}

type PortFields = (Option<String>, i32, Option<String>, Option<String>);

fn port_fields(p: &K8sServicePort) -> PortFields {
    (
        p.name.clone(),
        p.port,
        p.protocol.clone(),
        p.target_port.clone().map(|t| match t {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s,
        }),
    )
}

/// A port's merge key as managedFields spells it: `k:{"port":80,"protocol":"TCP"}`.
fn port_key(p: &K8sServicePort) -> String {
    let protocol = p.protocol.as_deref().unwrap_or("TCP");
    format!("k:{{\"port\":{},\"protocol\":\"{protocol}\"}}", p.port)
}

/// The keys of the ports our field manager applied, from managedFields; `None` when the object
/// carries no managedFields entry of ours.
fn applied_port_keys(meta: &ObjectMeta) -> Option<Vec<String>> {
    let entry =
        meta.managed_fields.iter().flatten().find(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })?;
    let ports = entry.fields_v1.as_ref()?.0.pointer("/f:spec/f:ports")?;
    Some(
        ports
            .as_object()
            .map(|o| o.keys().filter(|k| k.starts_with("k:")).cloned().collect())
            .unwrap_or_default(),
    )
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

    /// The root Service as the API server returns it after our apply, with our managedFields and
    /// a port someone else added with `kubectl edit`.
    fn live_with_foreign_port() -> (Service, Service) {
        let desired = render(&traffic_split()).remove(0);
        let mut live = desired.clone();
        live.metadata.managed_fields =
            Some(vec![serde_json::from_value(serde_json::json!({
            "manager": "splitscope", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}}}}},
        }))
        .unwrap()]);
        live.spec
            .as_mut()
            .unwrap()
            .ports
            .as_mut()
            .unwrap()
            .push(K8sServicePort {
                name: Some("debug".into()),
                port: 9999,
                protocol: Some("TCP".into()),
                ..K8sServicePort::default()
            });
        (live, desired)
    }

    #[test]
    fn a_port_someone_else_added_is_not_drift() {
        let (live, desired) = live_with_foreign_port();
        assert!(
            unchanged(&live, &desired),
            "applying cannot remove it: no re-apply each time"
        );
    }

    #[test]
    fn a_port_we_applied_and_no_longer_want_is_drift() {
        let (mut live, desired) = live_with_foreign_port();
        // The extra port is ours now (an earlier spec.ports had it): the next apply drops it.
        let fields = &mut live.metadata.managed_fields.as_mut().unwrap()[0];
        fields.fields_v1.as_mut().unwrap().0["f:spec"]["f:ports"]["k:{\"port\":9999,\"protocol\":\"TCP\"}"] =
            serde_json::json!({".": {}});
        assert!(!unchanged(&live, &desired));
        // And without managedFields no live port can be told apart: every one must be wanted.
        let (mut live, desired) = live_with_foreign_port();
        live.metadata.managed_fields = None;
        assert!(!unchanged(&live, &desired));
    }

    #[test]
    fn one_of_our_ports_changed_by_someone_else_is_drift() {
        let (mut live, desired) = live_with_foreign_port();
        live.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(9090));
        assert!(!unchanged(&live, &desired));
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
