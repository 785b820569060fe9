//! The controller's own check of a TrafficSplit spec. Pure: no I/O.
//!
//! Two kinds of checks, both from the constants of patterns.rs (the ones the CRD schema is
//! generated from), so the layers cannot drift apart:
//!
//! - What the API server cannot check: label keys (a structural schema has no pattern for map
//!   keys, and a CEL regex per key is costed on unbounded strings), `metadata.name` as a DNS-1035
//!   label when it names the root Service (a CEL regex over `metadata.name` makes kube-apiserver
//!   refuse the whole CRD, see trafficsplit.rs), a named `targetPort` (int-or-string, which the
//!   schema leaves open), and backend labels that contradict the selector (two fields at once).
//! - What the API server may have missed: every schema and CEL rule again, for objects stored
//!   under an older CRD (before a pattern, limit or rule existed or was tightened) or on a server
//!   that does not enforce CEL rules (Kubernetes before 1.25, or the feature turned off). Such an
//!   object is refused with a message naming the field instead of being half-applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::patterns::{
    MAX_BACKENDS, MAX_DURATION_LENGTH, MAX_ERRNOS, MAX_HOSTNAMES, MAX_IANA_SVC_NAME_LENGTH, MAX_LABEL_LENGTH,
    MAX_LABELS, MAX_METRICS, MAX_PARENT_REFS, MAX_PORT, MAX_PORTS, MAX_QUERY_LENGTH, MAX_STEPS,
    MAX_SUBDOMAIN_LENGTH, MAX_TOLERATED, MAX_URL_LENGTH, MAX_WEIGHT, MIN_PORT, MIN_WEIGHT, WEIGHT_SUM,
    compiled,
};
use super::rollout::Analysis;
use super::trafficsplit::{Backend, ParentRef, Provider, TrafficSplit, backend_service_name};
use super::{duration, template};

/// One problem in the spec, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for InvalidSpec {}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Checks the spec; `Err` lists every problem with the field it is about.
pub fn validate(ts: &TrafficSplit) -> Result<(), InvalidSpec> {
    let spec = &ts.spec;
    let mut errs = Errors::default();

    let service = ts.service_name();
    let service_field = if spec.service.is_some() {
        "spec.service"
    } else {
        "metadata.name"
    };
    if let Err(why) = dns_1035_label(&service) {
        errs.add(
            service_field,
            format!("{why} (it names the root Service {service:?})"),
        );
    }

    // Without spec.service the DNS-1035 check above bounds the name already.
    let name = ts.name_any();
    if spec.service.is_some() && name.len() > MAX_LABEL_LENGTH {
        errs.add(
            "metadata.name",
            format!(
                "{} characters, more than {MAX_LABEL_LENGTH}: it is the value of the \
                 splitscope.dev/traffic-split label on every object the controller makes",
                name.len()
            ),
        );
    }

    check_labels(&mut errs, "spec.selector", &spec.selector);

    check_ports(&mut errs, ts);
    check_backends(&mut errs, ts, &service);
    check_routing(&mut errs, ts);
    check_rollout(&mut errs, ts);

    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec(errs.0))
    }
}

fn port_in_range(port: i32) -> bool {
    (MIN_PORT..=MAX_PORT).contains(&port)
}

