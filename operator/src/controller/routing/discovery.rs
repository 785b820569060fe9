//! Which routing APIs the cluster serves (Gateway API HTTPRoute, Istio v1), found by discovery.
//!
//! At start-up this decides whether the Controller watches the route kinds (a watch on a kind
//! the API server does not serve would fail forever). While a provider's API is missing, a
//! reconcile that needs it asks discovery again, so installing the CRDs later is noticed without
//! a restart; the controller then applies routes, but only watches them for drift after a
//! restart (until then the periodic resync repairs drift).

use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;

use super::{gateway_api, istio};
use crate::controller::api::trafficsplit::Provider;

/// Served routing APIs, refreshed on demand.
#[derive(Debug, Default)]
pub struct RouteApis {
    gateway: AtomicBool,
    istio: AtomicBool,
}

impl RouteApis {
    /// Fixed availability, for tests.
    #[cfg(test)]
    pub fn new(gateway: bool, istio: bool) -> Self {
        Self {
            gateway: AtomicBool::new(gateway),
            istio: AtomicBool::new(istio),
        }
    }

    /// Asks the API server which routing APIs it serves.
    pub async fn discover(client: &Client) -> Result<Self, kube::Error> {
        let apis = Self::default();
        apis.refresh(client, Provider::GatewayApi).await?;
        apis.refresh(client, Provider::Istio).await?;
        Ok(apis)
    }

    pub fn gateway(&self) -> bool {
        self.gateway.load(Ordering::Acquire)
    }

    pub fn istio(&self) -> bool {
        self.istio.load(Ordering::Acquire)
    }

    /// Whether `provider`'s API was served when last asked (`None` needs no API).
    pub fn served(&self, provider: Provider) -> bool {
        match provider {
            Provider::GatewayApi => self.gateway(),
            Provider::Istio => self.istio(),
            Provider::None => true,
        }
    }

    /// Whether `provider`'s API is served, asking discovery again if it was missing before.
    /// `Err(name)` names the missing API for the status message.
    pub async fn ensure(
        &self,
        client: &Client,
        provider: Provider,
    ) -> Result<Result<(), String>, kube::Error> {
        let served = match provider {
            Provider::None => true,
            Provider::GatewayApi => self.gateway() || self.refresh(client, provider).await?,
            Provider::Istio => self.istio() || self.refresh(client, provider).await?,
        };
        Ok(if served {
            Ok(())
        } else {
            Err(missing_api(provider))
        })
    }

    async fn refresh(&self, client: &Client, provider: Provider) -> Result<bool, kube::Error> {
        let (version, needed, flag) = match provider {
            Provider::GatewayApi => (gateway_api::API_VERSION, gateway_api::RESOURCES, &self.gateway),
            Provider::Istio => (istio::API_VERSION, istio::RESOURCES, &self.istio),
            Provider::None => return Ok(true),
        };
        let served = match client.list_api_group_resources(version).await {
            Ok(list) => needed.iter().all(|n| list.resources.iter().any(|r| r.name == *n)),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(e) => return Err(e),
        };
        flag.store(served, Ordering::Release);
        Ok(served)
    }
}

/// The API a provider needs, as named in status messages.
fn missing_api(provider: Provider) -> String {
    match provider {
        Provider::GatewayApi => format!("{} HTTPRoute", gateway_api::API_VERSION),
        Provider::Istio => format!("{} DestinationRule/VirtualService", istio::API_VERSION),
        Provider::None => String::new(),
    }
}
