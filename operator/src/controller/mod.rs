//! The TrafficSplit controller (`splitscope controller`).
//!
//! This file is the composition root: it wires the runtime (the Controller, its watches, leader
//! election) with the reconciler. The rooms follow the spec path, and each depends only on the
//! ones listed before it (docs/controller.md, "Where things live"):
//!
//! - `api`: the TrafficSplit type, its patterns and limits, the CRD, the controller's own check;
//! - `events`, `status`: Kubernetes Events about a TrafficSplit; the pure status computation;
//! - `objects`: what every provider owns — Services, ownership, typed read/apply/delete;
//! - `routing`: one file per provider behind one interface, and API discovery;
//! - `runtime`: Controller and watches, leader election, backoff, metrics, context;
//! - `teardown`: the Cleanup path; `rollout`: progressive delivery (decide, measure);
//!   `reconcile`: the finalizer entry and the Apply path.
//!
//! `testing` (compiled for tests only) holds fixtures, the mock API and lifecycle scenarios.

pub mod api;
pub(crate) mod events;
pub(crate) mod objects;
pub(crate) mod reconcile;
pub mod rollout;
pub mod routing;
pub mod runtime;
pub(crate) mod status;
pub(crate) mod teardown;

#[cfg(test)]
mod testing;

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector;
use tokio_util::sync::CancellationToken;

use crate::cli::ControllerArgs;
use crate::metrics_server::{MetricsServer, Readiness};
use rollout::analysis::prometheus::Prometheus;
use routing::RouteApis;
use runtime::context::Context;
use runtime::metrics::Metrics;
use runtime::{backoff, leader, watches};

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal().context("cannot install the signal handlers")?;
    run_until(args, shutdown).await
}

/// Runs the controller until `shutdown` is cancelled (the e2e tests run it in-process).
pub async fn run_until(args: ControllerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Client::try_default().await.context(
        "cannot configure a Kubernetes client: set KUBECONFIG (or ~/.kube/config), or run in a pod with a service account",
    )?;
    serve(args, client, shutdown).await
}

/// Runs the controller with `client` until `shutdown` is cancelled.
pub async fn serve(args: ControllerArgs, client: Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Whatever way this returns, stop the metrics server with it.
    let _stop = shutdown.clone().drop_guard();
    if args.prometheus_token_file.is_some() && args.prometheus_url.is_none() {
        anyhow::bail!(
            "--prometheus-token-file needs --prometheus-url: the token is sent to that address only"
        );
    }
    // Built once, at start: a bad --prometheus-ca-file is named now, not at the first leadership
    // term, and every term measures with the same client.
    let prometheus = prometheus_client(&args)?;
    let metrics = Arc::new(Metrics::new()?);
    let readiness = Arc::new(Readiness::default());
    let server = MetricsServer::bind(args.metrics_addr).await?;
    tracing::info!(addr = %server.local_addr()?, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(server.serve(metrics.registry.clone(), readiness.clone(), shutdown.clone()));

    ensure_crd_installed(&client).await?;
    let instance = leader::instance();
    let identity = leader::identity(&instance);

    let term = {
        let client = client.clone();
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let args = args.clone();
        let instance = instance.clone();
        let prometheus = prometheus.clone();
        move |stop: CancellationToken| {
            let (client, metrics, readiness, args, instance, prometheus) = (
                client.clone(),
                metrics.clone(),
                readiness.clone(),
                args.clone(),
                instance.clone(),
                prometheus.clone(),
            );
            async move {
                if let Err(e) = lead(
                    client,
                    metrics,
                    readiness,
                    args,
                    prometheus,
                    instance,
                    stop.clone(),
                )
                .await
                {
                    tracing::error!(error = %format!("{e:#}"), "controller stopped");
                }
            }
        }
    };

    let result = if args.no_leader_elect {
        tracing::info!("leader election disabled (--no-leader-elect)");
        metrics.leader.set(1);
        lead(
            client.clone(),
            metrics.clone(),
            readiness.clone(),
            args.clone(),
            prometheus,
            instance.clone(),
            shutdown.clone(),
        )
        .await
    } else {
        let namespace = leader::lease_namespace(args.lease_namespace.as_deref());
        tracing::info!(lease = %format!("{namespace}/{}", args.lease_name), %identity, "leader election");
        let manager = leader::manager(client.clone(), &namespace, &args.lease_name, &identity).await?;
        leader::run(manager, metrics.clone(), readiness, shutdown.clone(), term)
            .await
            .map_err(anyhow::Error::from)
    };
    shutdown.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server"),
        Err(e) => tracing::warn!(error = %e, "metrics server task"),
    }
    result
}

