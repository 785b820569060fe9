//! The examples: every TrafficSplit is one the controller accepts (the operator's own tests also
//! run them through the CRD's schema and CEL rules); the demo workload gives every backend pods
//! to route to; everything else parses strictly and runs restricted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use splitscope::controller::api::trafficsplit::{
    Backend, DeletionPolicy, Protocol, Provider, ServicePort, TrafficSplit,
};
use splitscope::controller::api::validate::validate;

use crate::kustomize::{read_yaml_file, repo_root};
use crate::security::{check_image_pinned, restricted_violations};

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
        assert!(
            ts.metadata.namespace.is_some(),
            "{}: no namespace",
            path.display()
        );
        if let Err(invalid) = validate(ts) {
            panic!("{}: {invalid}", path.display());
        }
    }
    let providers: BTreeSet<String> = splits
        .iter()
        .map(|(_, ts)| format!("{:?}", ts.spec.routing.provider))
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
    assert_eq!(spec.ports.len(), 1);
    let ServicePort {
        name,
        port,
        target_port,
        protocol,
    } = &spec.ports[0];
    assert_eq!(
        (name.as_deref(), *port, target_port, *protocol),
        (Some("http"), 80, &Some(IntOrString::Int(8080)), Protocol::Tcp)
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
    assert_eq!(spec.routing.provider, Provider::GatewayApi);
    assert!(spec.routing.parent_refs.is_empty() && spec.routing.hostnames.is_empty());
    assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
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

/// The files and documents `kubectl apply` applies for these `-f` arguments, in its order: each
/// argument in turn; a folder's files (not recursive without `-R`) sorted by name, only those
/// ending in .json, .yaml or .yml; a file's documents in file order.
fn kubectl_apply_order(args: &[&str]) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for arg in args {
        let path = repo_root().join(arg);
        let mut files = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect()
        } else {
            vec![path]
        };
        files.sort();
        for file in files {
            for doc in read_yaml_file(&file) {
                out.push((file.clone(), doc));
            }
        }
    }
    out
}

/// Which object must come before which when applied to a fresh cluster: every namespaced object
/// after its Namespace (or in a namespace every cluster has).
fn apply_order_problems(objects: &[(PathBuf, Value)]) -> Vec<String> {
    let mut namespaces: BTreeSet<String> = ["default", "kube-system", "kube-public"]
        .map(str::to_owned)
        .into();
    let mut problems = Vec::new();
    for (path, doc) in objects {
        if doc["kind"] == "Namespace" {
            namespaces.insert(doc["metadata"]["name"].as_str().unwrap_or_default().to_owned());
        } else if let Some(ns) = doc["metadata"]["namespace"].as_str()
            && !namespaces.contains(ns)
        {
            problems.push(format!(
                "{}: {} {} comes before its Namespace {ns}",
                path.display(),
                doc["kind"],
                doc["metadata"]["name"]
            ));
        }
    }
    problems
}

/// The README's `kubectl apply -f examples/demo/ -f examples/checkout-95-5.yaml` works the first
/// time on a fresh cluster: in the order kubectl applies them, every namespaced object comes after
/// its Namespace. (No API server here: the order is computed the way kubectl computes it.)
#[test]
fn the_readme_demo_command_creates_each_namespace_before_what_is_in_it() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let command = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kubectl apply -f examples/"))
        .expect("README has a `kubectl apply -f examples/...` command");
    let words: Vec<&str> = command.split_whitespace().collect();
    let args: Vec<&str> = words.windows(2).filter(|w| w[0] == "-f").map(|w| w[1]).collect();
    assert_eq!(
        args,
        ["examples/demo/", "examples/checkout-95-5.yaml"],
        "{command}"
    );
    let objects = kubectl_apply_order(&args);
    let kinds: Vec<&str> = objects.iter().filter_map(|(_, d)| d["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"Namespace") && kinds.contains(&"Deployment") && kinds.contains(&"TrafficSplit"),
        "{kinds:?}"
    );
    let problems = apply_order_problems(&objects);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_order_check_names_an_object_before_its_namespace() {
    let deployment =
        serde_json::json!({"kind": "Deployment", "metadata": {"name": "d", "namespace": "shop"}});
    let namespace = serde_json::json!({"kind": "Namespace", "metadata": {"name": "shop"}});
    let at = |d: &Value| (PathBuf::from("x.yaml"), d.clone());
    assert!(apply_order_problems(&[at(&namespace), at(&deployment)]).is_empty());
    let problems = apply_order_problems(&[at(&deployment), at(&namespace)]);
    assert_eq!(
        problems,
        ["x.yaml: \"Deployment\" \"d\" comes before its Namespace shop"]
    );
}
