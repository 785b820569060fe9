//! The desired child objects of a (valid) TrafficSplit: the root Service, one Service per
//! backend, and the routing object(s) of its provider. Pure: no I/O.
//!
//! Every field the API server would default on the kinds we compare (Service `targetPort` and
//! `protocol`; HTTPRoute `parentRefs[].group/kind`, `backendRefs[].group/kind`, `matches`) is
//! written out explicitly, so that "live equals desired" can be decided by comparing what we set
//! (`drift.rs`) and an unchanged object is never re-applied.

use std::collections::BTreeMap;

use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesMatches,
    HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType, HttpRouteSpec,
};
use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;
use kube::core::{ApiResource, DynamicObject};
use serde_json::json;

use super::trafficsplit::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, Provider, TRAFFIC_SPLIT_LABEL, TrafficSplit, backend_service_name,
};

/// Label on backend Services naming the backend.
pub const BACKEND_LABEL: &str = "splitscope.dev/backend";

/// Everything the controller writes for one TrafficSplit.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The root Service first, then one per backend in spec order.
    pub services: Vec<Service>,
    pub route: Route,
}

/// The routing object(s) of the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    GatewayApi(Box<HttpRoute>),
    Istio {
        destination_rule: Box<DynamicObject>,
        virtual_service: Box<DynamicObject>,
    },
    None,
}

/// `networking.istio.io/v1` DestinationRule (Istio ≥ 1.22 serves v1).
pub fn destination_rule_resource() -> ApiResource {
    istio_resource("DestinationRule", "destinationrules")
}

/// `networking.istio.io/v1` VirtualService.
pub fn virtual_service_resource() -> ApiResource {
    istio_resource("VirtualService", "virtualservices")
}

fn istio_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The labels every owned object carries.
pub fn owned_labels(ts_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (TRAFFIC_SPLIT_LABEL.to_string(), ts_name.to_string()),
    ])
}

/// Label selector matching every object owned by the TrafficSplit `ts_name`.
pub fn owned_selector(ts_name: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TRAFFIC_SPLIT_LABEL}={ts_name}")
}

/// Renders the desired objects. Call only on a spec that passed `validate`.
pub fn render(ts: &TrafficSplit) -> Desired {
    let name = ts.metadata.name.clone().unwrap_or_default();
    let namespace = ts.metadata.namespace.clone();
    // blockOwnerDeletion: foreground deletion of the TrafficSplit waits for its children.
    let owner = ts.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    });
    let service = ts.service_name();
    let meta = |object_name: String, extra: Option<(&str, &str)>| {
        let mut labels = owned_labels(&name);
        if let Some((k, v)) = extra {
            labels.insert(k.to_string(), v.to_string());
        }
        ObjectMeta {
            name: Some(object_name),
            namespace: namespace.clone(),
            labels: Some(labels),
            owner_references: owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    };

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
        meta(service.clone(), None),
        ts.spec.selector.clone(),
    )];
    for b in &ts.spec.backends {
        let mut selector = ts.spec.selector.clone();
        selector.extend(b.labels.clone());
        services.push(service_object(
            meta(
                backend_service_name(&service, &b.name),
                Some((BACKEND_LABEL, &b.name)),
            ),
            selector,
        ));
    }

    let route = match ts.spec.routing.provider {
        Provider::GatewayApi => Route::GatewayApi(Box::new(http_route(ts, meta(name.clone(), None)))),
        Provider::Istio => {
            let (destination_rule, virtual_service) = istio(ts, meta(name.clone(), None));
            Route::Istio {
                destination_rule: Box::new(destination_rule),
                virtual_service: Box::new(virtual_service),
            }
        }
        Provider::None => Route::None,
    };
    Desired { services, route }
}

/// Port the route sends traffic to: the first of `spec.ports` (an HTTPRoute rule has one
/// backend port; the other ports reach every backend through the root Service).
pub fn route_port(ts: &TrafficSplit) -> i32 {
    ts.spec.ports.first().map(|p| p.port).unwrap_or(80)
}

