//! Provider `Istio`: a `networking.istio.io/v1` DestinationRule (one subset per backend, by its
//! labels) and a VirtualService (one weighted destination per subset), both named after the
//! TrafficSplit — their kinds, rendering, drift comparison, apply and teardown order, and watches.
//!
//! Order matters both ways: subsets are applied before the routes that use them, and the routes
//! are deleted before the subsets they point at, so Istio never routes to a missing subset.

use kube::api::ObjectMeta;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

use super::route_port;
use crate::controller::api::trafficsplit::TrafficSplit;
use crate::controller::objects::children::{ChildError, Children, Observed, Owner};
use crate::controller::objects::ownership::{meta_matches, owned_meta};

/// The API group/version both kinds are served under (Istio ≥ 1.22 serves v1).
pub const API_VERSION: &str = "networking.istio.io/v1";
/// The resources discovery must find for this provider.
pub const RESOURCES: &[&str] = &["destinationrules", "virtualservices"];

/// `networking.istio.io/v1` DestinationRule.
pub fn destination_rule_resource() -> ApiResource {
    resource("DestinationRule", "destinationrules")
}

/// `networking.istio.io/v1` VirtualService.
pub fn virtual_service_resource() -> ApiResource {
    resource("VirtualService", "virtualservices")
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn destination_rules(client: Client, namespace: &str) -> Children<DynamicObject> {
    Children::new(
        Api::namespaced_with(client, namespace, &destination_rule_resource()),
        API_VERSION,
        "DestinationRule",
        namespace,
    )
}

fn virtual_services(client: Client, namespace: &str) -> Children<DynamicObject> {
    Children::new(
        Api::namespaced_with(client, namespace, &virtual_service_resource()),
        API_VERSION,
        "VirtualService",
        namespace,
    )
}

/// The desired pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub destination_rule: DynamicObject,
    pub virtual_service: DynamicObject,
}

/// The pair as observed.
pub struct ObservedPair {
    destination_rule: Observed<DynamicObject>,
    virtual_service: Observed<DynamicObject>,
}

pub fn render(ts: &TrafficSplit) -> Desired {
    let meta: ObjectMeta = owned_meta(ts, ts.metadata.name.clone().unwrap_or_default(), None);
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
    Desired {
        destination_rule,
        virtual_service,
    }
}

/// Whether the live object already holds everything we would apply: the spec's fields we write
/// (always the same ones), each equal. Istio's schemas keep unknown fields, so server-side apply
/// leaves a field someone else added (`gateways`, `exportTo`, ...) in place; comparing the whole
/// spec would then re-apply, and publish `Updated`, on every reconcile without ever matching.
pub fn unchanged(live: &DynamicObject, desired: &DynamicObject) -> bool {
    let ours = |live_spec: &serde_json::Value| {
        desired
            .data
            .get("spec")
            .and_then(serde_json::Value::as_object)
            .is_some_and(|want| want.iter().all(|(k, v)| live_spec.get(k) == Some(v)))
    };
    meta_matches(&live.metadata, &desired.metadata) && live.data.get("spec").is_some_and(ours)
}

pub async fn observe(owner: &Owner<'_>, desired: Desired) -> Result<ObservedPair, ChildError> {
    let client = owner.client.clone();
    Ok(ObservedPair {
        destination_rule: destination_rules(client.clone(), &owner.namespace)
            .observe(owner, desired.destination_rule)
            .await?,
        virtual_service: virtual_services(client, &owner.namespace)
            .observe(owner, desired.virtual_service)
            .await?,
    })
}

pub fn conflicts(owner: &Owner<'_>, pair: &ObservedPair) -> Vec<String> {
    let client = owner.client.clone();
    let dr = destination_rules(client.clone(), &owner.namespace).conflict(&pair.destination_rule);
    let vs = virtual_services(client, &owner.namespace).conflict(&pair.virtual_service);
    dr.into_iter().chain(vs).collect()
}

/// Applies what changed, subsets before the routes that use them; returns how status names it.
pub async fn apply(owner: &Owner<'_>, pair: &ObservedPair) -> Result<String, ChildError> {
    let client = owner.client.clone();
    for (children, o) in [
        (
            destination_rules(client.clone(), &owner.namespace),
            &pair.destination_rule,
        ),
        (
            virtual_services(client.clone(), &owner.namespace),
            &pair.virtual_service,
        ),
    ] {
        let unchanged = o.live.as_ref().is_some_and(|live| unchanged(live, &o.desired));
        children.apply_observed(owner, o, unchanged).await?;
    }
    Ok(format!("DestinationRule and VirtualService {}", owner.name))
}

/// Deletes the VirtualService, then the DestinationRule its routes point at.
pub async fn teardown(owner: &Owner<'_>) -> Result<(), ChildError> {
    let client = owner.client.clone();
    virtual_services(client.clone(), &owner.namespace)
        .delete_if_controlled(owner, &owner.name)
        .await?;
    destination_rules(client, &owner.namespace)
        .delete_if_controlled(owner, &owner.name)
        .await
}

/// Adds the watches on our DestinationRules and VirtualServices (those with `owned` labels).
pub fn watch(
    mut controller: Controller<TrafficSplit>,
    client: Client,
    namespace: Option<&str>,
    owned: watcher::Config,
) -> Controller<TrafficSplit> {
    for resource in [destination_rule_resource(), virtual_service_resource()] {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        controller = controller.owns_with(api, resource, owned.clone());
    }
    controller
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::objects::ownership::controlled_by;
    use crate::controller::testing::fixtures::{UID, traffic_split};

    #[test]
    fn fields_someone_else_added_are_no_change_and_ours_are() {
        let desired = render(&traffic_split()).virtual_service;
        let mut live = desired.clone();
        live.data["spec"]["gateways"] = serde_json::json!(["mesh", "infra/public"]);
        assert!(
            unchanged(&live, &desired),
            "not ours: left alone, not re-applied each time"
        );
        live.data["spec"]["http"][0]["route"][0]["weight"] = serde_json::json!(50);
        assert!(!unchanged(&live, &desired), "a weight of ours");
        let mut no_spec = desired.clone();
        no_spec.data = serde_json::json!({});
        assert!(!unchanged(&no_spec, &desired));
    }

    #[test]
    fn renders_subsets_and_weighted_routes() {
        let Desired {
            destination_rule,
            virtual_service,
        } = render(&traffic_split());
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
    fn a_weight_change_is_drift_of_the_virtual_service_only() {
        let before = render(&traffic_split());
        let mut ts = traffic_split();
        ts.spec.backends[0].weight = 50;
        ts.spec.backends[1].weight = 50;
        let after = render(&ts);
        assert!(unchanged(&before.destination_rule, &after.destination_rule));
        assert!(!unchanged(&before.virtual_service, &after.virtual_service));
    }
}