fn check_ports(errs: &mut Errors, ts: &TrafficSplit) {
    let ports = &ts.spec.ports;
    if ports.is_empty() {
        errs.add("spec.ports", "at least one port is required");
    }
    if ports.len() > MAX_PORTS {
        errs.add(
            "spec.ports",
            format!("at most {MAX_PORTS} ports are allowed, got {}", ports.len()),
        );
    }
    let mut names = BTreeSet::new();
    let mut pairs = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match &p.name {
            Some(name) => {
                if let Err(why) = dns_1123_label(name) {
                    errs.add(format!("{at}.name"), why);
                }
                if !names.insert(name.as_str()) {
                    errs.add(format!("{at}.name"), format!("duplicate port name {name:?}"));
                }
            }
            None if ports.len() > 1 => {
                errs.add(format!("{at}.name"), "required when there is more than one port");
            }
            None => {}
        }
        if !port_in_range(p.port) {
            errs.add(
                format!("{at}.port"),
                format!("must be between {MIN_PORT} and {MAX_PORT}, got {}", p.port),
            );
        }
        if !pairs.insert((p.port, p.protocol.as_str())) {
            errs.add(
                format!("{at}.port"),
                format!("duplicate port {}/{}", p.port, p.protocol.as_str()),
            );
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !port_in_range(*n) => errs.add(
                format!("{at}.targetPort"),
                format!("must be between {MIN_PORT} and {MAX_PORT}, got {n}"),
            ),
            Some(IntOrString::String(name)) => {
                if let Err(why) = iana_svc_name(name) {
                    errs.add(format!("{at}.targetPort"), why);
                }
            }
            _ => {}
        }
    }
}

fn check_backends(errs: &mut Errors, ts: &TrafficSplit, service: &str) {
    let backends = &ts.spec.backends;
    if backends.is_empty() {
        errs.add("spec.backends", "at least one backend is required");
    }
    if backends.len() > MAX_BACKENDS {
        errs.add(
            "spec.backends",
            format!(
                "at most {MAX_BACKENDS} backends are allowed, got {}",
                backends.len()
            ),
        );
    }
    let mut names = BTreeSet::new();
    for (i, b) in backends.iter().enumerate() {
        let at = format!("spec.backends[{i}]");
        check_backend(errs, &at, b, service);
        if !names.insert(b.name.as_str()) {
            errs.add(
                format!("{at}.name"),
                format!("duplicate backend name {:?}", b.name),
            );
        }
        for (key, value) in &b.labels {
            if let Some(shared) = ts.spec.selector.get(key)
                && shared != value
            {
                errs.add(
                    format!("{at}.labels.{key}"),
                    format!("{value:?} contradicts spec.selector.{key}={shared:?}: no pod could match both"),
                );
            }
        }
    }
    let sum: i64 = backends.iter().map(|b| i64::from(b.weight)).sum();
    if !backends.is_empty() && sum != WEIGHT_SUM {
        let parts: Vec<String> = backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.weight))
            .collect();
        errs.add(
            "spec.backends",
            format!(
                "weights must sum to {WEIGHT_SUM}, got {sum} ({})",
                parts.join(", ")
            ),
        );
    }
}

fn check_backend(errs: &mut Errors, at: &str, b: &Backend, service: &str) {
    if let Err(why) = dns_1123_label(&b.name) {
        errs.add(format!("{at}.name"), why);
    } else {
        let svc = backend_service_name(service, &b.name);
        if svc.len() > MAX_LABEL_LENGTH {
            errs.add(
                format!("{at}.name"),
                format!(
                    "the backend Service name {svc:?} would be {} characters, at most {MAX_LABEL_LENGTH} are allowed",
                    svc.len()
                ),
            );
        }
    }
    if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&b.weight) {
        errs.add(
            format!("{at}.weight"),
            format!("must be between {MIN_WEIGHT} and {MAX_WEIGHT}, got {}", b.weight),
        );
    }
    check_labels(errs, &format!("{at}.labels"), &b.labels);
}

fn check_routing(errs: &mut Errors, ts: &TrafficSplit) {
    let routing = &ts.spec.routing;
    if !routing.parent_refs.is_empty() && routing.provider != Provider::GatewayApi {
        errs.add(
            "spec.routing.parentRefs",
            format!(
                "only allowed with provider GatewayAPI, not {}",
                routing.provider.as_str()
            ),
        );
    }
    if !routing.hostnames.is_empty() && routing.provider == Provider::None {
        errs.add(
            "spec.routing.hostnames",
            "needs a routing provider (GatewayAPI or Istio), not None",
        );
    }
    if routing.parent_refs.len() > MAX_PARENT_REFS {
        errs.add(
            "spec.routing.parentRefs",
            format!("at most {MAX_PARENT_REFS} are allowed"),
        );
    }
    if routing.hostnames.len() > MAX_HOSTNAMES {
        errs.add(
            "spec.routing.hostnames",
            format!("at most {MAX_HOSTNAMES} are allowed"),
        );
    }
    for (i, p) in routing.parent_refs.iter().enumerate() {
        check_parent_ref(errs, &format!("spec.routing.parentRefs[{i}]"), p);
    }
    for (i, h) in routing.hostnames.iter().enumerate() {
        if let Err(why) = hostname(h) {
            errs.add(format!("spec.routing.hostnames[{i}]"), why);
        }
    }
}

