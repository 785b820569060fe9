//! Provider `GatewayAPI`: one `gateway.networking.k8s.io/v1` HTTPRoute named after the
//! TrafficSplit, with a weighted backendRef per backend Service — its kind, rendering, drift
//! comparison, teardown and watch.
//!
//! Every field the API server defaults (`parentRefs[].group/kind`, `backendRefs[].group/kind`,
//! `matches`) is written out, so a freshly defaulted live route compares equal to the rendered
//! one and an unchanged route is never re-applied.

use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesMatches,
    HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType, HttpRouteSpec,
};
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};

use super::route_port;
use crate::controller::api::trafficsplit::{TrafficSplit, backend_service_name};
use crate::controller::objects::children::{ChildError, Children, Observed, Owner, scoped_api};
use crate::controller::objects::ownership::{meta_matches, owned_meta};

/// The API group/version the HTTPRoute is served under.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The resources discovery must find for this provider.
pub const RESOURCES: &[&str] = &["httproutes"];

/// The HTTPRoutes of `namespace`.
pub fn http_routes(client: Client, namespace: &str) -> Children<HttpRoute> {
    Children::new(
        Api::namespaced(client, namespace),
        API_VERSION,
        "HTTPRoute",
        namespace,
    )
}

/// The desired HTTPRoute.
pub fn render(ts: &TrafficSplit) -> HttpRoute {
    let meta = owned_meta(ts, ts.metadata.name.clone().unwrap_or_default(), None);
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
    // Always written, even empty: server-side apply leaves alone a field its manager does not
    // send, so hostnames someone else added would stay, the live spec would never equal ours, and
    // every reconcile would re-apply (and publish `Updated`). Sent as `[]`, the list is ours and
    // the forced apply replaces it. An empty list means the same to Gateway API as none.
    let hostnames = Some(ts.spec.routing.hostnames.clone());
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

/// Whether the live route already holds everything we would apply.
pub fn unchanged(live: &HttpRoute, desired: &HttpRoute) -> bool {
    meta_matches(&live.metadata, &desired.metadata) && live.spec == desired.spec
}

pub async fn observe(owner: &Owner<'_>, desired: HttpRoute) -> Result<Observed<HttpRoute>, ChildError> {
    http_routes(owner.client.clone(), &owner.namespace)
        .observe(owner, desired)
        .await
}

pub fn conflicts(owner: &Owner<'_>, observed: &Observed<HttpRoute>) -> Vec<String> {
    http_routes(owner.client.clone(), &owner.namespace)
        .conflict(observed)
        .into_iter()
        .collect()
}

/// Applies the route if it changed; returns how status names it.
pub async fn apply(owner: &Owner<'_>, o: &Observed<HttpRoute>) -> Result<String, ChildError> {
    let unchanged = o.live.as_ref().is_some_and(|live| unchanged(live, &o.desired));
    http_routes(owner.client.clone(), &owner.namespace)
        .apply_observed(owner, o, unchanged)
        .await?;
    Ok(format!("HTTPRoute {}", owner.name))
}

/// Deletes the TrafficSplit's HTTPRoute (there is one object, so no order to keep).
pub async fn teardown(owner: &Owner<'_>) -> Result<(), ChildError> {
    http_routes(owner.client.clone(), &owner.namespace)
        .delete_if_controlled(owner, &owner.name)
        .await
}

/// Adds the watch on our HTTPRoutes (those with `owned` labels) to the Controller.
pub fn watch(
    controller: Controller<TrafficSplit>,
    client: Client,
    namespace: Option<&str>,
    owned: watcher::Config,
) -> Controller<TrafficSplit> {
    controller.owns(scoped_api::<HttpRoute>(client, namespace), owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api::trafficsplit::ParentRef;
    use crate::controller::objects::ownership::controlled_by;
    use crate::controller::testing::fixtures::{UID, traffic_split};

    #[test]
    fn the_route_is_gamma_by_default_with_the_weights() {
        let route = render(&traffic_split());
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
    fn hostnames_someone_else_added_are_a_change_and_an_empty_list_is_ours() {
        let desired = render(&traffic_split());
        assert_eq!(
            desired.spec.hostnames.as_deref(),
            Some(&[][..]),
            "sent even when empty"
        );
        let mut live = desired.clone();
        assert!(unchanged(&live, &desired));
        live.spec.hostnames = Some(vec!["added.example.com".into()]);
        assert!(
            !unchanged(&live, &desired),
            "the forced apply must take the list back"
        );
    }

    #[test]
    fn the_route_uses_given_parents_and_hostnames() {
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
        let route = render(&ts);
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
    fn the_route_is_named_after_the_traffic_split_and_attaches_to_the_root_service() {
        let mut ts = traffic_split();
        ts.spec.service = Some("cart".into());
        let route = render(&ts);
        assert_eq!(route.metadata.name.as_deref(), Some("checkout"));
        assert_eq!(route.spec.parent_refs.as_ref().unwrap()[0].name, "cart");
    }

    #[test]
    fn a_weight_change_is_route_drift() {
        let before = render(&traffic_split());
        let mut ts = traffic_split();
        ts.spec.backends[0].weight = 50;
        ts.spec.backends[1].weight = 50;
        let after = render(&ts);
        assert!(!unchanged(&before, &after));
        assert!(unchanged(&after, &after));
    }
}
