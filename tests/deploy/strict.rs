//! Strict parsing: every rendered object must be exactly representable by its Kubernetes type.
//!
//! k8s-openapi's types ignore unknown fields when deserializing, so a misspelt or misplaced field
//! (`replica:`, `capabilities` on the pod instead of the container) would pass silently. Here each
//! object is deserialized into its type, serialized back, and compared with the input: any field
//! that did not survive the round trip was unknown to the type, and the test names its path.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kustomize::{KUSTOMIZATIONS, render};

/// Parses `object` into the type of its apiVersion/kind; `Err` names every field the type does
/// not have, or the deserialization error with its path.
pub fn check(object: &Value) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(object),
        ("v1", "Service") => round_trip::<Service>(object),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(object),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(object),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(object),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => round_trip::<ClusterRoleBinding>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(object),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(object)
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => round_trip::<ServiceMonitor>(object),
        _ => Err(format!(
            "no strict type for {api_version} {kind}: add it to tests/deploy/strict.rs"
        )),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T = serde_path_to_error::deserialize(object.clone())
        .map_err(|e| format!("at {}: {}", e.path(), e.inner()))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    diff("", &without_nulls(object), &back, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A null in a manifest means "unset", which the typed value represents by omitting the field.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn diff(path: &str, input: &Value, output: &Value, problems: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => diff(&here, value, other, problems),
                    None => problems.push(format!("unknown field {here}")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                problems.push(format!("field {path}.{key} appeared in the round trip"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, problems);
            }
        }
        (a, b) if a == b => {}
        // Integers written as floats (1.0) and the like: the same number is fine.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) => problems.push(format!("{path}: {a} became {b}")),
    }
}

/// The part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) that
/// deploy/monitoring uses; k8s-openapi has no type for it. Unknown fields are errors, so a field
/// the operator does not know (or that is misplaced) fails here instead of being ignored by it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<NamespaceSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_label: Option<String>,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    any: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    match_names: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    honor_labels: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relabelings: Option<Vec<RelabelConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric_relabelings: Option<Vec<RelabelConfig>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RelabelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    source_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    separator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<RelabelAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modulus: Option<u64>,
}

/// The operator's CRD accepts these, in either case; lower case is the documented form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RelabelAction {
    Replace,
    Keep,
    Drop,
    Hashmod,
    Labelmap,
    Labeldrop,
    Labelkeep,
    Lowercase,
    Uppercase,
    Keepequal,
    Dropequal,
}

#[test]
fn every_rendered_object_parses_strictly() {
    for dir in KUSTOMIZATIONS {
        let rendered = render(dir);
        let mut failures = BTreeMap::new();
        for object in &rendered.objects {
            if let Err(e) = check(object) {
                failures.insert(format!("{} {}", object["kind"], object["metadata"]["name"]), e);
            }
        }
        assert!(failures.is_empty(), "{dir}: {failures:#?}");
    }
}

#[test]
fn strict_parse_names_a_misspelt_field() {
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}
        }
    });
    let err = check(&deployment).unwrap_err();
    assert!(err.contains("unknown field .spec.replica"), "{err}");
}

#[test]
fn strict_parse_names_a_misplaced_field() {
    // capabilities belong to the container's securityContext, not the pod's.
    let pod_level_caps = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {
                "securityContext": {"capabilities": {"add": ["BPF"]}},
                "containers": [{"name": "c", "image": "i"}]
            }}
        }
    });
    let err = check(&pod_level_caps).unwrap_err();
    assert!(
        err.contains("unknown field .spec.template.spec.securityContext.capabilities"),
        "{err}"
    );
}

#[test]
fn strict_parse_rejects_wrong_types_and_unknown_kinds() {
    let bad_port = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}]}
    });
    let err = check(&bad_port).unwrap_err();
    assert!(err.contains("spec.ports[0].port"), "{err}");
    let unknown = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget"});
    assert!(check(&unknown).unwrap_err().contains("no strict type"));
    let monitor = serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "honourLabels": true}]}
    });
    let err = check(&monitor).unwrap_err();
    assert!(err.contains("honourLabels"), "{err}");
}
