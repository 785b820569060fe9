//! Measuring a rollout's metrics against Prometheus: each measurement is a success, a failure
//! (outside the range), no data, or an error — never a panic and never a rollback on a
//! Prometheus outage.
//!
//! `openErrors` needs no query from the user: the controller builds it over the agent's
//! `splitscope_file_opens_total` for the canary's and the stable's pods, which it knows from the
//! EndpointSlices of their backend Services.

pub mod prometheus;

use std::time::Duration;

use super::engine::{Measurement, format_value};
use crate::controller::api::rollout::{
    Analysis, AnalysisMetric, MeasurementOutcome, OpenErrors, ThresholdRange,
};
use crate::controller::api::{duration, template};
use prometheus::{Prometheus, QueryError, QueryResult};

/// The agent's counter the built-in `openErrors` metric is computed from.
pub const OPENS_METRIC: &str = "splitscope_file_opens_total";

/// One backend of the pair, with the pods its Service selects now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPods {
    pub backend: String,
    pub service: String,
    /// Pod names from the Service's EndpointSlices (target references), sorted.
    pub pods: Vec<String>,
}

/// What the queries are about.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub interval: Duration,
    pub canary: BackendPods,
    pub stable: BackendPods,
}

/// One measurement of every metric of `analysis`, in spec order. `default_url` is the
/// controller's `--prometheus-url`.
pub async fn measure_all(
    prometheus: &Prometheus,
    default_url: Option<&str>,
    analysis: &Analysis,
    target: &Target,
) -> Vec<Measurement> {
    let url = analysis
        .prometheus
        .as_ref()
        .map(|p| p.address.as_str())
        .or(default_url);
    // All at once: one after the other, a round of slow queries took metrics x 10 s (each
    // query's timeout) and held a reconcile slot as long.
    let rounds = analysis.metrics.iter().map(|metric| async move {
        let (outcome, value, message) = match url {
            None => (
                MeasurementOutcome::Error,
                None,
                "no Prometheus to ask: set spec.rollout.analysis.prometheus.address or start the controller with --prometheus-url".to_string(),
            ),
            Some(url) => measure(prometheus, url, metric, target).await,
        };
        Measurement {
            metric: metric.name.clone(),
            outcome,
            value,
            message,
        }
    });
    futures::future::join_all(rounds).await
}

async fn measure(
    prometheus: &Prometheus,
    url: &str,
    metric: &AnalysisMetric,
    target: &Target,
) -> (MeasurementOutcome, Option<f64>, String) {
    match (&metric.open_errors, &metric.query, &metric.threshold_range) {
        (Some(open_errors), _, _) => measure_open_errors(prometheus, url, open_errors, target).await,
        (None, Some(query), Some(range)) => {
            let promql = match render_query(query, target) {
                Ok(q) => q,
                Err(Unmeasurable::NoData(why)) => return (MeasurementOutcome::NoData, None, why),
                Err(Unmeasurable::Error(why)) => return (MeasurementOutcome::Error, None, why),
            };
            judge(prometheus.query(url, &promql).await, range)
        }
        // Refused by validation; said plainly should an old object get here.
        _ => (
            MeasurementOutcome::Error,
            None,
            "the metric has neither openErrors nor query with thresholdRange".into(),
        ),
    }
}

enum Unmeasurable {
    NoData(String),
    Error(String),
}

/// The user's query with its template variables filled in.
fn render_query(query: &str, target: &Target) -> Result<String, Unmeasurable> {
    let used = template::variables(query).map_err(|e| Unmeasurable::Error(e.to_string()))?;
    for (var, backend) in [("canaryPods", &target.canary), ("stablePods", &target.stable)] {
        if used.contains(var) && backend.pods.is_empty() {
            return Err(Unmeasurable::NoData(no_pods(backend)));
        }
    }
    template::render(query, |var| match var {
        "namespace" => target.namespace.clone(),
        "name" => target.name.clone(),
        "service" => target.service.clone(),
        "interval" => duration::to_prometheus(target.interval),
        "canaryPods" => promql_escape(&pod_regex(&target.canary.pods)),
        "stablePods" => promql_escape(&pod_regex(&target.stable.pods)),
        _ => String::new(),
    })
    .map_err(|e| Unmeasurable::Error(e.to_string()))
}

