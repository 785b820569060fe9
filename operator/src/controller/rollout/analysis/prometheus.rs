//! Instant queries against the Prometheus HTTP API (`POST /api/v1/query`, the query form-encoded
//! in the body: the built-in query names every pod twice, and a long pod list in a URL can pass
//! a proxy's URL limit; Prometheus, Thanos and Mimir all take the form).
//!
//! Built on hyper-util's client with hyper-rustls, both already in the build through kube: the
//! Prometheus client crates pull reqwest with another TLS stack (aws-lc), and one POST with a
//! JSON answer needs nothing they add.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// How long one query may take before it counts as an error.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (a one-number query answers in well under a kilobyte).
const MAX_BODY: usize = 1 << 20;

/// What an instant query returned.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// An instant vector: one value per series (labels rendered as `{a="b"}` for messages).
    Vector(Vec<(String, f64)>),
    Scalar(f64),
    /// A range vector or a string: not one number.
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0:?} is not a Prometheus URL (http:// or https://)")]
    BadUrl(String),
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("Prometheus refused the query ({error_type}): {error}")]
    Refused { error_type: String, error: String },
    #[error("Prometheus at {url} answered HTTP {status}: {body}")]
    Http { url: String, status: u16, body: String },
    #[error("Prometheus at {url} sent an answer that is not its API's JSON: {reason}")]
    Malformed { url: String, reason: String },
    #[error("cannot read the Prometheus bearer token from {path}: {reason}")]
    Token { path: String, reason: String },
    /// A partial answer (Thanos, Cortex and Mimir warn when a store did not answer): a value
    /// from part of the data must not promote or roll back anything.
    #[error("Prometheus answered with warnings, so the value may rest on part of the data: {}", .0.join("; "))]
    Warnings(Vec<String>),
}