/// One leadership term (or the whole run without leader election): discover the routing APIs,
/// build the context and run the Controller with the reconciler until `stop`. Events name
/// `instance` (the pod name) as their reporting instance.
async fn lead(
    client: Client,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    args: ControllerArgs,
    prometheus: Prometheus,
    instance: String,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let route_apis = RouteApis::discover(&client)
        .await
        .context("cannot discover the routing APIs")?;
    tracing::info!(
        gateway_api = route_apis.gateway(),
        istio = route_apis.istio(),
        "routing APIs served (installing one later is noticed, but its objects are only watched after a restart)"
    );
    let (slices, writer) = reflector::store::<EndpointSlice>();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), events::reporter(Some(instance))),
        client,
        metrics,
        slices,
        route_apis,
        backoff: backoff::ErrorBackoff::default(),
        prometheus,
        prometheus_url: args.prometheus_url,
        term: stop.clone(),
    });
    watches::run(ctx, writer, args.namespace, readiness, stop, reconcile::reconcile).await;
    Ok(())
}

/// The client rollouts measure with, as the flags configure it.
fn prometheus_client(args: &ControllerArgs) -> anyhow::Result<Prometheus> {
    Prometheus::configured(
        args.prometheus_ca_file.as_deref(),
        args.prometheus_url
            .clone()
            .zip(args.prometheus_token_file.clone()),
    )
    .context("cannot set up the Prometheus client")
}

/// Fails with the fix when the TrafficSplit CRD is not installed (a watch on it would only
/// error in a loop).
async fn ensure_crd_installed(client: &Client) -> anyhow::Result<()> {
    let version = "splitscope.dev/v1alpha1";
    let served = match client.list_api_group_resources(version).await {
        Ok(list) => list.resources.iter().any(|r| r.name == "trafficsplits"),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => {
            return Err(anyhow::Error::new(e).context("cannot reach the Kubernetes API server"));
        }
    };
    if !served {
        anyhow::bail!(
            "the TrafficSplit CRD ({version} trafficsplits) is not installed: run `kubectl apply --server-side -f crds/` (or `splitscope crd | kubectl apply --server-side -f -`)"
        );
    }
    Ok(())
}

/// The CRD as YAML (`splitscope crd`).
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(api::crd::crd_yaml()?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::mock_api;
    use super::*;
    use crate::metrics_server::test_http::get as http_get;

    /// The whole `splitscope controller --no-leader-elect` wiring against a mocked API server:
    /// /readyz turns 200 once the caches are synced, /metrics carries the design's names, and
    /// cancelling stops it cleanly.
    #[tokio::test]
    async fn serves_metrics_and_readiness_and_stops_on_shutdown() {
        let (client, handle) = mock_api::client();
        let server = mock_api::serve_permissive(handle, mock_api::Grants::CONTROLLER);
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let args = ControllerArgs {
            metrics_addr: addr,
            namespace: None,
            no_leader_elect: true,
            lease_namespace: None,
            lease_name: "splitscope-controller".into(),
            prometheus_url: None,
            prometheus_token_file: None,
            prometheus_ca_file: None,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(args, client, shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(10), async {
            while !http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("/readyz never turned ready");
        let metrics = http_get(addr, "/metrics").await;
        for name in [
            "splitscope_reconcile_total",
            "splitscope_reconcile_duration_seconds",
            "splitscope_leader 1",
            "process_cpu_seconds_total",
        ] {
            assert!(metrics.contains(name), "missing {name}:\n{metrics}");
        }
        assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("did not stop on shutdown")
            .unwrap()
            .unwrap();
        drop(server);
    }

    #[tokio::test]
    async fn a_missing_trafficsplit_crd_is_named_with_the_fix() {
        let (client, mut handle) = mock_api::client();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/apis/splitscope.dev/v1alpha1");
            send.send_response(
                http::Response::builder()
                    .status(404)
                    .body(kube::client::Body::from(
                        br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_vec(),
                    ))
                    .unwrap(),
            );
        });
        let args = ControllerArgs {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            namespace: None,
            no_leader_elect: true,
            lease_namespace: None,
            lease_name: "splitscope-controller".into(),
            prometheus_url: None,
            prometheus_token_file: None,
            prometheus_ca_file: None,
        };
        let err = serve(args, client, CancellationToken::new()).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("TrafficSplit CRD") && msg.contains("kubectl apply --server-side -f crds/"),
            "{msg}"
        );
        server.await.unwrap();
    }

    /// A token without the one address it may go to, or an unreadable CA file, stops the
    /// controller at start, before it asks the API server anything.
    #[tokio::test]
    async fn prometheus_credentials_that_cannot_work_are_named_at_start() {
        let args = |token: Option<&str>, ca: Option<&str>| ControllerArgs {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            namespace: None,
            no_leader_elect: true,
            lease_namespace: None,
            lease_name: "splitscope-controller".into(),
            prometheus_url: ca.map(|_| "https://prometheus.example:9090".to_string()),
            prometheus_token_file: token.map(Into::into),
            prometheus_ca_file: ca.map(Into::into),
        };
        for (args, want) in [
            (
                args(Some("/var/run/token"), None),
                "--prometheus-token-file needs --prometheus-url",
            ),
            (
                args(None, Some("/nonexistent/ca.pem")),
                "--prometheus-ca-file /nonexistent/ca.pem",
            ),
        ] {
            let (client, _handle) = mock_api::client();
            let err = serve(args, client, CancellationToken::new()).await.unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{msg}");
        }
    }
}
