//! What every reconcile shares: the API client, the Event recorder, metrics, the EndpointSlice
//! cache, which routing APIs are served, the per-object error backoff, and where rollouts measure.

use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;

use super::backoff::ErrorBackoff;
use super::metrics::Metrics;
use crate::controller::objects::children::ChildError;
use crate::controller::rollout::analysis::prometheus::Prometheus;
use crate::controller::routing::RouteApis;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// EndpointSlices of our Services (label `app.kubernetes.io/managed-by=splitscope`).
    pub slices: Store<EndpointSlice>,
    pub route_apis: RouteApis,
    pub backoff: ErrorBackoff,
    /// The client rollouts measure with.
    pub prometheus: Prometheus,
    /// `--prometheus-url`: where rollouts without `analysis.prometheus` measure.
    pub prometheus_url: Option<String>,
    /// Cancelled when this leadership term ends (the lease lost, or shutdown). Reconciles
    /// already running finish, but write nothing more once it is.
    pub term: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TrafficSplit {0} has no namespace")]
    NoNamespace(String),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("cannot read TrafficSplit {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the status of TrafficSplit {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot discover the routing APIs: {0}")]
    Discovery(#[source] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}
