//! A Prometheus HTTP API stand-in for tests: `POST /api/v1/query` on a free loopback port,
//! answered by the test's own handler, usually with [`vector`].

/// Serves `answer` at `/api/v1/query`; returns the base URL.
pub async fn serve<H, T>(answer: H) -> String
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let app = axum::Router::new().route("/api/v1/query", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// An instant query's answer: one series with `value` (as Prometheus writes it), or none.
pub fn vector(value: Option<&str>) -> axum::Json<serde_json::Value> {
    let result = match value {
        Some(v) => serde_json::json!([{"metric": {}, "value": [1_700_000_000.0, v]}]),
        None => serde_json::json!([]),
    };
    axum::Json(serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
}
