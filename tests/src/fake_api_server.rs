//! A small in-memory stand-in for kube-apiserver, so that the real `splitscope controller` binary
//! can run, reconcile and serve its metrics on a machine without a cluster (CI has none).
//!
//! Written by hand because nothing maintained does this from Rust: kube's `tower-test` mock is
//! scripted and in-process (the controller's own tests use it), and envtest needs a
//! kube-apiserver binary that no reachable registry ships. It implements only what a client of
//! the REST API needs for a steady state — discovery, list, get, create, delete, and patches as
//! a JSON merge of the body into the stored object (how a server-side apply of our own objects
//! ends up) — and watches that stay open without events. It does not evaluate label selectors,
//! field managers, admission or schemas: it is a harness for the binary, not a test oracle for
//! API semantics (the real-cluster tests in tests/e2e are).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A resource the fake serves: `prefix` is `/api/v1` or `/apis/<group>/<version>`.
#[derive(Debug, Clone)]
pub struct Resource {
    pub prefix: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub subresources: &'static [&'static str],
}

impl Resource {
    fn api_version(&self) -> &str {
        self.prefix
            .trim_start_matches("/apis/")
            .trim_start_matches("/api/")
    }
}

type Key = (String, String, String); // (prefix/plural, namespace, name)

#[derive(Default)]
struct Store {
    resources: Vec<Resource>,
    objects: BTreeMap<Key, Value>,
    version: u64,
    requests: Vec<String>,
}

impl Store {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn resource(&self, prefix: &str, plural: &str) -> Option<Resource> {
        self.resources
            .iter()
            .find(|r| r.prefix == prefix && r.plural == plural)
            .cloned()
    }

    /// Stores `object` as new or replaced, with server-set metadata.
    fn put(&mut self, collection: &str, namespace: &str, name: &str, mut object: Value) -> Value {
        let version = self.next_version();
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        if !namespace.is_empty() {
            meta["namespace"] = json!(namespace);
        }
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("fake-uid-{version}"));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        if meta["generation"].is_null() {
            meta["generation"] = json!(1);
        }
        meta["resourceVersion"] = json!(version);
        self.objects.insert(
            (collection.to_owned(), namespace.to_owned(), name.to_owned()),
            object.clone(),
        );
        object
    }
}

