//! The Grafana dashboards: well-formed, every panel queryable, and every metric they use one the
//! binaries export.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::proto::MetricType;
use serde_json::Value;
use splitscope::agent::metrics::{AgentMetrics, OpenLabels};
use splitscope::controller::api::rollout::{MeasurementOutcome, RolloutStatus};
use splitscope::controller::runtime::metrics::Metrics;
use splitscope_tests::dashboards::{
    dashboard_files, label_values_selector, load, metric_names, panels, variable_query, variables,
};

use crate::kustomize::{render, repo_root};

/// What the binaries export: every metric family of the controller's and the agent's real
/// registries (`Metrics::new()`, `AgentMetrics::new()`), with its type. A labelled family is only
/// gathered once it has a series, so each vector gets one first; the names and types are the
/// registries' own, not a copy kept here.
fn exported() -> BTreeMap<String, MetricType> {
    let controller = Metrics::new().unwrap();
    controller.set_trafficsplit("ns", "name", &[("backend".into(), 1)], true);
    let rollout: RolloutStatus = serde_json::from_value(serde_json::json!({
        "phase": "Progressing", "revision": "r", "stepIndex": 0, "canaryWeight": 0,
        "stableWeight": 100,
        "metrics": [{"name": "m", "successes": 0, "failures": 0, "noData": 0, "errors": 0,
                     "consecutiveErrors": 0, "successesAtWeight": 0}],
    }))
    .unwrap();
    controller.set_rollout("ns", "name", Some(&rollout));
    controller.measured("ns", "name", "m", MeasurementOutcome::Success, Some(0.0));
    let mut agent = AgentMetrics::new(1).unwrap();
    agent
        .opens_counter(OpenLabels {
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            comm: "c".into(),
            result: "ok".into(),
        })
        .inc();
    agent.set_attach_info("tracepoint", "t");
    controller
        .registry
        .gather()
        .into_iter()
        .chain(agent.registry().gather())
        .map(|family| (family.name().to_owned(), family.get_field_type()))
        .collect()
}

/// Whether `name` is exported: a family of the registries, or a histogram's series.
fn known_metric(exported: &BTreeMap<String, MetricType>, name: &str) -> bool {
    exported.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| exported.get(base) == Some(&MetricType::HISTOGRAM))
        })
}

/// Every problem of one dashboard, named; empty when it is fine.
fn problems(
    name: &str,
    dashboard: &Value,
    exported: &BTreeMap<String, MetricType>,
    used: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if dashboard["schemaVersion"].as_u64().unwrap_or(0) < 39 {
        out.push(format!("{name}: schemaVersion below 39"));
    }
    if dashboard["uid"].as_str().is_none_or(str::is_empty) {
        out.push(format!("{name}: no uid"));
    }
    let variables = variables(dashboard);
    let has_datasource_var = variables
        .iter()
        .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus");
    if !has_datasource_var {
        out.push(format!(
            "{name}: no `datasource` variable of Prometheus data sources"
        ));
    }
    let mut exprs = Vec::new();
    for variable in &variables {
        if variable["type"] == "query" {
            match label_values_selector(variable_query(variable)) {
                Some(selector) => exprs.push((format!("variable {}", variable["name"]), selector.to_owned())),
                None => out.push(format!(
                    "{name}: variable {} is not label_values(...)",
                    variable["name"]
                )),
            }
        }
    }
    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        if panel["type"] == "row" {
            continue;
        }
        match panel["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => out.push(format!("{name}: panel {title:?} reuses id {id}")),
            None => out.push(format!("{name}: panel {title:?} has no id")),
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            out.push(format!(
                "{name}: panel {title:?} does not use the ${{datasource}} variable"
            ));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            out.push(format!("{name}: panel {title:?} has no query"));
        }
        for target in &targets {
            let ds = &target["datasource"];
            if !ds.is_null() && ds["uid"] != "${datasource}" {
                out.push(format!("{name}: a query of {title:?} has another data source"));
            }
            match target["expr"].as_str().map(str::trim) {
                Some(expr) if !expr.is_empty() => exprs.push((format!("panel {title:?}"), expr.to_owned())),
                _ => out.push(format!("{name}: a query of {title:?} has no expr")),
            }
        }
    }
    for (what, expr) in exprs {
        match metric_names(&expr) {
            Ok(names) if names.is_empty() => out.push(format!("{name}: {what} selects no metric: {expr}")),
            Ok(names) => {
                for metric in names {
                    if !known_metric(exported, &metric) {
                        out.push(format!(
                            "{name}: {what} uses {metric}, which the binaries do not export"
                        ));
                    }
                    used.insert(metric);
                }
            }
            Err(e) => out.push(format!("{name}: {what} is not valid PromQL: {e}")),
        }
    }
    out
}

