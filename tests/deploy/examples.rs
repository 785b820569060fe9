//! The examples: every TrafficSplit follows the API of DESIGN.md; the demo workload gives every
//! backend pods to route to; everything else parses strictly and runs restricted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

use crate::kustomize::{read_yaml_file, repo_root};
use crate::security::{check_image_pinned, restricted_violations};

// The TrafficSplit API as DESIGN.md writes it, unknown fields refused at every level.
// The lead will check the examples against the real CRD schema as well.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TrafficSplit {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    service: Option<String>,
    selector: BTreeMap<String, String>,
    ports: Vec<Port>,
    backends: Vec<Backend>,
    routing: Option<Routing>,
    deletion_policy: Option<DeletionPolicy>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Port {
    name: Option<String>,
    port: i32,
    target_port: Option<IntOrString>,
    protocol: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Backend {
    name: String,
    labels: BTreeMap<String, String>,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Routing {
    provider: Option<Provider>,
    parent_refs: Option<Vec<Value>>,
    hostnames: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
enum Provider {
    #[serde(rename = "GatewayAPI")]
    GatewayApi,
    Istio,
    None,
}

#[derive(Debug, Deserialize, PartialEq)]
enum DeletionPolicy {
    Delete,
    Orphan,
}

pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The design's validation rules; each problem names its field.
fn validate(ts: &TrafficSplit) -> Vec<String> {
    let mut out = Vec::new();
    if ts.api_version != "splitscope.dev/v1alpha1" {
        out.push(format!("apiVersion {}", ts.api_version));
    }
    if ts.kind != "TrafficSplit" {
        out.push(format!("kind {}", ts.kind));
    }
    if ts.metadata.namespace.is_none() {
        out.push("metadata.namespace is not set".to_owned());
    }
    let spec = &ts.spec;
    if spec.selector.is_empty() {
        out.push("spec.selector is empty".to_owned());
    }
    if spec.ports.is_empty() {
        out.push("spec.ports is empty".to_owned());
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            out.push(format!("spec.ports[{i}].port {}", p.port));
        }
    }
    if !(1..=16).contains(&spec.backends.len()) {
        out.push(format!(
            "spec.backends has {} entries (1..16)",
            spec.backends.len()
        ));
    }
    let mut names = BTreeSet::new();
    for (i, b) in spec.backends.iter().enumerate() {
        if !is_dns_label(&b.name) {
            out.push(format!("spec.backends[{i}].name {:?} is not a DNS label", b.name));
        }
        if !names.insert(&b.name) {
            out.push(format!("spec.backends[{i}].name {:?} is not unique", b.name));
        }
        if b.weight > 100 {
            out.push(format!("spec.backends[{i}].weight {} > 100", b.weight));
        }
    }
    let sum: u32 = spec.backends.iter().map(|b| b.weight).sum();
    if sum != 100 {
        out.push(format!("spec.backends weights sum to {sum}, not 100"));
    }
    if let Some(routing) = &spec.routing {
        let provider = routing.provider.unwrap_or(Provider::GatewayApi);
        let has_parents = routing.parent_refs.as_ref().is_some_and(|p| !p.is_empty());
        if has_parents && provider != Provider::GatewayApi {
            out.push("spec.routing.parentRefs is only for provider GatewayAPI".to_owned());
        }
    }
    out
}

fn examples() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for path in yaml_files(&repo_root().join("examples")) {
        for doc in read_yaml_file(&path) {
            out.push((path.clone(), doc));
        }
    }
    out
}

fn traffic_splits() -> Vec<(PathBuf, TrafficSplit)> {
    examples()
        .into_iter()
        .filter(|(_, doc)| doc["kind"] == "TrafficSplit")
        .map(|(path, doc)| {
            let ts = serde_path_to_error::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: at {}: {}", path.display(), e.path(), e.inner()));
            (path, ts)
        })
        .collect()
}

#[test]
fn every_example_traffic_split_follows_the_api() {
    let splits = traffic_splits();
    assert!(splits.len() >= 3, "95/5, 50/50 and Istio examples");
    for (path, ts) in &splits {
        let problems = validate(ts);
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
    }
    let providers: BTreeSet<String> = splits
        .iter()
        .map(|(_, ts)| {
            format!(
                "{:?}",
                ts.spec
                    .routing
                    .as_ref()
                    .and_then(|r| r.provider)
                    .unwrap_or(Provider::GatewayApi)
            )
        })
        .collect();
    assert!(
        providers.contains("Istio") && providers.contains("GatewayApi"),
        "{providers:?}"
    );
}

/// examples/checkout-95-5.yaml is the design's example, field for field.
#[test]
fn the_design_example_is_shipped_unchanged() {
    let (_, ts) = traffic_splits()
        .into_iter()
        .find(|(p, _)| p.ends_with("examples/checkout-95-5.yaml"))
        .expect("examples/checkout-95-5.yaml");
    assert_eq!(ts.metadata.name.as_deref(), Some("checkout"));
    assert_eq!(ts.metadata.namespace.as_deref(), Some("shop"));
    let spec = ts.spec;
    assert_eq!(spec.service.as_deref(), Some("checkout"));
    assert_eq!(spec.selector, BTreeMap::from([("app".into(), "checkout".into())]));
    assert_eq!(
        spec.ports,
        vec![Port {
            name: Some("http".into()),
            port: 80,
            target_port: Some(IntOrString::Int(8080)),
            protocol: None
        }]
    );
    let backend = |name: &str, version: &str, weight| Backend {
        name: name.into(),
        labels: BTreeMap::from([("version".into(), version.into())]),
        weight,
    };
    assert_eq!(
        spec.backends,
        vec![backend("stable", "v1", 95), backend("canary", "v2", 5)]
    );
    let routing = spec.routing.expect("routing");
    assert_eq!(routing.provider, Some(Provider::GatewayApi));
    assert_eq!(routing.parent_refs, Some(vec![]));
    assert_eq!(routing.hostnames, Some(vec![]));
    assert_eq!(spec.deletion_policy, Some(DeletionPolicy::Delete));
}

#[test]
fn api_check_rejects_bad_weights_and_names() {
    let doc = serde_json::json!({
        "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                 "backends": [{"name": "A", "labels": {}, "weight": 60}, {"name": "b", "labels": {}, "weight": 60}]}
    });
    let ts: TrafficSplit = serde_json::from_value(doc).unwrap();
    let problems = validate(&ts);
    assert!(problems.iter().any(|p| p.contains("sum to 120")), "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("backends[0].name \"A\"")),
        "{problems:?}"
    );
    let unknown = serde_json::json!({
        "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit", "metadata": {},
        "spec": {"selector": {}, "ports": [], "backends": [], "weights": []}
    });
    assert!(serde_json::from_value::<TrafficSplit>(unknown).is_err());
}