/// A client for any number of Prometheus servers (the address comes per query: each rollout
/// may name its own).
#[derive(Clone, Debug)]
pub struct Prometheus {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The controller's own Prometheus (`--prometheus-url`) and the file its bearer token is
    /// read from: the token goes to that address only, never to one a TrafficSplit names.
    token_for: Option<(String, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--prometheus-ca-file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

impl Prometheus {
    /// A client trusting the system's root certificates for https, and sending no token.
    pub fn new() -> Result<Self, SetupError> {
        Self::configured(None, None)
    }

    /// A client trusting the system's roots and the PEM certificates in `ca_file`, sending the
    /// bearer token in `token.1` (read at every query) to the address `token.0`.
    pub fn configured(ca_file: Option<&Path>, token: Option<(String, PathBuf)>) -> Result<Self, SetupError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let shown = path.display().to_string();
            let ca_error = |reason: String| SetupError::CaFile {
                path: shown.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ca_error(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(ca_error("no certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
        } else if added == 0 {
            tracing::warn!("no system root certificates: an https Prometheus needs --prometheus-ca-file");
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            token_for: token.map(|(url, path)| (base_url(&url).to_string(), path)),
        })
    }

    /// The bearer token to send to `base`, read now (a projected token rotates).
    fn token(&self, base: &str) -> Result<Option<String>, QueryError> {
        let Some((url, path)) = &self.token_for else {
            return Ok(None);
        };
        if base_url(base) != url {
            return Ok(None);
        }
        let token = std::fs::read_to_string(path).map_err(|e| QueryError::Token {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(QueryError::Token {
                path: path.display().to_string(),
                reason: "the file is empty".into(),
            });
        }
        Ok(Some(token.to_string()))
    }

    /// Runs `promql` as an instant query at the server's current time.
    pub async fn query(&self, base: &str, promql: &str) -> Result<QueryResult, QueryError> {
        let url = query_url(base)?;
        let uri: hyper::Uri = url.parse().map_err(|_| QueryError::BadUrl(base.to_string()))?;
        let shown = base_url(base).to_string();
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let mut post = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = self.token(base)? {
            post = post.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let post = post
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| QueryError::BadUrl(base.to_string()))?;
        let request = async {
            let response = self
                .client
                .request(post)
                .await
                .map_err(|e| QueryError::Unreachable {
                    url: shown.clone(),
                    // With its causes: hyper's own message is only "client error".
                    reason: format!("{:#}", anyhow::Error::new(e)),
                })?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| QueryError::Unreachable {
                    url: shown.clone(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, QueryError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(QUERY_TIMEOUT, request)
                .await
                .map_err(|_| QueryError::Timeout {
                    url: shown.clone(),
                    timeout: QUERY_TIMEOUT,
                })??;
        parse_answer(&shown, status, &body)
    }
}

/// A Prometheus address as queries, messages and the token's address compare it.
fn base_url(base: &str) -> &str {
    base.trim().trim_end_matches('/')
}

/// `<base>/api/v1/query`, refusing anything but http(s).
pub fn query_url(base: &str) -> Result<String, QueryError> {
    let base = base_url(base);
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.contains(char::is_whitespace) {
        return Err(QueryError::BadUrl(base.to_string()));
    }
    Ok(format!("{base}/api/v1/query"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

/// Reads the API's JSON (also its error answers, which come with 4xx/5xx codes).
pub fn parse_answer(url: &str, status: u16, body: &[u8]) -> Result<QueryResult, QueryError> {
    let malformed = |reason: String| QueryError::Malformed {
        url: url.to_string(),
        reason,
    };
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(_) if !(200..300).contains(&status) => {
            return Err(QueryError::Http {
                url: url.to_string(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            });
        }
        Err(e) => return Err(malformed(e.to_string())),
    };
    if answer.status != "success" {
        return Err(QueryError::Refused {
            error_type: answer.error_type.unwrap_or_else(|| format!("HTTP {status}")),
            error: answer.error.unwrap_or_default(),
        });
    }
    if !answer.warnings.is_empty() {
        return Err(QueryError::Warnings(answer.warnings));
    }
    let data = answer.data.ok_or_else(|| malformed("no data".into()))?;
    match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<Sample> =
                serde_json::from_value(data.result).map_err(|e| malformed(e.to_string()))?;
            Ok(QueryResult::Vector(
                samples
                    .into_iter()
                    .map(|s| (labels(&s.metric), parse_value(&s.value.1)))
                    .collect(),
            ))
        }
        "scalar" => {
            let (_, v): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| malformed(e.to_string()))?;
            Ok(QueryResult::Scalar(parse_value(&v)))
        }
        other => Ok(QueryResult::Other(other.to_string())),
    }
}

/// Prometheus writes values as strings, `NaN`, `+Inf` and `-Inf` included.
fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => v.parse().unwrap_or(f64::NAN),
    }
}

fn labels(metric: &std::collections::BTreeMap<String, String>) -> String {
    let parts: Vec<String> = metric.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_query_url() {
        assert_eq!(
            query_url("http://prometheus.monitoring:9090/").unwrap(),
            "http://prometheus.monitoring:9090/api/v1/query"
        );
        assert!(matches!(query_url("prometheus:9090"), Err(QueryError::BadUrl(_))));
        assert!(matches!(query_url("ftp://x"), Err(QueryError::BadUrl(_))));
    }

    #[test]
    fn an_answer_with_warnings_is_an_error_naming_them() {
        let partial = br#"{"status":"success","warnings":["store 10.0.0.7:10901 did not answer"],
            "data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.01"]}]}}"#;
        let err = parse_answer("u", 200, partial).unwrap_err();
        assert!(matches!(err, QueryError::Warnings(_)), "{err}");
        assert!(
            err.to_string().contains("store 10.0.0.7:10901 did not answer"),
            "{err}"
        );
    }