fn no_pods(backend: &BackendPods) -> String {
    format!(
        "backend {} has no pods (no endpoints in the EndpointSlices of Service {})",
        backend.backend, backend.service
    )
}

/// The canary's failed-open ratio minus the stable's, against `maxIncrease`.
async fn measure_open_errors(
    prometheus: &Prometheus,
    url: &str,
    open_errors: &OpenErrors,
    target: &Target,
) -> (MeasurementOutcome, Option<f64>, String) {
    let mut ratios = [0.0; 2];
    let mut stable_idle = false;
    for (i, backend) in [&target.canary, &target.stable].into_iter().enumerate() {
        if backend.pods.is_empty() {
            return (MeasurementOutcome::NoData, None, no_pods(backend));
        }
        let promql = failed_open_ratio(
            &target.namespace,
            &backend.pods,
            target.interval,
            &open_errors.errnos,
        );
        match one_number(prometheus.query(url, &promql).await) {
            Ok(v) => ratios[i] = v,
            // A canary that opened nothing in the window has no traffic: no verdict.
            Err((MeasurementOutcome::NoData, why)) if i == 0 => {
                return (
                    MeasurementOutcome::NoData,
                    None,
                    format!(
                        "no opens by the canary pods of backend {} in the last {} ({why})",
                        backend.backend,
                        duration::to_prometheus(target.interval)
                    ),
                );
            }
            // A stable that opened nothing failed nothing: the canary is held to 0.
            Err((MeasurementOutcome::NoData, _)) => stable_idle = true,
            Err((outcome, why)) => return (outcome, None, why),
        }
    }
    let [canary, stable] = ratios;
    let increase = canary - stable;
    let verdict = if increase <= open_errors.max_increase {
        MeasurementOutcome::Success
    } else {
        MeasurementOutcome::Failure
    };
    let relation = if verdict == MeasurementOutcome::Success {
        "within"
    } else {
        "exceeds"
    };
    (
        verdict,
        Some(increase),
        format!(
            "failed-open ratio canary {} vs stable {}{}: {}{} {relation} maxIncrease {}",
            format_value(canary),
            format_value(stable),
            if stable_idle {
                " (no stable opens in the window)"
            } else {
                ""
            },
            if increase >= 0.0 { "+" } else { "" },
            format_value(increase),
            format_value(open_errors.max_increase)
        ),
    )
}

/// `sum(increase(failed opens)) / sum(increase(all opens))` of `pods` over `interval`: no data
/// when the pods opened nothing in the window. The agent makes a series with its first open, so
/// pods that never failed one (with `errnos`, never with those) have no failed-open series:
/// `or vector(0)` makes that a ratio of 0, not an empty result the rollout would hold on.
pub fn failed_open_ratio(namespace: &str, pods: &[String], interval: Duration, errnos: &[String]) -> String {
    let window = duration::to_prometheus(interval);
    let selector = format!(
        "namespace=\"{}\",pod=~\"{}\"",
        promql_escape(namespace),
        promql_escape(&pod_regex(pods))
    );
    let failed = if errnos.is_empty() {
        "result!=\"ok\"".to_string()
    } else {
        format!("result=~\"{}\"", promql_escape(&errnos.join("|")))
    };
    format!(
        "(sum(increase({OPENS_METRIC}{{{selector},{failed}}}[{window}])) or vector(0)) / sum(increase({OPENS_METRIC}{{{selector}}}[{window}]))"
    )
}

/// An anchored regex matching exactly these pod names: `^(?:a|b)$`.
pub fn pod_regex(pods: &[String]) -> String {
    let escaped: Vec<String> = pods.iter().map(|p| regex_escape(p)).collect();
    format!("^(?:{})$", escaped.join("|"))
}