/// `spec.rollout`: the schema's and CEL's rules again, plus what neither can check — the template
/// variables of a query (RE2 has no look-ahead to refuse unknown names, CEL no regex replace) and
/// durations that match the pattern but overflow.
fn check_rollout(errs: &mut Errors, ts: &TrafficSplit) {
    let Some(rollout) = &ts.spec.rollout else {
        return;
    };
    let at = "spec.rollout";
    if ts.spec.routing.provider == Provider::None {
        errs.add(
            at,
            "needs a routing provider (GatewayAPI or Istio): with None nothing enforces the weights",
        );
    }
    let names: Vec<&str> = ts.spec.backends.iter().map(|b| b.name.as_str()).collect();
    for (field, name) in [("stable", &rollout.stable), ("canary", &rollout.canary)] {
        if !names.contains(&name.as_str()) {
            errs.add(
                format!("{at}.{field}"),
                format!(
                    "{name:?} names no backend of spec.backends ({})",
                    names.join(", ")
                ),
            );
        }
    }
    if rollout.stable == rollout.canary {
        errs.add(
            at,
            format!(
                "stable and canary must be two different backends, both are {:?}",
                rollout.stable
            ),
        );
    }
    let share: i64 = ts
        .spec
        .backends
        .iter()
        .filter(|b| b.name == rollout.stable || b.name == rollout.canary)
        .map(|b| i64::from(b.weight))
        .sum();
    let steps = &rollout.steps;
    if steps.is_empty() || steps.len() > MAX_STEPS {
        errs.add(
            format!("{at}.steps"),
            format!("1 to {MAX_STEPS} steps are required, got {}", steps.len()),
        );
    }
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{at}.steps[{i}]");
        match (step.set_weight, &step.pause) {
            (Some(_), Some(_)) | (None, None) => {
                errs.add(&at, "each step is exactly one of setWeight or pause");
            }
            _ => {}
        }
        if let Some(weight) = step.set_weight {
            if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
                errs.add(
                    format!("{at}.setWeight"),
                    format!("must be between {MIN_WEIGHT} and {MAX_WEIGHT}, got {weight}"),
                );
            } else if i64::from(weight) > share {
                errs.add(
                    format!("{at}.setWeight"),
                    format!(
                        "{weight} is more than the pair's share {share} (the spec weights of {} and {})",
                        rollout.stable, rollout.canary
                    ),
                );
            }
        }
        if let Some(d) = step.pause.as_ref().and_then(|p| p.duration.as_deref())
            && let Err(why) = go_duration(d)
        {
            errs.add(format!("{at}.pause.duration"), why);
        }
    }
    if let Some(d) = rollout.progress_deadline.as_deref() {
        match go_duration(d) {
            Err(why) => errs.add(format!("{at}.progressDeadline"), why),
            Ok(d) if d < std::time::Duration::from_secs(1) => {
                errs.add(format!("{at}.progressDeadline"), "must be at least 1s");
            }
            Ok(_) => {}
        }
    }
    if let Some(analysis) = &rollout.analysis {
        check_analysis(errs, analysis);
    }
}