/// On kind, every backend of every example split selects pods of the demo workload, and the
/// target port is one those pods serve.
#[test]
fn demo_workload_gives_every_backend_endpoints() {
    let deployments: Vec<Deployment> = examples()
        .into_iter()
        .filter(|(_, doc)| doc["kind"] == "Deployment")
        .map(|(_, doc)| serde_json::from_value(doc).unwrap())
        .collect();
    let namespaces: BTreeSet<String> = examples()
        .into_iter()
        .filter(|(_, doc)| doc["kind"] == "Namespace")
        .map(|(_, doc)| doc["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    for (path, ts) in traffic_splits() {
        let namespace = ts.metadata.namespace.clone().unwrap();
        assert!(
            namespaces.contains(&namespace),
            "{}: no Namespace {namespace} in examples",
            path.display()
        );
        for backend in &ts.spec.backends {
            let mut wanted = ts.spec.selector.clone();
            wanted.extend(backend.labels.clone());
            let pods: Vec<&Deployment> = deployments
                .iter()
                .filter(|d| d.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .filter(|d| {
                    let labels = d
                        .spec
                        .as_ref()
                        .unwrap()
                        .template
                        .metadata
                        .as_ref()
                        .unwrap()
                        .labels
                        .clone()
                        .unwrap_or_default();
                    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .collect();
            assert!(
                !pods.is_empty(),
                "{}: backend {} selects no demo pods",
                path.display(),
                backend.name
            );
            for port in &ts.spec.ports {
                // targetPort defaults to port.
                let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
                for d in &pods {
                    let containers = &d
                        .spec
                        .as_ref()
                        .unwrap()
                        .template
                        .spec
                        .as_ref()
                        .unwrap()
                        .containers;
                    let served =
                        containers
                            .iter()
                            .flat_map(|c| c.ports.iter().flatten())
                            .any(|p| match &target {
                                IntOrString::Int(n) => p.container_port == *n,
                                IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
                            });
                    assert!(
                        served,
                        "{}: {target:?} is not a port of {:?}",
                        path.display(),
                        d.metadata.name
                    );
                }
            }
        }
    }
}

/// Everything in examples/ that is not a TrafficSplit is a plain Kubernetes object that parses
/// strictly, runs under Pod Security "restricted" and pins its images.
#[test]
fn demo_objects_parse_strictly_and_run_restricted() {
    for (path, doc) in examples() {
        if doc["kind"] == "TrafficSplit" {
            continue;
        }
        if let Err(e) = crate::strict::check(&doc) {
            panic!(
                "{}: {} {}: {e}",
                path.display(),
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
        if doc["kind"] == "Deployment" {
            let d: Deployment = serde_json::from_value(doc).unwrap();
            let pod = d.spec.unwrap().template.spec.unwrap();
            let v = restricted_violations(&pod);
            assert!(v.is_empty(), "{}: {v:?}", path.display());
            for c in &pod.containers {
                check_image_pinned(
                    &path.display().to_string(),
                    c.image.as_deref().unwrap_or_default(),
                );
            }
        }
    }
}
