//! The one HTTP GET the real-kernel tests make (of the agent, the controller and Prometheus),
//! with hyper's client, which the workspace already builds for kube.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A response's status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET http://{addr}{path_and_query}`, or what went wrong (connection refused, timeout, …).
pub async fn try_get(addr: &str, path_and_query: &str) -> Result<Response, String> {
    let url = format!("http://{addr}{path_and_query}");
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?
            .to_bytes();
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {url}: no answer within 10 s"))?
}

/// `GET http://{addr}{path_and_query}`; fails the test if there is no HTTP answer.
pub async fn get(addr: &str, path_and_query: &str) -> Response {
    try_get(addr, path_and_query)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