fn check_analysis(errs: &mut Errors, analysis: &Analysis) {
    let at = "spec.rollout.analysis";
    match go_duration(&analysis.interval) {
        Err(why) => errs.add(format!("{at}.interval"), why),
        Ok(d) if d < std::time::Duration::from_secs(1) => {
            errs.add(format!("{at}.interval"), "must be at least 1s");
        }
        Ok(_) => {}
    }
    for (field, value) in [
        ("failureLimit", analysis.failure_limit),
        ("consecutiveErrorLimit", analysis.consecutive_error_limit),
    ] {
        if !(0..=MAX_TOLERATED).contains(&value) {
            errs.add(
                format!("{at}.{field}"),
                format!("must be between 0 and {MAX_TOLERATED}, got {value}"),
            );
        }
    }
    if let Some(p) = &analysis.prometheus
        && (p.address.len() > MAX_URL_LENGTH || !compiled().prometheus_url.is_match(&p.address))
    {
        errs.add(
            format!("{at}.prometheus.address"),
            format!("{:?} is not an http:// or https:// URL", p.address),
        );
    }
    let metrics = &analysis.metrics;
    if metrics.is_empty() || metrics.len() > MAX_METRICS {
        errs.add(
            format!("{at}.metrics"),
            format!("1 to {MAX_METRICS} metrics are required, got {}", metrics.len()),
        );
    }
    let mut names = BTreeSet::new();
    for (i, m) in metrics.iter().enumerate() {
        let at = format!("{at}.metrics[{i}]");
        if let Err(why) = dns_1123_label(&m.name) {
            errs.add(format!("{at}.name"), why);
        }
        if !names.insert(m.name.as_str()) {
            errs.add(
                format!("{at}.name"),
                format!("duplicate metric name {:?}", m.name),
            );
        }
        if m.open_errors.is_some() == m.query.is_some() {
            errs.add(&at, "each metric is exactly one of openErrors or query");
        }
        if m.query.is_some() != m.threshold_range.is_some() {
            errs.add(&at, "thresholdRange goes with query (and only with query)");
        }
        if let Some(open) = &m.open_errors {
            if !(0.0..=1.0).contains(&open.max_increase) {
                errs.add(
                    format!("{at}.openErrors.maxIncrease"),
                    format!("must be between 0 and 1, got {}", open.max_increase),
                );
            }
            if open.errnos.len() > MAX_ERRNOS {
                errs.add(
                    format!("{at}.openErrors.errnos"),
                    format!("at most {MAX_ERRNOS} are allowed"),
                );
            }
            for (j, e) in open.errnos.iter().enumerate() {
                if !compiled().errno_name.is_match(e) {
                    errs.add(
                        format!("{at}.openErrors.errnos[{j}]"),
                        format!("{e:?} is not an errno name (such as EACCES or ENOENT)"),
                    );
                }
            }
        }
        if let Some(query) = &m.query {
            if query.is_empty() || query.len() > MAX_QUERY_LENGTH {
                errs.add(
                    format!("{at}.query"),
                    format!("must be 1 to {MAX_QUERY_LENGTH} characters"),
                );
            }
            if let Err(why) = template::variables(query) {
                errs.add(format!("{at}.query"), why.to_string());
            }
        }
        if let Some(range) = &m.threshold_range {
            match (range.min, range.max) {
                (None, None) => errs.add(format!("{at}.thresholdRange"), "needs min, max or both"),
                (Some(min), Some(max)) if min > max => errs.add(
                    format!("{at}.thresholdRange"),
                    format!("min {min} exceeds max {max}"),
                ),
                _ => {}
            }
        }
    }
}

fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    if s.len() > MAX_DURATION_LENGTH || !compiled().go_duration.is_match(s) {
        return Err(duration::InvalidDuration(s.to_string()).to_string());
    }
    duration::parse(s).map_err(|e| e.to_string())
}

