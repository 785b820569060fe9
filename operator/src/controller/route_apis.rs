//! Which routing APIs the cluster serves (Gateway API HTTPRoute, Istio v1), found by discovery.
//!
//! At start-up this decides whether the Controller watches the route kinds (a watch on a kind
//! the API server does not serve would fail forever). While a provider's API is missing, a
//! reconcile that needs it asks discovery again, so installing the CRDs later is noticed without
//! a restart; the controller then applies routes, but only watches them for drift after a
//! restart (until then the periodic resync repairs drift).

use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;

use super::trafficsplit::Provider;

pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
pub const ISTIO_API_VERSION: &str = "networking.istio.io/v1";

/// Served routing APIs, refreshed on demand.
#[derive(Debug, Default)]
pub struct RouteApis {
    gateway: AtomicBool,
    istio: AtomicBool,
}

impl RouteApis {
    /// Fixed availability (tests, or when discovery already ran).
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
        let (version, needed, flag): (&str, &[&str], &AtomicBool) = match provider {
            Provider::GatewayApi => (GATEWAY_API_VERSION, &["httproutes"], &self.gateway),
            Provider::Istio => (
                ISTIO_API_VERSION,
                &["destinationrules", "virtualservices"],
                &self.istio,
            ),
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
pub fn missing_api(provider: Provider) -> String {
    match provider {
        Provider::GatewayApi => format!("{GATEWAY_API_VERSION} HTTPRoute"),
        Provider::Istio => format!("{ISTIO_API_VERSION} DestinationRule/VirtualService"),
        Provider::None => String::new(),
    }
}