#[test]
fn dashboards_use_only_exported_metrics_and_are_well_formed() {
    let files = dashboard_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["agent.json", "controller.json"]);
    let exported = exported();
    let mut used = BTreeSet::new();
    let mut all = Vec::new();
    let mut uids = BTreeSet::new();
    for (path, name) in files.iter().zip(&names) {
        let dashboard = load(path);
        assert!(uids.insert(dashboard["uid"].to_string()), "{name}: duplicate uid");
        all.extend(problems(name, &dashboard, &exported, &mut used));
    }
    assert!(all.is_empty(), "{all:#?}");
    // Every splitscope metric the binaries export is on a dashboard (a histogram through its
    // buckets); the process collector's are optional.
    for (metric, ty) in exported.iter().filter(|(m, _)| m.starts_with("splitscope_")) {
        let shown = match ty {
            MetricType::HISTOGRAM => format!("{metric}_bucket"),
            _ => metric.clone(),
        };
        assert!(used.contains(&shown), "no panel shows {shown}");
    }
}

/// Every dashboard is shipped in a ConfigMap labelled for Grafana, in both overlays.
#[test]
fn dashboards_are_provisioned_from_labelled_config_maps() {
    let files: BTreeSet<String> = dashboard_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for dir in ["deploy/monitoring", "deploy/prometheus-grafana"] {
        let rendered = render(dir);
        let mut shipped = BTreeSet::new();
        for cm in rendered.of_kind("ConfigMap") {
            if cm["metadata"]["labels"]["grafana_dashboard"] != "1" {
                continue;
            }
            for (key, value) in cm["data"].as_object().unwrap() {
                let on_disk = std::fs::read_to_string(repo_root().join("deploy/grafana").join(key)).unwrap();
                assert_eq!(value.as_str(), Some(on_disk.as_str()), "{dir}: {key} is stale");
                shipped.insert(key.clone());
            }
        }
        assert_eq!(shipped, files, "{dir}: dashboards shipped");
    }
    // The standalone Grafana mounts every labelled ConfigMap.
    let rendered = render("deploy/prometheus-grafana");
    let grafana = rendered.find("Deployment", "splitscope-grafana");
    let mounted: BTreeSet<String> = grafana["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["projected"]["sources"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["configMap"]["name"].as_str().map(str::to_owned))
        .collect();
    let labelled: BTreeSet<String> = rendered
        .of_kind("ConfigMap")
        .filter(|cm| cm["metadata"]["labels"]["grafana_dashboard"] == "1")
        .map(|cm| cm["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mounted, labelled);
}

#[test]
fn known_metrics_come_from_the_registries_with_histogram_series_only_for_histograms() {
    let exported = exported();
    for (name, ty) in [
        ("splitscope_reconcile_total", MetricType::COUNTER),
        ("splitscope_reconcile_duration_seconds", MetricType::HISTOGRAM),
        ("splitscope_trafficsplit_backend_weight", MetricType::GAUGE),
        ("splitscope_trafficsplit_ready", MetricType::GAUGE),
        ("splitscope_leader", MetricType::GAUGE),
        ("splitscope_file_opens_total", MetricType::COUNTER),
        ("splitscope_probe_events_total", MetricType::COUNTER),
        ("splitscope_probe_events_dropped_total", MetricType::COUNTER),
        ("splitscope_probe_attach_info", MetricType::GAUGE),
    ] {
        assert_eq!(exported.get(name), Some(&ty), "{name} in {exported:?}");
    }
    assert!(known_metric(
        &exported,
        "splitscope_reconcile_duration_seconds_count"
    ));
    assert!(known_metric(&exported, "process_resident_memory_bytes"));
    assert!(!known_metric(&exported, "splitscope_file_opens_total_bucket"));
    assert!(!known_metric(&exported, "splitscope_opens_total"));
}

#[test]
fn a_dashboard_with_an_unknown_metric_is_rejected() {
    let dashboard = serde_json::json!({
        "uid": "x", "schemaVersion": 39,
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": [
            {"id": 1, "type": "timeseries", "title": "a", "datasource": {"uid": "${datasource}"},
             "targets": [{"expr": "rate(splitscope_opens_total[5m])"}]},
            {"id": 1, "type": "timeseries", "title": "b", "datasource": {"uid": "prom"},
             "targets": [{"expr": ""}]}
        ]
    });
    let found = problems("t", &dashboard, &exported(), &mut BTreeSet::new());
    assert!(
        found.iter().any(|p| p.contains("splitscope_opens_total")),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.contains("reuses id 1")), "{found:?}");
    assert!(
        found.iter().any(|p| p.contains("\"b\" does not use")),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.contains("\"b\" has no expr")), "{found:?}");
}
