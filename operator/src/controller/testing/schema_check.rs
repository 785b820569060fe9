//! Checks an object against a CRD's OpenAPI v3 (structural) schema the way the API server's
//! validation does: types, unknown fields, required fields, list/string/number limits, patterns
//! and enums — plus the schema's CEL rules through kube-cel. Test-only: used to prove that what
//! we render is accepted by the upstream Gateway API CRD.
//!
//! Hand-written because no maintained crate validates Kubernetes structural schemas (OpenAPI v3
//! with `nullable`, `x-kubernetes-*`) and JSON-Schema validators differ on exactly those points.

use regex::Regex;
use serde_json::Value;

/// Fills in the schema's `default`s the way the API server does before storing an object.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if !obj.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        obj.insert(k.clone(), d.clone());
                    }
                    if let Some(v) = obj.get_mut(k) {
                        apply_defaults(s, v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for v in items {
                    apply_defaults(s, v);
                }
            }
        }
        _ => {}
    }
}

/// Every violation found, as `path: problem`: the OpenAPI part, then the CEL rules'.
pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = check_openapi(schema, value);
    errors.extend(check_cel(schema, value).into_iter().map(|e| format!("CEL: {e}")));
    errors
}

/// The OpenAPI part alone (types, required, limits, patterns, enums), as `.path: problem`.
pub fn check_openapi(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk("", schema, value, &mut errors);
    errors
}