fn http_route(ts: &TrafficSplit, meta: ObjectMeta) -> HttpRoute {
    let service = ts.service_name();
    let port = route_port(ts);
    let parent_refs: Vec<HttpRouteParentRefs> = if ts.spec.routing.parent_refs.is_empty() {
        // GAMMA: attach to the root Service's route port, so the mesh applies the weights to
        // requests for that Service.
        vec![HttpRouteParentRefs {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: service.clone(),
            namespace: None,
            port: Some(port),
            section_name: None,
        }]
    } else {
        ts.spec
            .routing
            .parent_refs
            .iter()
            .map(|p| HttpRouteParentRefs {
                group: Some(
                    p.group
                        .clone()
                        .unwrap_or_else(|| "gateway.networking.k8s.io".into()),
                ),
                kind: Some(p.kind.clone().unwrap_or_else(|| "Gateway".into())),
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                port: p.port,
                section_name: p.section_name.clone(),
            })
            .collect()
    };
    let backend_refs = ts
        .spec
        .backends
        .iter()
        .map(|b| HttpRouteRulesBackendRefs {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: backend_service_name(&service, &b.name),
            port: Some(port),
            weight: Some(b.weight),
            ..HttpRouteRulesBackendRefs::default()
        })
        .collect();
    let hostnames = (!ts.spec.routing.hostnames.is_empty()).then(|| ts.spec.routing.hostnames.clone());
    let mut route = HttpRoute::new(
        meta.name.as_deref().unwrap_or_default(),
        HttpRouteSpec {
            hostnames,
            parent_refs: Some(parent_refs),
            rules: Some(vec![HttpRouteRules {
                backend_refs: Some(backend_refs),
                matches: Some(vec![HttpRouteRulesMatches {
                    path: Some(HttpRouteRulesMatchesPath {
                        r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                        value: Some("/".into()),
                    }),
                    ..HttpRouteRulesMatches::default()
                }]),
                ..HttpRouteRules::default()
            }]),
        },
    );
    route.metadata = meta;
    route
}

fn istio(ts: &TrafficSplit, meta: ObjectMeta) -> (DynamicObject, DynamicObject) {
    let service = ts.service_name();
    let port = route_port(ts);
    let subsets: Vec<_> = ts
        .spec
        .backends
        .iter()
        .map(|b| json!({"name": b.name, "labels": b.labels}))
        .collect();
    let mut destination_rule = DynamicObject::new(
        meta.name.as_deref().unwrap_or_default(),
        &destination_rule_resource(),
    )
    .data(json!({"spec": {"host": service, "subsets": subsets}}));
    destination_rule.metadata = meta.clone();

    let mut hosts = vec![service.clone()];
    hosts.extend(ts.spec.routing.hostnames.iter().cloned());
    let routes: Vec<_> = ts
        .spec
        .backends
        .iter()
        .map(|b| {
            json!({
                "destination": {"host": service, "subset": b.name, "port": {"number": port}},
                "weight": b.weight,
            })
        })
        .collect();
    let mut virtual_service = DynamicObject::new(
        meta.name.as_deref().unwrap_or_default(),
        &virtual_service_resource(),
    )
    .data(json!({"spec": {"hosts": hosts, "http": [{"route": routes}]}}));
    virtual_service.metadata = meta;
    (destination_rule, virtual_service)
}

