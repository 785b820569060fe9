//! The Grafana dashboards in `deploy/grafana`, read the way Grafana reads them: panels (rows'
//! nested panels included), their PromQL targets, the template variables, and the metric names
//! each query selects. Shared by the static checks (tests/deploy) and the live check against a
//! real Prometheus (tests/kernel/dashboards.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use promql_parser::parser::{Expr, parse};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Every `deploy/grafana/*.json`, sorted.
pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

pub fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// The dashboard's template variables.
pub fn variables(dashboard: &Value) -> Vec<Value> {
    dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The query text of a `query` variable (Grafana stores it as a string or an object).
pub fn variable_query(variable: &Value) -> &str {
    variable["query"]["query"]
        .as_str()
        .or(variable["query"].as_str())
        .unwrap_or_default()
}

/// Values of the dashboard's `constant` variables (e.g. the scrape job names).
pub fn constants(dashboard: &Value) -> BTreeMap<String, String> {
    variables(dashboard)
        .iter()
        .filter(|v| v["type"] == "constant")
        .filter_map(|v| {
            let name = v["name"].as_str()?;
            let value = v["query"].as_str()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// One PromQL query of a dashboard: a panel target, or the selector of a `label_values`
/// variable.
#[derive(Debug, Clone)]
pub struct Query {
    /// `panel "Title"` or `variable "name"`, for messages.
    pub what: String,
    pub expr: String,
}

/// Every query of the dashboard that has an expression.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for variable in variables(dashboard) {
        if variable["type"] == "query"
            && let Some(selector) = label_values_selector(variable_query(&variable))
        {
            out.push(Query {
                what: format!("variable {}", variable["name"]),
                expr: selector.to_owned(),
            });
        }
    }
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str().map(str::trim).filter(|e| !e.is_empty()) {
                out.push(Query {
                    what: format!("panel {title:?}"),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    out
}

/// The metric selector of a `label_values(selector, label)` variable query.
pub fn label_values_selector(query: &str) -> Option<&str> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, _label) = inner.rsplit_once(',')?;
    Some(selector.trim())
}

/// Grafana's interval variables are not PromQL; give them a value so the query parses.
pub fn substitute_grafana_intervals(expr: &str, rate_interval: &str) -> String {
    expr.replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval)
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

/// The query as Grafana sends it with every variable at "All"/its constant value: regex
/// matchers on a variable match everything, constants are filled in.
pub fn as_sent(expr: &str, constants: &BTreeMap<String, String>, rate_interval: &str) -> String {
    let mut out = substitute_grafana_intervals(expr, rate_interval);
    for (name, value) in constants {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    // What remains are multi-value query variables, used as `label=~"$var"`.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("\"$") {
        result.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('"').unwrap_or(after.len());
        result.push_str("\".*\"");
        rest = after.get(end + 1..).unwrap_or("");
    }
    result.push_str(rest);
    result
}

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(vs) = selector {
            match &vs.name {
                Some(name) => {
                    self.0.insert(name.clone());
                }
                None => match vs.matchers.matchers.iter().find(|m| m.name == "__name__") {
                    Some(m) => {
                        self.0.insert(m.value.clone());
                    }
                    None => return Err("a selector without a metric name".to_owned()),
                },
            }
        }
        Ok(true)
    }
}

/// The metric names a PromQL expression selects, or why it does not parse.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let parsed = parse(&substitute_grafana_intervals(expr, "5m")).map_err(|e| format!("{expr}: {e}"))?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed).map_err(|e| format!("{expr}: {e}"))?;
    Ok(names.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_extraction_reads_real_promql() {
        let names = metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(splitscope_reconcile_duration_seconds_bucket{job=\"x\"}[$__rate_interval])))",
        )
        .unwrap();
        assert_eq!(
            names,
            BTreeSet::from(["splitscope_reconcile_duration_seconds_bucket".to_owned()])
        );
        let names = metric_names("sum(a_total) / (sum(b_total) + sum(c)) or vector(0)").unwrap();
        assert_eq!(names.len(), 3);
        assert!(metric_names("sum(rate(x[5m])").is_err(), "unbalanced parentheses");
        assert_eq!(
            label_values_selector("label_values(splitscope_file_opens_total{node=~\"$node\"}, namespace)"),
            Some("splitscope_file_opens_total{node=~\"$node\"}")
        );
    }

    #[test]
    fn variables_are_replaced_as_grafana_sends_them_at_all() {
        let constants = BTreeMap::from([("agent_job".to_owned(), "splitscope-agent-metrics".to_owned())]);
        let sent = as_sent(
            r#"sum by (node) (rate(process_cpu_seconds_total{job="$agent_job", node=~"$node", ns=~"${namespace}"}[$__rate_interval]))"#,
            &constants,
            "10s",
        );
        assert_eq!(
            sent,
            r#"sum by (node) (rate(process_cpu_seconds_total{job="splitscope-agent-metrics", node=~".*", ns=~".*"}[10s]))"#
        );
        assert!(parse(&sent).is_ok());
    }
}