fn check_parent_ref(errs: &mut Errors, at: &str, p: &ParentRef) {
    if p.name.is_empty() || p.name.len() > MAX_SUBDOMAIN_LENGTH {
        errs.add(
            format!("{at}.name"),
            format!("must be 1 to {MAX_SUBDOMAIN_LENGTH} characters"),
        );
    }
    if let Some(group) = &p.group
        && (group.len() > MAX_SUBDOMAIN_LENGTH || !compiled().gateway_group.is_match(group))
    {
        errs.add(
            format!("{at}.group"),
            format!("{group:?} is not an API group (a DNS subdomain, or empty for the core group)"),
        );
    }
    if let Some(kind) = &p.kind
        && (kind.is_empty() || kind.len() > MAX_LABEL_LENGTH || !compiled().gateway_kind.is_match(kind))
    {
        errs.add(
            format!("{at}.kind"),
            format!("must be 1 to {MAX_LABEL_LENGTH} letters, digits or '-', starting with a letter"),
        );
    }
    if let Some(ns) = &p.namespace
        && let Err(why) = dns_1123_label(ns)
    {
        errs.add(format!("{at}.namespace"), why);
    }
    if let Some(section) = &p.section_name
        && let Err(why) = dns_1123_subdomain(section)
    {
        errs.add(format!("{at}.sectionName"), why);
    }
    if let Some(port) = p.port
        && !port_in_range(port)
    {
        errs.add(
            format!("{at}.port"),
            format!("must be between {MIN_PORT} and {MAX_PORT}, got {port}"),
        );
    }
}

fn check_labels(errs: &mut Errors, at: &str, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        errs.add(at, "at least one label is required");
    }
    if labels.len() > MAX_LABELS {
        errs.add(
            at,
            format!("at most {MAX_LABELS} labels are allowed, got {}", labels.len()),
        );
    }
    for (key, value) in labels {
        if let Err(why) = label_key(key) {
            errs.add(format!("{at}.{key}"), format!("invalid label key: {why}"));
        }
        if let Err(why) = label_value(value) {
            errs.add(format!("{at}.{key}"), format!("invalid label value: {why}"));
        }
    }
}

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
fn dns_1123_label(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= MAX_LABEL_LENGTH && compiled().dns_1123_label.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1123 label (1 to {MAX_LABEL_LENGTH} lower-case letters, digits or '-', starting and ending with a letter or digit)"
        ))
    }
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter (what Service names must be).
fn dns_1035_label(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= MAX_LABEL_LENGTH && compiled().dns_1035_label.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1035 label (1 to {MAX_LABEL_LENGTH} lower-case letters, digits or '-', starting with a letter and ending with a letter or digit)"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
fn dns_1123_subdomain(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= MAX_SUBDOMAIN_LENGTH && compiled().dns_1123_subdomain.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1123 subdomain (dot-separated DNS labels, at most {MAX_SUBDOMAIN_LENGTH} characters)"
        ))
    }
}

/// Gateway API hostname: a DNS subdomain, optionally with a leading `*.` wildcard.
fn hostname(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= MAX_SUBDOMAIN_LENGTH && compiled().hostname.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a hostname (a DNS subdomain, optionally prefixed with '*.')"
        ))
    }
}

/// IANA service name (a named `targetPort`): 1-15 of `[a-z0-9-]`, at least one letter, no
/// leading, trailing or doubled '-'.
fn iana_svc_name(s: &str) -> Result<(), String> {
    let ok = s.len() <= MAX_IANA_SVC_NAME_LENGTH
        && compiled().iana_svc_name.is_match(s)
        && s.bytes().any(|b| b.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a port name (1 to {MAX_IANA_SVC_NAME_LENGTH} lower-case letters, digits or '-', at least one letter, no leading, trailing or doubled '-')"
        ))
    }
}

