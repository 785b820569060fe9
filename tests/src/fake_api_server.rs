//! A small in-memory stand-in for kube-apiserver, so that the real `splitscope controller` binary
//! can run, reconcile and serve its metrics on a machine without a cluster (CI has none).
//!
//! Written by hand because nothing maintained does this from Rust: kube's `tower-test` mock is
//! scripted and in-process (the controller's own tests use it), and envtest needs a
//! kube-apiserver binary that no reachable registry ships. It implements what a controller needs
//! to make progress over time, with the API server's semantics where the controller relies on
//! them:
//! - discovery, list, get, create, delete;
//! - watches from a resourceVersion that replay every later change and then stream live ones
//!   (so a controller sees its own status writes, as on a real server);
//! - patches: a server-side apply of `/status` replaces the status (our field manager owns all
//!   of it, so SSA drops what it no longer sends); other patches merge the body into the object
//!   (how an apply of our own objects ends up); the main resource ignores `status` and the
//!   `/status` subresource ignores everything else; a spec change bumps `metadata.generation`;
//! - optimistic concurrency: a patch carrying `metadata.resourceVersion` fails with 409 Conflict
//!   when the object has changed since.
//!
//! It does not evaluate label selectors, field managers beyond that, admission or schemas: it is
//! a harness for the binary, not a test oracle for API semantics (the real-cluster tests in
//! tests/e2e are).

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