/// The schema's CEL rules alone (kube-cel), as `field: message`.
pub fn check_cel(schema: &Value, value: &Value) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(schema, value, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn walk(path: &str, schema: &Value, value: &Value, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_string()) {
            errors.push(format!("{at}: must be an integer or a string"));
        }
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {values:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or_default();
    match ty {
        "object" => {
            let Some(obj) = value.as_object() else {
                errors.push(format!("{at}: must be an object"));
                return;
            };
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap_or_default();
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: required field {r} is missing"));
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && obj.len() as u64 > max
            {
                errors.push(format!("{at}: more than {max} properties"));
            }
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                && (obj.len() as u64) < min
            {
                errors.push(format!("{at}: fewer than {min} properties"));
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, v) in obj {
                let child = format!("{path}.{k}");
                // ObjectMeta is validated by the API server itself, not by the CRD schema.
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    walk(&child, s, v, errors);
                } else if let Some(s) = extra.filter(|s| s.is_object()) {
                    walk(&child, s, v, errors);
                } else if !(preserve
                    || path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                    errors.push(format!("{child}: unknown field"));
                }
            }
        }
        "array" => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{at}: must be an array"));
                return;
            };
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!("{at}: more than {max} items"));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!("{at}: fewer than {min} items"));
            }
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), s, v, errors);
                }
            }
        }
        "string" => {
            let Some(s) = value.as_str() else {
                errors.push(format!("{at}: must be a string"));
                return;
            };
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!("{at}: longer than {max}"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!("{at}: shorter than {min}"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match Regex::new(p) {
                    Ok(re) if !re.is_match(s) => errors.push(format!("{at}: {s:?} does not match {p}")),
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{at}: pattern {p} does not compile: {e}")),
                }
            }
        }
        "integer" | "number" => {
            let Some(n) = value.as_f64() else {
                errors.push(format!("{at}: must be a number"));
                return;
            };
            if ty == "integer" && !(value.is_i64() || value.is_u64()) {
                errors.push(format!("{at}: must be an integer"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("{at}: above the maximum {max}"));
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("{at}: below the minimum {min}"));
            }
        }
        "boolean" if !value.is_boolean() => errors.push(format!("{at}: must be a boolean")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api::trafficsplit::{Backend, ParentRef, TrafficSplit};
    use crate::controller::routing::gateway_api;
    use crate::controller::testing::fixtures::{settled_ready_status, traffic_split, with_status};
    use serde_json::json;

    /// The v1 schema of the upstream Gateway API v1.6.1 HTTPRoute CRD.
    fn httproute_v1_schema() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/gateway-api/httproutes.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
            .unwrap()
    }

    fn rendered_route(ts: &TrafficSplit) -> Value {
        serde_json::to_value(gateway_api::render(ts)).unwrap()
    }

    #[test]
    fn gamma_route_is_accepted_by_the_upstream_httproute_schema() {
        let route = rendered_route(&traffic_split());
        assert_eq!(check(&httproute_v1_schema(), &route), Vec::<String>::new());
    }

    #[test]
    fn gateway_route_with_hostnames_and_16_backends_is_accepted() {
        let mut ts = traffic_split();
        let template = ts.spec.backends[0].clone();
        ts.spec.backends = (0..16)
            .map(|i| Backend {
                name: format!("v{i}"),
                weight: if i == 0 { 85 } else { 1 },
                ..template.clone()
            })
            .collect();
        ts.spec.routing.parent_refs = vec![ParentRef {
            group: None,
            kind: None,
            namespace: Some("infra".into()),
            name: "public".into(),
            section_name: Some("https".into()),
            port: Some(443),
        }];
        ts.spec.routing.hostnames = vec!["shop.example.com".into(), "*.shop.example.com".into()];
        let route = rendered_route(&ts);
        assert_eq!(check(&httproute_v1_schema(), &route), Vec::<String>::new());
    }

    /// After the API server's defaulting, the stored route still equals what we render, so an
    /// unchanged route is never re-applied.
    #[test]
    fn the_defaulted_route_compares_unchanged() {
        let schema = httproute_v1_schema();
        let desired = gateway_api::render(&traffic_split());
        let mut stored = serde_json::to_value(&desired).unwrap();
        apply_defaults(&schema, &mut stored);
        let stored: ::gateway_api::httproutes::HttpRoute = serde_json::from_value(stored).unwrap();
        assert!(gateway_api::unchanged(&stored, &desired));

        // The defaulting is real: a route rendered without explicit defaults would differ.
        let mut bare = serde_json::to_value(&desired).unwrap();
        bare["spec"]["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("matches");
        apply_defaults(&schema, &mut bare);
        assert_eq!(
            bare["spec"]["rules"][0]["matches"][0]["path"]["type"],
            "PathPrefix"
        );
    }

    /// The checker itself must reject what the API server rejects, or the tests above prove
    /// nothing.
    #[test]
    fn the_checker_rejects_invalid_routes() {
        let schema = httproute_v1_schema();
        let good = rendered_route(&traffic_split());

        let mut bad = good.clone();
        bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(2_000_000);
        assert!(
            check(&schema, &bad)
                .iter()
                .any(|e| e.contains("weight") && e.contains("maximum"))
        );

        let mut bad = good.clone();
        bad["spec"]["rules"][0]["backendRefs"][0]
            .as_object_mut()
            .unwrap()
            .remove("name");
        assert!(
            check(&schema, &bad)
                .iter()
                .any(|e| e.contains("required field name"))
        );

        let mut bad = good.clone();
        bad["spec"]["parentRefs"][0]["kind"] = json!("not a kind");
        assert!(check(&schema, &bad).iter().any(|e| e.contains("does not match")));

        let mut bad = good.clone();
        bad["spec"]["rules"][0]["matches"][0]["path"]["type"] = json!("Glob");
        assert!(check(&schema, &bad).iter().any(|e| e.contains("is not one of")));

        let mut bad = good.clone();
        bad["spec"]["hostnames"] = json!(vec!["a.example"; 17]);
        assert!(
            check(&schema, &bad)
                .iter()
                .any(|e| e.contains("more than 16 items"))
        );

        let mut bad = good.clone();
        bad["spec"]["rules"][0]["backendRefs"][0]["colour"] = json!("blue");
        assert!(check(&schema, &bad).iter().any(|e| e.contains("unknown field")));

        // A Service backendRef without a port breaks the CRD's CEL rule.
        let mut bad = good;
        bad["spec"]["rules"][0]["backendRefs"][0]
            .as_object_mut()
            .unwrap()
            .remove("port");
        let errors = check(&schema, &bad);
        assert!(errors.iter().any(|e| e.starts_with("CEL:")), "{errors:?}");
    }

    /// Our own example and a computed status fit our checked-in CRD.
    #[test]
    fn the_example_and_its_status_fit_our_crd() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/trafficsplits.splitscope.dev.yaml"
        ))
        .unwrap();
        let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let ts = with_status(traffic_split(), settled_ready_status());
        let value = serde_json::to_value(&ts).unwrap();
        assert_eq!(check(schema, &value), Vec::<String>::new());

        let mut bad = value;
        bad["spec"]["backends"][0]["weight"] = json!(101);
        let errors = check(schema, &bad);
        assert!(errors.iter().any(|e| e.contains("maximum")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("weights must sum to 100")),
            "{errors:?}"
        );
    }
}