/// A running fake API server.
pub struct FakeApiServer {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Serves `resources` (discovery) holding `objects` (each with apiVersion, kind, metadata).
    pub async fn start(resources: Vec<Resource>, objects: Vec<Value>) -> std::io::Result<Self> {
        let mut store = Store {
            resources,
            ..Store::default()
        };
        for object in objects {
            let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let resource = store
                .resources
                .iter()
                .find(|r| r.api_version() == api_version && r.kind == kind)
                .cloned()
                .unwrap_or_else(|| panic!("fixture of an unserved kind {api_version} {kind}"));
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let collection = format!("{}/{}", resource.prefix, resource.plural);
            store.put(&collection, &namespace, &name, object);
        }
        let store = Arc::new(Mutex::new(store));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(store.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, store, task })
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The stored object, e.g. `object("/api/v1/services", "shop", "checkout")`.
    pub fn object(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.store)
            .objects
            .get(&(collection.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.store).requests.clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic in a handler must not hide the store from the test that reads it afterwards.
    store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// JSON merge patch (RFC 7386): objects merge key by key, null deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// A request path split into what it addresses.
struct Target {
    prefix: String,
    plural: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Result<Target, String>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("/api/v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("/apis/{group}/{version}"), rest),
        _ => return Some(Err(format!("unknown path {path}"))),
    };
    let (namespace, rest) = match rest {
        [] => return None, // discovery
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => ((*ns).to_owned(), rest),
        rest => (String::new(), rest),
    };
    let target = match rest {
        [plural] => Target {
            prefix,
            plural: (*plural).into(),
            namespace,
            name: None,
            subresource: None,
        },
        [plural, name] => Target {
            prefix,
            plural: (*plural).into(),
            namespace,
            name: Some((*name).into()),
            subresource: None,
        },
        [plural, name, sub] => Target {
            prefix,
            plural: (*plural).into(),
            namespace,
            name: Some((*name).into()),
            subresource: Some((*sub).into()),
        },
        _ => return Some(Err(format!("unknown path {path}"))),
    };
    Some(Ok(target))
}

async fn handle(State(store): State<Arc<Mutex<Store>>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    lock(&store).requests.push(format!("{method} {path}?{query}"));

    let target = match parse_path(&path) {
        None => return discovery(&lock(&store), &path),
        Some(Err(e)) => return status(StatusCode::NOT_FOUND, "NotFound", e),
        Some(Ok(t)) => t,
    };
    let mut store = lock(&store);
    let Some(resource) = store.resource(&target.prefix, &target.plural) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    };
    let collection = format!("{}/{}", resource.prefix, resource.plural);
    let key = |name: &str| (collection.clone(), target.namespace.clone(), name.to_owned());

    match (method, target.name.as_deref()) {
        (Method::GET, None) if query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") => {
            drop(store);
            // Open and silent: the client sees no changes until it gives up and re-lists.
            let body = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        (Method::GET, None) => {
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|((c, ns, _), _)| {
                    *c == collection && (target.namespace.is_empty() || *ns == target.namespace)
                })
                .map(|(_, v)| v.clone())
                .collect();
            let version = store.version.to_string();
            ok_json(
                StatusCode::OK,
                &json!({
                    "apiVersion": resource.api_version(),
                    "kind": format!("{}List", resource.kind),
                    "metadata": {"resourceVersion": version},
                    "items": items,
                }),
            )
        }
        (Method::GET, Some(name)) => match store.objects.get(&key(name)) {
            Some(object) => ok_json(StatusCode::OK, object),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{name}\" not found", resource.plural),
            ),
        },
        (Method::POST, None) => {
            let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON".into());
            };
            let name = match object["metadata"]["name"].as_str() {
                Some(n) => n.to_owned(),
                None => format!(
                    "{}{}",
                    object["metadata"]["generateName"].as_str().unwrap_or("fake-"),
                    store.version + 1
                ),
            };
            if store.objects.contains_key(&key(&name)) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("\"{name}\" already exists"),
                );
            }
            let stored = store.put(&collection, &target.namespace, &name, object);
            ok_json(StatusCode::CREATED, &stored)
        }
        (Method::PATCH, Some(name)) => {
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON".into());
            };
            if !patch.is_object() {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "the fake API server merges object patches only (no JSON patch)".into(),
                );
            }
            let existing = store.objects.get(&key(name)).cloned();
            let object = match (existing, target.subresource.as_deref()) {
                (Some(mut object), Some("status")) => {
                    merge(&mut object["status"], &patch["status"]);
                    object
                }
                (Some(mut object), _) => {
                    merge(&mut object, &patch);
                    object
                }
                (None, None) => patch, // an apply that creates
                (None, Some(_)) => {
                    return status(StatusCode::NOT_FOUND, "NotFound", format!("\"{name}\" not found"));
                }
            };
            let stored = store.put(&collection, &target.namespace, name, object);
            ok_json(StatusCode::OK, &stored)
        }
        (Method::DELETE, Some(name)) => match store.objects.remove(&key(name)) {
            Some(_) => ok_json(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            None => status(StatusCode::NOT_FOUND, "NotFound", format!("\"{name}\" not found")),
        },
        (method, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path} is not served by the fake API server"),
        ),
    }
}

/// `GET /api/v1` or `/apis/<group>/<version>`: the APIResourceList of that group version.
fn discovery(store: &Store, path: &str) -> Response {
    let prefix = path.trim_end_matches('/');
    let served: Vec<&Resource> = store.resources.iter().filter(|r| r.prefix == prefix).collect();
    if served.is_empty() {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("{path} is not served"));
    }
    let mut resources = Vec::new();
    for r in &served {
        let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
        resources.push(json!({"name": r.plural, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}));
        for sub in r.subresources {
            resources.push(json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let group_version = served[0].api_version().to_owned();
    ok_json(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge(
            &mut target,
            &json!({"b": {"c": null, "x": 4}, "e": [2, 3], "f": "g"}),
        );
        assert_eq!(
            target,
            json!({"a": 1, "b": {"d": 3, "x": 4}, "e": [2, 3], "f": "g"})
        );
    }

    #[test]
    fn paths_name_collection_object_and_subresource() {
        let t = parse_path("/apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.prefix.as_str(),
                t.plural.as_str(),
                t.namespace.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (
                "/apis/splitscope.dev/v1alpha1",
                "trafficsplits",
                "shop",
                Some("checkout"),
                Some("status")
            )
        );
        let t = parse_path("/api/v1/services").unwrap().unwrap();
        assert_eq!(
            (t.plural.as_str(), t.namespace.as_str(), t.name),
            ("services", "", None)
        );
        assert!(parse_path("/apis/discovery.k8s.io/v1").is_none(), "discovery");
        assert!(parse_path("/metrics").unwrap().is_err());
    }
}
