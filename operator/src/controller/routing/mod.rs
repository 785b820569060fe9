//! The routing providers, each in one file behind one interface: `gateway_api.rs` (an HTTPRoute)
//! and `istio.rs` (DestinationRule + VirtualService) each hold their kinds, rendering, drift
//! comparison, apply and teardown order, and watch registration; `None` (Services only) is
//! handled here. `discovery.rs` finds which providers' APIs the cluster serves.
//!
//! The interface is an enum over `spec.routing.provider`, dispatched by `match`, not a trait:
//! the providers are a closed set named by the API itself, each has its own concrete object
//! types (a typed HTTPRoute, dynamic Istio objects), and an exhaustive `match` makes the compiler
//! list every place a new provider must fill in — where a trait object would need boxed async
//! methods and could still be forgotten in the teardown and watch loops.

pub(crate) mod discovery;
pub(crate) mod gateway_api;
pub mod istio;

use ::gateway_api::httproutes::HttpRoute;
use kube::Client;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;

pub use discovery::RouteApis;

use crate::controller::api::trafficsplit::{Provider, TrafficSplit};
use crate::controller::objects::children::{ChildError, Observed, Owner};

/// Every provider with objects of its own, in teardown order.
const WITH_OBJECTS: [Provider; 2] = [Provider::GatewayApi, Provider::Istio];

/// Port the route sends traffic to: the first of `spec.ports` (an HTTPRoute rule has one
/// backend port; the other ports reach every backend through the root Service).
pub fn route_port(ts: &TrafficSplit) -> i32 {
    ts.spec.ports.first().map(|p| p.port).unwrap_or(80)
}

/// The route object(s) of the TrafficSplit's provider, as rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    GatewayApi(Box<HttpRoute>),
    Istio(Box<istio::Desired>),
    /// Services only: no weights are enforced.
    None,
}

/// The route object(s) with their live state.
pub enum ObservedRoute {
    GatewayApi(Box<Observed<HttpRoute>>),
    Istio(Box<istio::ObservedPair>),
    /// Provider `None`, or the provider's API is not served: nothing to write.
    None,
}

/// Renders the route of `spec.routing.provider`. Pure; call only on a valid spec.
pub fn render(ts: &TrafficSplit) -> Route {
    match ts.spec.routing.provider {
        Provider::GatewayApi => Route::GatewayApi(Box::new(gateway_api::render(ts))),
        Provider::Istio => Route::Istio(Box::new(istio::render(ts))),
        Provider::None => Route::None,
    }
}

impl Route {
    /// Reads the live route objects (none when the provider's API is not `served`).
    pub async fn observe(self, owner: &Owner<'_>, served: bool) -> Result<ObservedRoute, ChildError> {
        Ok(match self {
            _ if !served => ObservedRoute::None,
            Route::GatewayApi(route) => {
                ObservedRoute::GatewayApi(Box::new(gateway_api::observe(owner, *route).await?))
            }
            Route::Istio(pair) => ObservedRoute::Istio(Box::new(istio::observe(owner, *pair).await?)),
            Route::None => ObservedRoute::None,
        })
    }
}

impl ObservedRoute {
    /// The route objects that belong to someone else, as `Kind namespace/name (whose)`.
    pub fn conflicts(&self, owner: &Owner<'_>) -> Vec<String> {
        match self {
            ObservedRoute::GatewayApi(o) => gateway_api::conflicts(owner, o),
            ObservedRoute::Istio(pair) => istio::conflicts(owner, pair),
            ObservedRoute::None => Vec::new(),
        }
    }

    /// Applies what changed; returns how status names the route.
    pub async fn apply(&self, owner: &Owner<'_>) -> Result<String, ChildError> {
        match self {
            ObservedRoute::GatewayApi(o) => gateway_api::apply(owner, o).await,
            ObservedRoute::Istio(pair) => istio::apply(owner, pair).await,
            ObservedRoute::None => Ok("Services".into()),
        }
    }
}

/// Deletes the TrafficSplit's route objects of every provider whose API is served, except
/// `keep`'s: all of them on teardown (`keep` = None), those of a provider the spec moved away
/// from when pruning. Each provider deletes its own objects in its own order.
pub async fn teardown(owner: &Owner<'_>, apis: &RouteApis, keep: Option<Provider>) -> Result<(), ChildError> {
    for provider in WITH_OBJECTS {
        if Some(provider) == keep || !apis.served(provider) {
            continue;
        }
        match provider {
            Provider::GatewayApi => gateway_api::teardown(owner).await?,
            Provider::Istio => istio::teardown(owner).await?,
            Provider::None => {}
        }
    }
    Ok(())
}

/// Adds the watches on the owned route kinds of every provider whose API is served (a watch on
/// a kind the API server does not serve would fail forever).
pub fn watch(
    mut controller: Controller<TrafficSplit>,
    client: Client,
    namespace: Option<&str>,
    apis: &RouteApis,
    owned: &watcher::Config,
) -> Controller<TrafficSplit> {
    for provider in WITH_OBJECTS {
        if !apis.served(provider) {
            continue;
        }
        controller = match provider {
            Provider::GatewayApi => gateway_api::watch(controller, client.clone(), namespace, owned.clone()),
            Provider::Istio => istio::watch(controller, client.clone(), namespace, owned.clone()),
            Provider::None => controller,
        };
    }
    controller
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::fixtures::traffic_split;

    #[test]
    fn provider_none_renders_no_route() {
        let mut ts = traffic_split();
        ts.spec.routing.provider = Provider::None;
        assert_eq!(render(&ts), Route::None);
    }

    #[test]
    fn each_provider_renders_its_own_objects() {
        let mut ts = traffic_split();
        assert!(matches!(render(&ts), Route::GatewayApi(_)));
        ts.spec.routing.provider = Provider::Istio;
        assert!(matches!(render(&ts), Route::Istio(_)));
    }
}
