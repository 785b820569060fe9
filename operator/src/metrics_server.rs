//! The HTTP server both programs expose: `/metrics` (Prometheus text format from a registry),
//! `/healthz` (the process is alive) and `/readyz` (the process has what it needs to serve,
//! e.g. the controller's caches are synced).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Readiness flag flipped by the program once it can do its job. A watch channel rather than an
/// atomic so that a waiter is woken by the change instead of polling for it.
#[derive(Debug)]
pub struct Readiness(tokio::sync::watch::Sender<bool>);

impl Default for Readiness {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(false))
    }
}

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.send_replace(ready);
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the flag is (or turns) ready (tests wait on it instead of polling).
    #[cfg(test)]
    pub async fn ready(&self) {
        let mut ready = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = ready.wait_for(|r| *r).await;
    }
}

/// `0.0.0.0` on the same port, when binding the IPv6 unspecified address failed because the
/// kernel has no IPv6 (booted with ipv6.disable=1, or built without it).
fn ipv4_fallback(addr: SocketAddr, err: &std::io::Error) -> Option<SocketAddr> {
    let no_ipv6 = matches!(err.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL));
    (addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) && no_ipv6)
        .then(|| SocketAddr::from(([0, 0, 0, 0], addr.port())))
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Arc<Readiness>,
}

/// A bound, not yet serving, metrics server. Binding first lets the caller report a busy port
/// before it starts anything else, and lets tests bind port 0 and learn the real address.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr`. The default, `[::]`, takes IPv6 and IPv4 connections alike (Linux's
    /// sockets are dual-stack unless net.ipv6.bindv6only is set), so kubelet's probes and the
    /// scrapes reach it on single-stack IPv6 clusters too; on a kernel without IPv6 it binds
    /// `0.0.0.0` instead.
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(err) => match ipv4_fallback(addr, &err) {
                Some(v4) => {
                    tracing::info!(%addr, error = %err, "no IPv6 here: serving on {v4} instead");
                    TcpListener::bind(v4)
                        .await
                        .map_err(|source| ServeError::Bind { addr: v4, source })?
                }
                None => return Err(ServeError::Bind { addr, source: err }),
            },
        };
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(
        self,
        registry: Registry,
        readiness: Arc<Readiness>,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(AppState { registry, readiness });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(ServeError::Serve)
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            format!("encoding metrics failed: {err}\n").into_bytes(),
        ),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The crate's one HTTP client for tests: a plain GET over a real socket, so the tests exercise
/// what a kubelet probe or a Prometheus scrape sees.
#[cfg(test)]
pub(crate) mod test_http {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The whole response (status line, headers, body); empty while nothing listens on `addr`.
    pub async fn get(addr: SocketAddr, path: &str) -> String {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            return String::new();
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_http::get;
    use super::*;
    use prometheus::IntCounter;

    #[tokio::test]
    async fn readiness_wakes_its_waiters() {
        let readiness = Arc::new(Readiness::default());
        let waiter = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        readiness.set_ready(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was not woken")
            .unwrap();
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_over_http() {
        let registry = Registry::new();
        let counter = IntCounter::new("splitscope_test_total", "test counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);

        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let readiness = Arc::new(Readiness::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(registry, readiness.clone(), shutdown.clone()));

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("splitscope_test_total 3"), "{metrics}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        readiness.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    /// The default address, `[::]`, answers over IPv4 and IPv6 alike (where this kernel has
    /// IPv6 at all; without it the bind falls back to IPv4, which the next test covers).
    #[tokio::test]
    async fn the_unspecified_ipv6_address_serves_ipv4_and_ipv6() {
        let server = MetricsServer::bind("[::]:0".parse().unwrap()).await.unwrap();
        let port = server.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let readiness = Arc::new(Readiness::default());
        let task = tokio::spawn(server.serve(Registry::new(), readiness, shutdown.clone()));
        let v4 = get(SocketAddr::from(([127, 0, 0, 1], port)), "/healthz").await;
        assert!(v4.starts_with("HTTP/1.1 200"), "over IPv4: {v4:?}");
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let v6 = get(
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                "/healthz",
            )
            .await;
            assert!(v6.starts_with("HTTP/1.1 200"), "over IPv6: {v6:?}");
        } else {
            eprintln!("no IPv6 loopback on this machine: only the IPv4 half is checked");
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn without_ipv6_the_unspecified_address_falls_back_to_ipv4() {
        let no_ipv6 = std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
        assert_eq!(
            ipv4_fallback("[::]:9102".parse().unwrap(), &no_ipv6),
            Some("0.0.0.0:9102".parse().unwrap())
        );
        // An address asked for by name is never swapped, nor is a busy port.
        assert_eq!(ipv4_fallback("[::1]:9102".parse().unwrap(), &no_ipv6), None);
        let busy = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(ipv4_fallback("[::]:9102".parse().unwrap(), &busy), None);
    }

    #[tokio::test]
    async fn busy_port_is_named_in_the_error() {
        let first = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = MetricsServer::bind(addr).await.err().unwrap();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