    #[test]
    fn reads_vectors_scalars_and_errors() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000.1,"0.25"]},
            {"metric":{},"value":[1700000000.1,"NaN"]},
            {"metric":{},"value":[1700000000.1,"+Inf"]}]}}"#;
        let QueryResult::Vector(v) = parse_answer("u", 200, vector).unwrap() else {
            panic!()
        };
        assert_eq!(v[0], ("{pod=\"a\"}".to_string(), 0.25));
        assert!(v[1].1.is_nan());
        assert_eq!(v[2].1, f64::INFINITY);

        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(parse_answer("u", 200, scalar).unwrap(), QueryResult::Scalar(3.0));

        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(
            parse_answer("u", 200, matrix).unwrap(),
            QueryResult::Other("matrix".into())
        );

        let refused = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let err = parse_answer("u", 400, refused).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Prometheus refused the query (bad_data): parse error at char 4"
        );

        let err = parse_answer("http://p:9090", 502, b"<html>Bad Gateway</html>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Prometheus at http://p:9090 answered HTTP 502: <html>Bad Gateway</html>"
        );
        assert!(matches!(
            parse_answer("u", 200, b"not json").unwrap_err(),
            QueryError::Malformed { .. }
        ));
    }

    /// A Prometheus stand-in answering, as the one number, whether the query came with
    /// `Authorization: Bearer s3cret` (1) or without any Authorization (0).
    async fn auth_echo() -> String {
        use crate::controller::testing::prometheus_stand_in;
        prometheus_stand_in::serve(|headers: axum::http::HeaderMap| async move {
            let value = match headers
                .get("authorization")
                .map(|v| v.to_str().unwrap_or_default())
            {
                None => "0",
                Some("Bearer s3cret") => "1",
                Some(_) => "-1",
            };
            prometheus_stand_in::vector(Some(value))
        })
        .await
    }

    fn one(result: Result<QueryResult, QueryError>) -> f64 {
        match result.unwrap() {
            QueryResult::Vector(v) => v[0].1,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_bearer_token_goes_to_the_controllers_prometheus_only_read_at_each_query() {
        let (ours, theirs) = (auth_echo().await, auth_echo().await);
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let prometheus = Prometheus::configured(None, Some((format!("{ours}/"), token.clone()))).unwrap();
        assert_eq!(one(prometheus.query(&ours, "up").await), 1.0);
        // An address a TrafficSplit names gets no token.
        assert_eq!(one(prometheus.query(&theirs, "up").await), 0.0);
        // A rotated token is read at the next query; a missing one is named.
        std::fs::write(&token, "other").unwrap();
        assert_eq!(one(prometheus.query(&ours, "up").await), -1.0);
        std::fs::remove_file(&token).unwrap();
        let err = prometheus.query(&ours, "up").await.unwrap_err();
        assert!(matches!(err, QueryError::Token { .. }), "{err}");
        assert!(err.to_string().contains(&token.display().to_string()), "{err}");
    }

    #[test]
    fn a_ca_file_is_read_and_a_bad_one_named() {
        const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBjjCCATWgAwIBAgIURXZC6PuNwYeM1wxhPUEMbodgNWswCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSc3BsaXRzY29wZS10ZXN0LWNhMB4XDTI2MTIwMTIzNTgxMloX
DTM2MTEyODIzNTgxMlowHTEbMBkGA1UEAwwSc3BsaXRzY29wZS10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEFVniWxA6xVqrlL6itbDv+6OokyXl74hk
WrZ+UEVNLtxXj0G7OMBfHt5pVTSVgfcBQnTcXyjfqU82KzeXMPKYeKNTMFEwHQYD
VR0OBBYEFPH05/1YdsgZi4uJOPNX96I4JowKMB8GA1UdIwQYMBaAFPH05/1YdsgZ
i4uJOPNX96I4JowKMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIg
bwMeuc37uxeHNNvR6ZKJi2On41VIEVE8NWCYWYi0oK4CICflUgvTFO+ZylVgNlcS
1NoSMD0YYyaIxd4APSBrwYpF
-----END CERTIFICATE-----
";
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, CA).unwrap();
        Prometheus::configured(Some(&good), None).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Prometheus::configured(Some(&empty), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = Prometheus::configured(Some(&missing), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let prometheus = Prometheus::new().unwrap();
        let err = prometheus
            .query(&format!("http://127.0.0.1:{port}"), "up")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot reach Prometheus at http://127.0.0.1:{port}:")),
            "{msg}"
        );
    }
}
