//! A scripted, mocked Kubernetes API server for reconciler tests (kube's `tower_test` pattern,
//! as kube-rs/controller-rs uses it).
//!
//! A script is the exact, ordered list of requests the reconciler must send, each with a check on
//! its query/body and the reply. Event creations (the Recorder's POSTs) may arrive at any point
//! and are recorded for the test to inspect. EVERY request, Events included, is checked against
//! the program's RBAC rules (`crate::rbac`): a request the ClusterRole/Role would forbid fails
//! the test. A missing or unexpected request fails it too, after a timeout rather than a hang.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use crate::rbac::{AGENT_CLUSTER_RULES, CONTROLLER_CLUSTER_RULES, CONTROLLER_NAMESPACE_RULES, Rule, granted};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How long the server waits for the next request before declaring it missing.
pub const WAIT: Duration = Duration::from_secs(5);

/// A client talking to a fresh mock, and the mock's handle.
pub fn client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    pub fn query_has(&self, pair: &str) -> bool {
        self.query.split('&').any(|p| p == pair)
    }

    /// `METHOD path?query`
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

type Check = Box<dyn Fn(&Seen) + Send>;

/// One expected request and its reply.
pub struct Expect {
    method: &'static str,
    path: String,
    check: Check,
    status: u16,
    reply: Value,
    echo: bool,
}

impl Expect {
    pub fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            check: Box::new(|_| {}),
            status: 200,
            reply: json!({}),
            echo: false,
        }
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    /// Replies 200 with the request's own body (what an apply returns, near enough).
    pub fn echo(mut self) -> Self {
        self.echo = true;
        self
    }

    pub fn check(mut self, check: impl Fn(&Seen) + Send + 'static) -> Self {
        self.check = Box::new(check);
        self
    }

    pub fn reply(mut self, status: u16, body: Value) -> Self {
        self.status = status;
        self.reply = body;
        self
    }

    /// Replies 404 with a NotFound Status for `kind`/`name`.
    pub fn not_found(self) -> Self {
        let name = self.path.rsplit('/').next().unwrap_or_default().to_string();
        self.reply(
            404,
            json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{name:?} not found"), "reason": "NotFound", "code": 404,
                "details": {"name": name}
            }),
        )
    }
}

/// What the server saw once the reconciler is done.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Every request in order (Events included), as `METHOD path?query`.
    pub requests: Vec<String>,
    /// The Events' bodies, in order.
    pub events: Vec<Value>,
    /// Every request in full.
    pub seen: Vec<Seen>,
}

impl Transcript {
    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The writes (anything but GET/LIST/WATCH), Events excluded.
    pub fn writes(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| !r.starts_with("GET ") && !r.contains("/apis/events.k8s.io/"))
            .cloned()
            .collect()
    }
}

/// Serves `script` in order on `handle`; then answers nothing but Events until the client goes.
/// The transcript is owned by the serving task and returned whole when it ends: a request that
/// fails a check panics the task, and the test that awaits it sees that panic.
pub fn serve(mut handle: Handle, script: Vec<Expect>) -> tokio::task::JoinHandle<Transcript> {
    tokio::spawn(async move {
        let mut transcript = Transcript::default();
        let mut script = script.into_iter();
        let mut next = script.next();
        loop {
            let request = match tokio::time::timeout(WAIT, handle.next_request()).await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => match &next {
                    Some(e) => panic!(
                        "the reconciler did not send the expected {} {} within {WAIT:?}",
                        e.method, e.path
                    ),
                    None => break,
                },
            };
            let (request, send) = request;
            let seen = read(request).await;
            Grants::CONTROLLER.check(&seen);
            transcript.requests.push(seen.line());
            transcript.seen.push(seen.clone());
            let is_event = (seen.method == "POST" && seen.path.ends_with("/events"))
                || (seen.method == "PATCH" && seen.path.contains("/events/"));
            if is_event {
                transcript.events.push(seen.body.clone());
                send.send_response(response(201, seen.body.clone()));
                continue;
            }
            let Some(expected) = next.take() else {
                panic!("unexpected request after the script ended: {}", seen.line());
            };
            assert_eq!(
                (seen.method.as_str(), seen.path.as_str()),
                (expected.method, expected.path.as_str()),
                "the reconciler sent {} where the script expects {} {}",
                seen.line(),
                expected.method,
                expected.path
            );
            (expected.check)(&seen);
            let reply = if expected.echo {
                seen.body.clone()
            } else {
                expected.reply
            };
            send.send_response(response(expected.status, reply));
            next = script.next();
        }
        if let Some(e) = next {
            panic!("the reconciler stopped before sending {} {}", e.method, e.path);
        }
        transcript
    })
}