/// One change, as a watch reports it.
#[derive(Clone)]
struct Change {
    version: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

struct Store {
    resources: Vec<Resource>,
    objects: BTreeMap<Key, Value>,
    version: u64,
    requests: Vec<String>,
    /// Every change, for watches that start from an older resourceVersion.
    changes: Vec<Change>,
    /// Wakes the open watches after a change.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            resources: Vec::new(),
            objects: BTreeMap::new(),
            version: 0,
            requests: Vec::new(),
            changes: Vec::new(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Store {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// (collection, namespace, name) of a fixture object; panics on a kind not served.
    fn address(&self, object: &Value) -> Key {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = self
            .resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .unwrap_or_else(|| panic!("fixture of an unserved kind {api_version} {kind}"));
        (
            format!("{}/{}", resource.prefix, resource.plural),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        )
    }

    fn resource(&self, prefix: &str, plural: &str) -> Option<Resource> {
        self.resources
            .iter()
            .find(|r| r.prefix == prefix && r.plural == plural)
            .cloned()
    }

    fn record(&mut self, collection: &str, namespace: &str, kind: &'static str, object: Value) {
        self.changes.push(Change {
            version: self.version,
            collection: collection.to_owned(),
            namespace: namespace.to_owned(),
            kind,
            object,
        });
        self.changed.send_replace(self.version);
    }

    /// Stores `object` as new or replaced, with server-set metadata.
    fn put(&mut self, collection: &str, namespace: &str, name: &str, mut object: Value) -> Value {
        let key = (collection.to_owned(), namespace.to_owned(), name.to_owned());
        let existed = self.objects.contains_key(&key);
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
        self.objects.insert(key, object.clone());
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        self.record(collection, namespace, kind, object.clone());
        object
    }

    fn remove(&mut self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (collection.to_owned(), namespace.to_owned(), name.to_owned());
        let mut object = self.objects.remove(&key)?;
        let version = self.next_version();
        object["metadata"]["resourceVersion"] = json!(version);
        self.record(collection, namespace, "DELETED", object.clone());
        Some(object)
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
            let (collection, namespace, name) = store.address(&object);
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

    /// Creates or replaces an object as a client would (a watch sees it), e.g. a test moving
    /// an EndpointSlice. `object` carries apiVersion, kind and metadata.
    pub fn put(&self, object: Value) {
        let mut store = lock(&self.store);
        let (collection, namespace, name) = store.address(&object);
        store.put(&collection, &namespace, &name, object);
    }

    /// Every stored object of a collection, e.g. `objects("/apis/events.k8s.io/v1/events")`.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        lock(&self.store)
            .objects
            .iter()
            .filter(|((c, _, _), _)| c == collection)
            .map(|(_, v)| v.clone())
            .collect()
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

/// The value of `key` in a query string.
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// A watch of `collection` (in `namespace`, or all when empty) from `since`: every later
/// change, then live ones, as JSON lines, until the client goes away.
fn watch_stream(
    store: Arc<Mutex<Store>>,
    collection: String,
    namespace: String,
    since: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let changed = lock(&store).changed.subscribe();
    futures::stream::unfold((store, changed, since), move |(store, mut changed, mut seen)| {
        let (collection, namespace) = (collection.clone(), namespace.clone());
        async move {
            loop {
                let batch: Vec<Change> = lock(&store)
                    .changes
                    .iter()
                    .filter(|c| {
                        c.version > seen
                            && c.collection == collection
                            && (namespace.is_empty() || c.namespace == namespace)
                    })
                    .cloned()
                    .collect();
                if let Some(last) = batch.last() {
                    seen = last.version;
                    let mut lines = String::new();
                    for c in batch {
                        lines.push_str(&json!({"type": c.kind, "object": c.object}).to_string());
                        lines.push('\n');
                    }
                    return Some((Ok(Bytes::from(lines)), (store, changed, seen)));
                }
                // Nothing new for this watch: skip every change seen so far, wait for more.
                seen = seen.max(*changed.borrow_and_update());
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        }
    })
}

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    lock(&store).requests.push(format!("{method} {path}?{query}"));

    match path.trim_end_matches('/') {
        // The roots of discovery, as kubectl reads them before any request.
        "/api" => {
            return ok_json(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            );
        }
        "/apis" => return ok_json(StatusCode::OK, &group_list(&lock(&store))),
        // What a client asks first to see whether a cluster answers (the agent does).
        "/version" => {
            return ok_json(
                StatusCode::OK,
                &json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake", "platform": "linux/amd64"}),
            );
        }
        _ => {}
    }
    let target = match parse_path(&path) {
        None => return discovery(&lock(&store), &path),
        Some(Err(e)) => return status(StatusCode::NOT_FOUND, "NotFound", e),
        Some(Ok(t)) => t,
    };
    let shared = store.clone();
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
            // No resourceVersion (or "0"): from now on, as the API server's "any" semantics allow.
            let since = query_param(&query, "resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(store.version);
            drop(store);
            let stream = watch_stream(shared, collection, target.namespace.clone(), since);
            let body = Body::from_stream(stream);
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
            if let (Some(current), Some(wanted)) = (&existing, patch["metadata"]["resourceVersion"].as_str())
                && current["metadata"]["resourceVersion"].as_str() != Some(wanted)
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        resource.plural
                    ),
                );
            }
            let apply = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/apply-patch"));
            let object = match (existing, target.subresource.as_deref()) {
                (Some(mut object), Some("status")) => {
                    if apply {
                        object["status"] = patch["status"].clone();
                    } else {
                        merge(&mut object["status"], &patch["status"]);
                    }
                    object
                }
                (Some(mut object), _) => {
                    let before_spec = object["spec"].clone();
                    let before_status = object.get("status").cloned();
                    let mut patch = patch;
                    if let Some(p) = patch.as_object_mut() {
                        p.remove("status");
                    }
                    merge(&mut object, &patch);
                    match before_status {
                        Some(s) => object["status"] = s,
                        None => {
                            if let Some(o) = object.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                    if object["spec"] != before_spec {
                        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                        object["metadata"]["generation"] = json!(generation + 1);
                    }
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
        (Method::DELETE, Some(name)) => match store.remove(&collection, &target.namespace, name) {
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

/// `GET /apis`: every served group (one version each).
fn group_list(store: &Store) -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for r in &store.resources {
        let Some(group_version) = r.prefix.strip_prefix("/apis/") else {
            continue;
        };
        let Some((group, version)) = group_version.split_once('/') else {
            continue;
        };
        if groups.iter().any(|g| g["name"] == group) {
            continue;
        }
        let v = json!({"groupVersion": group_version, "version": version});
        groups.push(json!({"name": group, "versions": [v.clone()], "preferredVersion": v}));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
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

    fn config_map(name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": data})
    }

    fn resources() -> Vec<Resource> {
        vec![
            Resource {
                prefix: "/api/v1",
                plural: "configmaps",
                kind: "ConfigMap",
                namespaced: true,
                subresources: &[],
            },
            Resource {
                prefix: "/apis/splitscope.dev/v1alpha1",
                plural: "trafficsplits",
                kind: "TrafficSplit",
                namespaced: true,
                subresources: &["status"],
            },
        ]
    }

    async fn client(server: &FakeApiServer) -> (kube::Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = server.write_kubeconfig(dir.path()).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        (kube::Client::try_from(config).unwrap(), dir)
    }

    /// A kube watcher sees the objects listed and then every later change, as on a real server.
    #[tokio::test]
    async fn watches_replay_and_stream_changes() {
        use futures::StreamExt;
        use kube::runtime::watcher;

        let server = FakeApiServer::start(resources(), vec![config_map("a", json!({"k": "1"}))])
            .await
            .unwrap();
        let (client, _dir) = client(&server).await;
        let api: kube::Api<kube::core::DynamicObject> = kube::Api::namespaced_with(
            client,
            "shop",
            &kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        );
        let mut events = watcher(api, watcher::Config::default()).boxed();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut changed = false;
        while seen.len() < 3 {
            let event = tokio::time::timeout_at(deadline, events.next())
                .await
                .expect("the watch went silent")
                .unwrap()
                .unwrap();
            match event {
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                    seen.push(format!("{}={}", o.metadata.name.unwrap(), o.data["data"]["k"]));
                }
                watcher::Event::Delete(o) => seen.push(format!("-{}", o.metadata.name.unwrap())),
                watcher::Event::InitDone if !changed => {
                    changed = true;
                    server.put(config_map("a", json!({"k": "2"})));
                    server.put(config_map("b", json!({"k": "3"})));
                }
                _ => {}
            }
        }
        assert_eq!(seen, ["a=\"1\"", "a=\"2\"", "b=\"3\""]);
    }

    /// Optimistic concurrency, status subresource and generation, as the API server does them.
    #[tokio::test]
    async fn patches_honour_resource_version_status_and_generation() {
        use kube::api::{Patch, PatchParams};

        let ts = json!({
            "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"service": "checkout"},
            "status": {"phase": "Ready", "rollout": {"phase": "Progressing"}},
        });
        let server = FakeApiServer::start(resources(), vec![ts]).await.unwrap();
        let (client, _dir) = client(&server).await;
        let resource = kube::core::ApiResource {
            group: "splitscope.dev".into(),
            version: "v1alpha1".into(),
            api_version: "splitscope.dev/v1alpha1".into(),
            kind: "TrafficSplit".into(),
            plural: "trafficsplits".into(),
        };
        let api: kube::Api<kube::core::DynamicObject> = kube::Api::namespaced_with(client, "shop", &resource);
        let current = api.get("checkout").await.unwrap();
        let version = current.metadata.resource_version.clone().unwrap();

        // A server-side apply of /status replaces it: `rollout` goes.
        let apply = PatchParams::apply("splitscope").force();
        let body = json!({"apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
                          "metadata": {"name": "checkout", "resourceVersion": version},
                          "status": {"phase": "Pending"}});
        let after = api
            .patch_status("checkout", &apply, &Patch::Apply(&body))
            .await
            .unwrap();
        assert_eq!(after.data["status"], json!({"phase": "Pending"}));
        assert_eq!(after.data["spec"], json!({"service": "checkout"}));

        // The same precondition again: the object moved on, 409.
        let err = api
            .patch_status("checkout", &apply, &Patch::Apply(&body))
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err}");

        // The main resource ignores status; a spec change bumps the generation.
        let merge = json!({"spec": {"service": "cart"}, "status": {"phase": "Ready"}});
        let after = api
            .patch("checkout", &PatchParams::default(), &Patch::Merge(&merge))
            .await
            .unwrap();
        assert_eq!(after.data["status"], json!({"phase": "Pending"}));
        assert_eq!(after.metadata.generation, Some(2));
        let annotate = json!({"metadata": {"annotations": {"a": "b"}}});
        let after = api
            .patch("checkout", &PatchParams::default(), &Patch::Merge(&annotate))
            .await
            .unwrap();
        assert_eq!(
            after.metadata.generation,
            Some(2),
            "metadata changes keep the generation"
        );
    }
}