/// Escapes RE2's metacharacters (pod names are DNS subdomains: only `.` occurs in practice).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes a value for a double-quoted PromQL string.
fn promql_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The one number a query must return, or the outcome it is instead.
fn one_number(result: Result<QueryResult, QueryError>) -> Result<f64, (MeasurementOutcome, String)> {
    let value = match result {
        Err(e) => return Err((MeasurementOutcome::Error, e.to_string())),
        Ok(QueryResult::Scalar(v)) => v,
        Ok(QueryResult::Vector(series)) => match series.as_slice() {
            [] => {
                return Err((MeasurementOutcome::NoData, "the query returned no series".into()));
            }
            [(_, v)] => *v,
            many => {
                let names: Vec<&str> = many.iter().take(3).map(|(l, _)| l.as_str()).collect();
                return Err((
                    MeasurementOutcome::Error,
                    format!(
                        "the query returned {} series ({}{}); it must return one number: aggregate it, e.g. with sum()",
                        many.len(),
                        names.join(", "),
                        if many.len() > 3 { ", …" } else { "" }
                    ),
                ));
            }
        },
        Ok(QueryResult::Other(kind)) => {
            return Err((
                MeasurementOutcome::Error,
                format!("the query returns a {kind}, not one number"),
            ));
        }
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err((
            MeasurementOutcome::NoData,
            format!("the value is {}", format_value(value)),
        ))
    }
}