fn response(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

async fn read(request: Request<Body>) -> Seen {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}

/// What RBAC would authorize a request as.
#[derive(Debug, PartialEq, Eq)]
pub enum Authz {
    /// Discovery (`/api`, `/apis/<group>/<version>`): granted to every authenticated user by the
    /// built-in `system:discovery` ClusterRole, not by ours.
    Discovery,
    /// Resource request: api group, `resource[/subresource]`, the verbs needed.
    Resource {
        group: String,
        resource: String,
        verbs: Vec<&'static str>,
    },
}

/// Maps a request to the RBAC attributes the API server checks, as its request-info resolver
/// does: `/api/v1/...` is the core group, `/apis/<group>/<version>/...` a named group;
/// GET of a name is `get`, of a collection `list` (`watch` with `watch=true`); POST `create`;
/// PUT `update`; PATCH `patch` — and a server-side apply may create the object, which is
/// authorized as `create` too; DELETE of a name `delete`, of a collection `deletecollection`.
pub fn authz(method: &str, path: &str, query: &str, content_type: &str) -> Authz {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Authz::Discovery,
    };
    let rest: &[&str] = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [] => return Authz::Discovery,
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
    };
    let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
    let verbs = match (method, name.is_some()) {
        ("GET", true) => vec!["get"],
        ("GET", false) if watch => vec!["watch"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", _) if content_type.starts_with("application/apply-patch") && sub.is_none() => {
            vec!["patch", "create"]
        }
        ("PATCH", _) => vec!["patch"],
        ("DELETE", true) => vec!["delete"],
        ("DELETE", false) => vec!["deletecollection"],
        _ => vec!["unknown"],
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    Authz::Resource {
        group: group.to_string(),
        resource,
        verbs,
    }
}

/// The RBAC rules of one program: cluster-wide (a ClusterRole) and in its own namespace (a Role,
/// for the leader Lease).
#[derive(Debug, Clone, Copy)]
pub struct Grants {
    pub cluster: &'static [Rule],
    pub namespaced: &'static [Rule],
}

impl Grants {
    pub const CONTROLLER: Grants = Grants {
        cluster: CONTROLLER_CLUSTER_RULES,
        namespaced: CONTROLLER_NAMESPACE_RULES,
    };
    pub const AGENT: Grants = Grants {
        cluster: AGENT_CLUSTER_RULES,
        namespaced: &[],
    };

    /// Panics unless these rules grant `seen`. The Lease is granted by the namespaced Role,
    /// everything else by the ClusterRole.
    pub fn check(&self, seen: &Seen) {
        if let Authz::Resource {
            group,
            resource,
            verbs,
        } = authz(&seen.method, &seen.path, &seen.query, &seen.content_type)
        {
            let rules = if group == "coordination.k8s.io" {
                self.namespaced
            } else {
                self.cluster
            };
            for verb in verbs {
                assert!(
                    granted(rules, &group, &resource, verb),
                    "RBAC: {} needs `{verb}` on {group:?}/{resource}, which operator/src/rbac.rs does not grant",
                    seen.line()
                );
            }
        }
    }

    /// Every (group, resource, verb) the rules grant.
    pub fn all(&self) -> std::collections::BTreeSet<(String, String, String)> {
        let mut out = std::collections::BTreeSet::new();
        for rule in self.cluster.iter().chain(self.namespaced) {
            for resource in rule.resources {
                for verb in rule.verbs {
                    out.insert((rule.api_group.to_string(), resource.to_string(), verb.to_string()));
                }
            }
        }
        out
    }
}

/// Every (group, resource, verb) the requests in `seen` are authorized as.
pub fn used(seen: &[Seen]) -> std::collections::BTreeSet<(String, String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for s in seen {
        if let Authz::Resource {
            group,
            resource,
            verbs,
        } = authz(&s.method, &s.path, &s.query, &s.content_type)
        {
            for verb in verbs {
                out.insert((group.clone(), resource.clone(), verb.to_string()));
            }
        }
    }
    out
}