/// Whether `owner_refs` holds a controller reference to the TrafficSplit with `uid`.
pub fn controlled_by(owner_refs: Option<&Vec<OwnerReference>>, uid: &str) -> bool {
    owner_refs.is_some_and(|refs| {
        refs.iter()
            .any(|r| r.controller == Some(true) && r.uid == uid && r.kind == "TrafficSplit")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{UID, traffic_split};
    use crate::controller::trafficsplit::ParentRef;

    #[test]
    fn services_have_selectors_ports_labels_and_owner() {
        let ts = traffic_split();
        let desired = render(&ts);
        let names: Vec<_> = desired
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["checkout", "checkout-stable", "checkout-canary"]);

        let root = &desired.services[0];
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

        let canary = desired.services[2].spec.as_ref().unwrap();
        assert_eq!(
            canary.selector.as_ref().unwrap(),
            &BTreeMap::from([
                ("app".to_string(), "checkout".to_string()),
                ("version".to_string(), "v2".to_string())
            ])
        );

        for svc in &desired.services {
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
            desired.services[1].metadata.labels.as_ref().unwrap()[BACKEND_LABEL],
            "stable"
        );
    }

    #[test]
    fn target_port_defaults_to_port() {
        let mut ts = traffic_split();
        ts.spec.ports[0].target_port = None;
        let desired = render(&ts);
        let port = &desired.services[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    }

    #[test]
    fn gateway_api_route_is_gamma_by_default_with_the_weights() {
        let desired = render(&traffic_split());
        let Route::GatewayApi(route) = desired.route else {
            panic!("not an HTTPRoute")
        };
        assert_eq!(route.metadata.name.as_deref(), Some("checkout"));
        let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
        assert_eq!(parent.group.as_deref(), Some(""));
        assert_eq!(parent.kind.as_deref(), Some("Service"));
        assert_eq!(parent.name, "checkout");
        assert_eq!(parent.port, Some(80));
        let rules = route.spec.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        let refs: Vec<_> = rules[0]
            .backend_refs
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| (r.name.as_str(), r.port, r.weight))
            .collect();
        assert_eq!(
            refs,
            [
                ("checkout-stable", Some(80), Some(95)),
                ("checkout-canary", Some(80), Some(5))
            ]
        );
        assert!(controlled_by(route.metadata.owner_references.as_ref(), UID));
    }

    #[test]
    fn gateway_api_route_uses_given_parents_and_hostnames() {
        let mut ts = traffic_split();
        ts.spec.routing.parent_refs = vec![ParentRef {
            group: None,
            kind: None,
            namespace: Some("infra".into()),
            name: "public".into(),
            section_name: Some("https".into()),
            port: None,
        }];
        ts.spec.routing.hostnames = vec!["shop.example.com".into()];
        let Route::GatewayApi(route) = render(&ts).route else {
            panic!("not an HTTPRoute")
        };
        let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
        assert_eq!(parent.group.as_deref(), Some("gateway.networking.k8s.io"));
        assert_eq!(parent.kind.as_deref(), Some("Gateway"));
        assert_eq!(parent.namespace.as_deref(), Some("infra"));
        assert_eq!(parent.section_name.as_deref(), Some("https"));
        assert_eq!(
            route.spec.hostnames.as_deref(),
            Some(&["shop.example.com".to_string()][..])
        );
    }

    #[test]
    fn istio_renders_subsets_and_weighted_routes() {
        let mut ts = traffic_split();
        ts.spec.routing.provider = Provider::Istio;
        let Route::Istio {
            destination_rule,
            virtual_service,
        } = render(&ts).route
        else {
            panic!("not Istio")
        };
        let dr = serde_json::to_value(&destination_rule).unwrap();
        assert_eq!(dr["apiVersion"], "networking.istio.io/v1");
        assert_eq!(dr["kind"], "DestinationRule");
        assert_eq!(dr["metadata"]["name"], "checkout");
        assert_eq!(dr["spec"]["host"], "checkout");
        assert_eq!(
            dr["spec"]["subsets"],
            json!([{"name": "stable", "labels": {"version": "v1"}}, {"name": "canary", "labels": {"version": "v2"}}])
        );
        let vs = serde_json::to_value(&virtual_service).unwrap();
        assert_eq!(vs["kind"], "VirtualService");
        assert_eq!(vs["spec"]["hosts"], json!(["checkout"]));
        assert_eq!(
            vs["spec"]["http"][0]["route"],
            json!([
                {"destination": {"host": "checkout", "subset": "stable", "port": {"number": 80}}, "weight": 95},
                {"destination": {"host": "checkout", "subset": "canary", "port": {"number": 80}}, "weight": 5}
            ])
        );
        assert!(controlled_by(
            virtual_service.metadata.owner_references.as_ref(),
            UID
        ));
    }

    #[test]
    fn provider_none_renders_services_only() {
        let mut ts = traffic_split();
        ts.spec.routing.provider = Provider::None;
        let desired = render(&ts);
        assert_eq!(desired.route, Route::None);
        assert_eq!(desired.services.len(), 3);
    }

    #[test]
    fn explicit_service_name_names_every_service() {
        let mut ts = traffic_split();
        ts.spec.service = Some("cart".into());
        let desired = render(&ts);
        let names: Vec<_> = desired
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["cart", "cart-stable", "cart-canary"]);
        let Route::GatewayApi(route) = desired.route else {
            panic!()
        };
        // The route is named after the TrafficSplit, its parent is the root Service.
        assert_eq!(route.metadata.name.as_deref(), Some("checkout"));
        assert_eq!(route.spec.parent_refs.as_ref().unwrap()[0].name, "cart");
    }
}