/// Label key: `[prefix/]name`, prefix a DNS subdomain, name 1-63 of `[A-Za-z0-9-_.]`
/// alphanumeric at both ends.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns_1123_subdomain(prefix).map_err(|why| format!("prefix {why}"))?;
    }
    if name.len() > MAX_LABEL_LENGTH || !compiled().label_name.is_match(name) {
        return Err(format!(
            "{key:?}: the name part must be 1 to {MAX_LABEL_LENGTH} characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Label value: empty, or up to 63 of `[A-Za-z0-9-_.]` alphanumeric at both ends.
fn label_value(value: &str) -> Result<(), String> {
    if value.len() <= MAX_LABEL_LENGTH && compiled().label_value.is_match(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?}: at most {MAX_LABEL_LENGTH} characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api::trafficsplit::{Protocol, ServicePort};
    use crate::controller::testing::fixtures::traffic_split;

    fn fields(ts: &TrafficSplit) -> Vec<String> {
        validate(ts).unwrap_err().0.into_iter().map(|e| e.field).collect()
    }

    fn message(ts: &TrafficSplit) -> String {
        validate(ts).unwrap_err().to_string()
    }

    #[test]
    fn the_design_example_is_valid() {
        assert_eq!(validate(&traffic_split()), Ok(()));
    }

    #[test]
    fn weights_must_sum_to_100() {
        let mut ts = traffic_split();
        ts.spec.backends[1].weight = 10;
        assert_eq!(fields(&ts), ["spec.backends"]);
        assert!(
            message(&ts).contains("weights must sum to 100, got 105"),
            "{}",
            message(&ts)
        );
    }

    #[test]
    fn weight_out_of_range_names_the_backend() {
        let mut ts = traffic_split();
        ts.spec.backends[0].weight = 105;
        ts.spec.backends[1].weight = -5;
        let f = fields(&ts);
        assert!(f.contains(&"spec.backends[0].weight".to_string()), "{f:?}");
        assert!(f.contains(&"spec.backends[1].weight".to_string()), "{f:?}");
    }

    #[test]
    fn backend_names_must_be_unique_dns_labels() {
        let mut ts = traffic_split();
        ts.spec.backends[1].name = "stable".into();
        assert_eq!(fields(&ts), ["spec.backends[1].name"]);
        assert!(message(&ts).contains("duplicate backend name \"stable\""));

        let mut ts = traffic_split();
        ts.spec.backends[1].name = "Canary_1".into();
        assert_eq!(fields(&ts), ["spec.backends[1].name"]);
        assert!(message(&ts).starts_with("spec.backends[1].name: \"Canary_1\" is not a DNS-1123 label"));
    }

    #[test]
    fn backend_count_is_bounded() {
        let mut ts = traffic_split();
        ts.spec.backends.clear();
        assert_eq!(fields(&ts), ["spec.backends"]);

        let mut ts = traffic_split();
        let template = ts.spec.backends[0].clone();
        ts.spec.backends = (0..17)
            .map(|i| Backend {
                name: format!("b{i}"),
                weight: if i == 0 { 100 } else { 0 },
                ..template.clone()
            })
            .collect();
        assert_eq!(fields(&ts), ["spec.backends"]);
        assert!(message(&ts).contains("at most 16 backends"));
    }

    #[test]
    fn backend_service_name_length_is_checked() {
        let mut ts = traffic_split();
        ts.spec.service = Some("s".repeat(60));
        assert_eq!(fields(&ts), ["spec.backends[0].name", "spec.backends[1].name"]);
    }

    #[test]
    fn service_name_must_be_a_dns_1035_label() {
        let mut ts = traffic_split();
        ts.spec.service = Some("1checkout".into());
        assert_eq!(fields(&ts), ["spec.service"]);

        let mut ts = traffic_split();
        ts.spec.service = None;
        ts.metadata.name = Some("check.out".into());
        assert_eq!(fields(&ts)[0], "metadata.name");
    }

    #[test]
    fn ports_are_required_named_and_unique() {
        let mut ts = traffic_split();
        ts.spec.ports.clear();
        assert_eq!(fields(&ts), ["spec.ports"]);

        let mut ts = traffic_split();
        ts.spec.ports.push(ServicePort {
            name: None,
            port: 81,
            target_port: None,
            protocol: Protocol::Tcp,
        });
        assert_eq!(fields(&ts), ["spec.ports[1].name"]);

        let mut ts = traffic_split();
        let mut second = ts.spec.ports[0].clone();
        second.name = Some("http".into());
        ts.spec.ports.push(second);
        assert_eq!(fields(&ts), ["spec.ports[1].name", "spec.ports[1].port"]);
    }

    #[test]
    fn port_numbers_and_target_ports_are_checked() {
        let mut ts = traffic_split();
        ts.spec.ports[0].port = 0;
        ts.spec.ports[0].target_port = Some(IntOrString::Int(70000));
        assert_eq!(fields(&ts), ["spec.ports[0].port", "spec.ports[0].targetPort"]);

        let mut ts = traffic_split();
        ts.spec.ports[0].target_port = Some(IntOrString::String("http-web-server-x".into()));
        assert_eq!(fields(&ts), ["spec.ports[0].targetPort"]);
        ts.spec.ports[0].target_port = Some(IntOrString::String("http".into()));
        assert_eq!(validate(&ts), Ok(()));
    }

    #[test]
    fn parent_refs_only_with_gateway_api() {
        let mut ts = traffic_split();
        ts.spec.routing.provider = Provider::Istio;
        ts.spec.routing.parent_refs = vec![ParentRef {
            group: None,
            kind: None,
            namespace: None,
            name: "gw".into(),
            section_name: None,
            port: None,
        }];
        assert_eq!(fields(&ts), ["spec.routing.parentRefs"]);
        assert!(message(&ts).contains("only allowed with provider GatewayAPI, not Istio"));
        ts.spec.routing.provider = Provider::GatewayApi;
        assert_eq!(validate(&ts), Ok(()));
    }

    #[test]
    fn parent_ref_fields_are_checked() {
        let mut ts = traffic_split();
        ts.spec.routing.parent_refs = vec![ParentRef {
            group: Some("Bad_Group".into()),
            kind: Some("9Gateway".into()),
            namespace: Some("Infra".into()),
            name: "gw".into(),
            section_name: Some("-x".into()),
            port: Some(0),
        }];
        assert_eq!(
            fields(&ts),
            [
                "spec.routing.parentRefs[0].group",
                "spec.routing.parentRefs[0].kind",
                "spec.routing.parentRefs[0].namespace",
                "spec.routing.parentRefs[0].sectionName",
                "spec.routing.parentRefs[0].port"
            ]
        );
    }

    #[test]
    fn hostnames_are_checked_and_need_a_provider() {
        let mut ts = traffic_split();
        ts.spec.routing.hostnames = vec!["*.shop.example".into(), "Bad Host".into()];
        assert_eq!(fields(&ts), ["spec.routing.hostnames[1]"]);
        ts.spec.routing.hostnames.pop();
        ts.spec.routing.provider = Provider::None;
        assert_eq!(fields(&ts), ["spec.routing.hostnames"]);
    }

    #[test]
    fn labels_are_checked() {
        let mut ts = traffic_split();
        ts.spec.selector.clear();
        assert_eq!(fields(&ts), ["spec.selector"]);

        let mut ts = traffic_split();
        ts.spec.selector.insert("bad key!".into(), "x".into());
        ts.spec.backends[0]
            .labels
            .insert("example.com/track".into(), "-bad".into());
        assert_eq!(
            fields(&ts),
            [
                "spec.selector.bad key!",
                "spec.backends[0].labels.example.com/track"
            ]
        );
    }

    #[test]
    fn backend_labels_must_not_contradict_the_selector() {
        let mut ts = traffic_split();
        ts.spec.backends[1].labels.insert("app".into(), "payments".into());
        assert_eq!(fields(&ts), ["spec.backends[1].labels.app"]);
        // The same value again is redundant but harmless.
        let mut ts = traffic_split();
        ts.spec.backends[1].labels.insert("app".into(), "checkout".into());
        assert_eq!(validate(&ts), Ok(()));
    }

    #[test]
    fn several_problems_are_all_reported() {
        let mut ts = traffic_split();
        ts.spec.backends[0].weight = 50;
        ts.spec.ports[0].port = 0;
        let msg = message(&ts);
        assert!(
            msg.contains("spec.ports[0].port: must be between 1 and 65535"),
            "{msg}"
        );
        assert!(msg.contains("spec.backends: weights must sum to 100"), "{msg}");
    }
}