/// A query's result against its range.
pub fn judge(
    result: Result<QueryResult, QueryError>,
    range: &ThresholdRange,
) -> (MeasurementOutcome, Option<f64>, String) {
    let value = match one_number(result) {
        Ok(v) => v,
        Err((outcome, why)) => return (outcome, None, why),
    };
    let low = range.min.is_none_or(|min| value >= min);
    let high = range.max.is_none_or(|max| value <= max);
    let bounds = match (range.min, range.max) {
        (Some(a), Some(b)) => format!("[{}, {}]", format_value(a), format_value(b)),
        (Some(a), None) => format!("at least {}", format_value(a)),
        (None, Some(b)) => format!("at most {}", format_value(b)),
        (None, None) => "any".into(),
    };
    if low && high {
        (
            MeasurementOutcome::Success,
            Some(value),
            format!("{} within {bounds}", format_value(value)),
        )
    } else {
        (
            MeasurementOutcome::Failure,
            Some(value),
            format!("{} outside {bounds}", format_value(value)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: Option<f64>, max: Option<f64>) -> ThresholdRange {
        ThresholdRange { min, max }
    }

    fn vector(values: &[f64]) -> Result<QueryResult, QueryError> {
        Ok(QueryResult::Vector(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{{pod=\"p{i}\"}}"), *v))
                .collect(),
        ))
    }

    #[test]
    fn every_outcome_of_a_query() {
        let max = range(None, Some(0.5));
        assert_eq!(
            judge(vector(&[0.25]), &max),
            (
                MeasurementOutcome::Success,
                Some(0.25),
                "0.25 within at most 0.5".into()
            )
        );
        assert_eq!(
            judge(vector(&[0.75]), &max),
            (
                MeasurementOutcome::Failure,
                Some(0.75),
                "0.75 outside at most 0.5".into()
            )
        );
        assert_eq!(
            judge(Ok(QueryResult::Scalar(0.5)), &max).0,
            MeasurementOutcome::Success
        );
        assert_eq!(
            judge(vector(&[]), &max),
            (
                MeasurementOutcome::NoData,
                None,
                "the query returned no series".into()
            )
        );
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(judge(vector(&[v]), &max).0, MeasurementOutcome::NoData, "{v}");
        }
        let (outcome, _, msg) = judge(vector(&[0.1, 0.2]), &max);
        assert_eq!(outcome, MeasurementOutcome::Error);
        assert!(
            msg.starts_with("the query returned 2 series ({pod=\"p0\"}, {pod=\"p1\"})"),
            "{msg}"
        );
        assert_eq!(
            judge(Ok(QueryResult::Other("matrix".into())), &max).0,
            MeasurementOutcome::Error
        );
        let refused = Err(QueryError::Refused {
            error_type: "bad_data".into(),
            error: "parse error".into(),
        });
        assert_eq!(
            judge(refused, &max),
            (
                MeasurementOutcome::Error,
                None,
                "Prometheus refused the query (bad_data): parse error".into()
            )
        );
        let both = range(Some(1.0), Some(2.0));
        assert_eq!(judge(vector(&[0.5]), &both).2, "0.5 outside [1, 2]");
        assert_eq!(judge(vector(&[1.0]), &both).0, MeasurementOutcome::Success);
        assert_eq!(judge(vector(&[2.0]), &both).0, MeasurementOutcome::Success);
        assert_eq!(
            judge(vector(&[3.0]), &range(Some(1.0), None)).2,
            "3 within at least 1"
        );
    }

    #[test]
    fn the_open_errors_query_is_over_the_agents_counter_for_exactly_those_pods() {
        let pods = vec!["checkout-v2-abc".to_string(), "checkout.v2".to_string()];
        assert_eq!(
            failed_open_ratio("shop", &pods, Duration::from_secs(30), &[]),
            r#"(sum(increase(splitscope_file_opens_total{namespace="shop",pod=~"^(?:checkout-v2-abc|checkout\\.v2)$",result!="ok"}[30s])) or vector(0)) / sum(increase(splitscope_file_opens_total{namespace="shop",pod=~"^(?:checkout-v2-abc|checkout\\.v2)$"}[30s]))"#
        );
        let narrowed = failed_open_ratio(
            "shop",
            &pods[..1],
            Duration::from_secs(60),
            &["EACCES".to_string(), "EMFILE".to_string()],
        );
        assert!(narrowed.contains(r#"result=~"EACCES|EMFILE""#), "{narrowed}");
        assert!(narrowed.contains("[60s]"), "{narrowed}");
    }

    fn target() -> Target {
        let pods = |backend: &str, names: &[&str]| BackendPods {
            backend: backend.into(),
            service: format!("checkout-{backend}"),
            pods: names.iter().map(|s| s.to_string()).collect(),
        };
        Target {
            namespace: "shop".into(),
            name: "checkout".into(),
            service: "checkout".into(),
            interval: Duration::from_secs(30),
            canary: pods("canary", &["c-1"]),
            stable: pods("stable", &[]),
        }
    }

    #[test]
    fn user_queries_get_their_variables_and_no_pods_is_no_data() {
        let q = r#"sum(rate(http_requests_total{namespace="{{ namespace }}",service="{{service}}",pod=~"{{ canaryPods }}",code=~"5.."}[{{ interval }}])) # {{ name }}"#;
        let Ok(rendered) = render_query(q, &target()) else {
            panic!("did not render")
        };
        assert_eq!(
            rendered,
            r#"sum(rate(http_requests_total{namespace="shop",service="checkout",pod=~"^(?:c-1)$",code=~"5.."}[30s])) # checkout"#
        );
        match render_query("x{pod=~\"{{ stablePods }}\"}", &target()) {
            Err(Unmeasurable::NoData(why)) => assert_eq!(
                why,
                "backend stable has no pods (no endpoints in the EndpointSlices of Service checkout-stable)"
            ),
            _ => panic!("a query over no pods must be no data"),
        }
    }

    /// A Prometheus stand-in answering the two ratio queries: `canary` and `stable` are the
    /// values it returns (None = an empty vector).
    async fn stub(canary: Option<&'static str>, stable: Option<&'static str>) -> String {
        use crate::controller::testing::prometheus_stand_in;
        use axum::extract::Form;
        use std::collections::HashMap;
        prometheus_stand_in::serve(move |Form(q): Form<HashMap<String, String>>| async move {
            let promql = q.get("query").cloned().unwrap_or_default();
            prometheus_stand_in::vector(if promql.contains("c-1") { canary } else { stable })
        })
        .await
    }

    fn with_stable_pods() -> Target {
        let mut t = target();
        t.stable.pods = vec!["s-1".into()];
        t
    }

    #[tokio::test]
    async fn open_errors_compares_the_canary_with_the_stable() {
        let prometheus = Prometheus::new().unwrap();
        let rule = OpenErrors {
            max_increase: 0.05,
            errnos: vec![],
        };
        let cases = [
            (
                Some("0.02"),
                Some("0.01"),
                MeasurementOutcome::Success,
                Some(0.01),
                "failed-open ratio canary 0.02 vs stable 0.01: +0.01 within maxIncrease 0.05",
            ),
            (
                Some("0.5"),
                Some("0.01"),
                MeasurementOutcome::Failure,
                Some(0.49),
                "failed-open ratio canary 0.5 vs stable 0.01: +0.49 exceeds maxIncrease 0.05",
            ),
            (
                Some("0"),
                Some("0.2"),
                MeasurementOutcome::Success,
                Some(-0.2),
                "failed-open ratio canary 0 vs stable 0.2: -0.2 within maxIncrease 0.05",
            ),
            // The stable opened nothing: it failed nothing.
            (
                Some("0.5"),
                Some("NaN"),
                MeasurementOutcome::Failure,
                Some(0.5),
                "failed-open ratio canary 0.5 vs stable 0 (no stable opens in the window): +0.5 exceeds maxIncrease 0.05",
            ),
            (
                Some("0.01"),
                None,
                MeasurementOutcome::Success,
                Some(0.01),
                "failed-open ratio canary 0.01 vs stable 0 (no stable opens in the window): +0.01 within maxIncrease 0.05",
            ),
            // The canary opened nothing: no traffic, no verdict.
            (
                Some("NaN"),
                Some("0.01"),
                MeasurementOutcome::NoData,
                None,
                "no opens by the canary pods of backend canary in the last 30s (the value is NaN)",
            ),
            (
                None,
                Some("0.01"),
                MeasurementOutcome::NoData,
                None,
                "no opens by the canary pods of backend canary in the last 30s (the query returned no series)",
            ),
        ];
        for (canary, stable, outcome, value, message) in cases {
            let url = stub(canary, stable).await;
            let (o, v, m) = measure_open_errors(&prometheus, &url, &rule, &with_stable_pods()).await;
            assert_eq!(
                (o, m.as_str()),
                (outcome, message),
                "canary {canary:?} stable {stable:?}"
            );
            match (v, value) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{a} != {b}"),
                (a, b) => assert_eq!(a, b),
            }
        }
        // No stable pods at all: nothing to compare with.
        let url = stub(Some("0.5"), Some("0")).await;
        let (o, _, m) = measure_open_errors(&prometheus, &url, &rule, &target()).await;
        assert_eq!(o, MeasurementOutcome::NoData);
        assert_eq!(
            m,
            "backend stable has no pods (no endpoints in the EndpointSlices of Service checkout-stable)"
        );
    }
}

#[cfg(test)]
mod pod_regex_matches_exactly_the_pods {
    //! The `{{ canaryPods }}` / `{{ stablePods }}` regex, checked as written (RE2 syntax, which
    //! the `regex` crate shares; Prometheus anchors matchers itself too): every listed pod
    //! matches, and no other pod name does. A stable pod whose name merely fit a loose pattern
    //! (`.` as any character) would mix its opens into the canary's ratio.

    use proptest::prelude::*;

    use super::pod_regex;

    /// Pod names as Kubernetes makes them: DNS subdomains (lowercase, digits, `-` and `.`).
    fn pod_name() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn listed_pods_match_and_no_other_does(
            pods in prop::collection::vec(pod_name(), 1..6),
            others in prop::collection::vec(pod_name(), 0..20),
        ) {
            let re = regex::Regex::new(&pod_regex(&pods)).unwrap();
            for pod in &pods {
                prop_assert!(re.is_match(pod), "{} does not match {}", pod, re);
            }
            for other in others.iter().filter(|o| !pods.contains(o)) {
                prop_assert!(!re.is_match(other), "{} matches {} of {:?}", other, re, pods);
            }
            // The classic near-misses: a `.` read as any character, a prefix or a suffix.
            for pod in &pods {
                for near in [pod.replace('.', "x"), format!("{pod}-x"), format!("x{pod}")] {
                    if !pods.contains(&near) {
                        prop_assert!(!re.is_match(&near), "{} matches {}", near, re);
                    }
                }
            }
        }
    }
}