/// A mock that answers everything plausibly, for code whose exact request sequence is not the
/// point (the Controller's list/watch streams, the Lease manager): discovery lists every
/// resource, collections are empty, watches stay open, and Leases are kept in memory so the
/// Lease manager can take one. Every request is checked against `grants` and recorded; a test
/// waits on [`Permissive::wait_for`] for the requests it expects instead of sleeping.
pub fn serve_permissive(mut handle: Handle, grants: Grants) -> Permissive {
    let (seen_tx, seen) = tokio::sync::watch::channel(Vec::<Seen>::new());
    let task = tokio::spawn(async move {
        let mut seen_all = Vec::new();
        let mut open_watches = Vec::new();
        let mut leases: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
        let mut version = 1u64;
        while let Some((request, send)) = handle.next_request().await {
            let seen = read(request).await;
            grants.check(&seen);
            seen_all.push(seen.clone());
            seen_tx.send_modify(|all| all.push(seen.clone()));
            let parts: Vec<&str> = seen.path.trim_matches('/').split('/').collect();
            if seen.query.split('&').any(|p| p == "watch=true") {
                open_watches.push(send);
                continue;
            }
            version += 1;
            let reply = match (seen.method.as_str(), parts.as_slice()) {
                ("GET", ["apis", group, v]) => (200, discovery(group, v)),
                (_, [.., "leases", name]) | (_, [.., "leases", name, _]) => {
                    let name = name.to_string();
                    match seen.method.as_str() {
                        "GET" => match leases.get(&name) {
                            Some(l) => (200, l.clone()),
                            None => (
                                404,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                            ),
                        },
                        "PATCH" => {
                            let lease = leases.entry(name.clone()).or_insert_with(|| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": {}}));
                            if let Some(spec) = seen.body.get("spec").and_then(Value::as_object) {
                                for (k, v) in spec {
                                    lease["spec"][k] = v.clone();
                                }
                            }
                            lease["metadata"]["resourceVersion"] = json!(version.to_string());
                            (200, lease.clone())
                        }
                        _ => {
                            let mut lease = seen.body.clone();
                            lease["metadata"]["resourceVersion"] = json!(version.to_string());
                            leases.insert(name, lease.clone());
                            (201, lease)
                        }
                    }
                }
                ("POST", [.., "leases"]) => {
                    let mut lease = seen.body.clone();
                    let name = lease["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    lease["metadata"]["resourceVersion"] = json!(version.to_string());
                    leases.insert(name, lease.clone());
                    (201, lease)
                }
                ("GET", _) => (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version.to_string()}, "items": []}),
                ),
                _ => (200, seen.body.clone()),
            };
            send.send_response(response(reply.0, reply.1));
        }
        drop(open_watches);
        seen_all
    });
    Permissive { seen, task }
}

/// A running permissive mock.
pub struct Permissive {
    seen: tokio::sync::watch::Receiver<Vec<Seen>>,
    task: tokio::task::JoinHandle<Vec<Seen>>,
}

impl Permissive {
    /// Waits until the requests seen so far satisfy `done`; fails the test, listing them, when
    /// they do not within `limit`.
    pub async fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&[Seen]) -> bool) {
        let waited = tokio::time::timeout(limit, self.seen.wait_for(|seen| done(seen)))
            .await
            .is_ok_and(|r| r.is_ok());
        if !waited {
            let lines: Vec<String> = self.seen.borrow().iter().map(Seen::line).collect();
            panic!("{what} did not happen within {limit:?}; requests: {lines:#?}");
        }
    }

    /// Every request, once the client is gone (all its handles dropped). A request that failed
    /// a check panicked the server: that panic is raised here.
    pub async fn finish(self) -> Vec<Seen> {
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("the mock API server failed: {e}"),
            Err(_) => panic!("the mock API server still has a client after 10 s: a handle was not dropped"),
        }
    }
}

/// An APIResourceList naming the resources this project uses in `group`.
fn discovery(group: &str, version: &str) -> Value {
    let names: &[&str] = match group {
        "splitscope.dev" => &["trafficsplits", "trafficsplits/status"],
        "gateway.networking.k8s.io" => &["httproutes"],
        "networking.istio.io" => &["destinationrules", "virtualservices"],
        _ => &[],
    };
    let resources: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["get", "list", "watch"]}))
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(group: &str, resource: &str, verbs: &[&'static str]) -> Authz {
        Authz::Resource {
            group: group.into(),
            resource: resource.into(),
            verbs: verbs.to_vec(),
        }
    }

    #[test]
    fn maps_requests_like_the_api_server() {
        assert_eq!(
            authz("GET", "/api/v1/namespaces/shop/services/checkout", "", ""),
            resource("", "services", &["get"])
        );
        assert_eq!(
            authz("GET", "/api/v1/services", "labelSelector=x", ""),
            resource("", "services", &["list"])
        );
        assert_eq!(
            authz("GET", "/api/v1/services", "watch=true&resourceVersion=1", ""),
            resource("", "services", &["watch"])
        );
        assert_eq!(
            authz(
                "PATCH",
                "/api/v1/namespaces/shop/services/checkout",
                "fieldManager=splitscope&force=true",
                "application/apply-patch+yaml"
            ),
            resource("", "services", &["patch", "create"])
        );
        assert_eq!(
            authz(
                "PATCH",
                "/apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout/status",
                "fieldManager=splitscope&force=true",
                "application/apply-patch+yaml"
            ),
            resource("splitscope.dev", "trafficsplits/status", &["patch"])
        );
        assert_eq!(
            authz(
                "DELETE",
                "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout",
                "",
                ""
            ),
            resource("gateway.networking.k8s.io", "httproutes", &["delete"])
        );
        assert_eq!(
            authz(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                "",
                "application/json"
            ),
            resource("events.k8s.io", "events", &["create"])
        );
        assert_eq!(
            authz("GET", "/apis/gateway.networking.k8s.io/v1", "", ""),
            Authz::Discovery
        );
        assert_eq!(authz("GET", "/api", "", ""), Authz::Discovery);
    }

    #[test]
    #[should_panic(expected = "does not grant")]
    fn an_ungranted_request_fails() {
        Grants::CONTROLLER.check(&Seen {
            method: "DELETE".into(),
            path: "/apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout".into(),
            query: String::new(),
            content_type: String::new(),
            body: Value::Null,
        });
    }
}
