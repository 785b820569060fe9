//! Every pattern and limit of the TrafficSplit API, written once. The `#[schemars(...)]`
//! attributes of trafficsplit.rs turn them into the CRD's OpenAPI schema, and validate.rs checks
//! the same constants (compiled here with the `regex` crate), so the API server and the
//! controller cannot disagree on a format.

use std::sync::LazyLock;

use regex::Regex;

/// Most backends one TrafficSplit may have; bounds the CEL rules' cost.
pub const MAX_BACKENDS: usize = 16;
/// Most ports of the Services.
pub const MAX_PORTS: usize = 16;
/// Most labels in `selector` and in each backend's `labels`.
pub const MAX_LABELS: usize = 16;
/// Most `parentRefs` (Gateway API's own limit).
pub const MAX_PARENT_REFS: usize = 32;
/// Most `hostnames` (Gateway API's own limit).
pub const MAX_HOSTNAMES: usize = 16;
/// Most status conditions (Ready, Accepted, BackendsAvailable, with room to grow).
pub const MAX_CONDITIONS: usize = 8;

/// Longest DNS label (RFC 1123/1035), label value or label name part.
pub const MAX_LABEL_LENGTH: usize = 63;
/// Longest DNS subdomain (RFC 1123), and Gateway API's longest group, name and section name.
pub const MAX_SUBDOMAIN_LENGTH: usize = 253;

/// Lowest and highest port number (Service ports, target ports, parentRef ports).
pub const MIN_PORT: i32 = 1;
pub const MAX_PORT: i32 = 65535;
/// A backend's weight is a percentage; all weights sum to [`WEIGHT_SUM`].
pub const MIN_WEIGHT: i32 = 0;
pub const MAX_WEIGHT: i32 = 100;
pub const WEIGHT_SUM: i64 = 100;

/// RFC 1035 label: what a Service name must be.
pub const DNS_1035_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1123 label: what a backend, port name or namespace must be.
pub const DNS_1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1123 subdomain; also Gateway API's `SectionName`.
pub const DNS_1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A label value (may be empty).
pub const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// The name part of a label key (after an optional `prefix/`). Controller-only: map keys are not
/// covered by a structural schema's `pattern`, and a CEL regex per key would be costed on
/// unbounded strings.
pub const LABEL_NAME: &str = "^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";
/// IANA service name: what a named `targetPort` must be. Controller-only: `targetPort` is
/// int-or-string, which the schema leaves unconstrained.
pub const IANA_SVC_NAME: &str = "^[a-z0-9]([a-z0-9]|-[a-z0-9])*$";
/// Longest IANA service name.
pub const MAX_IANA_SVC_NAME_LENGTH: usize = 15;
/// Gateway API `Hostname`.
pub const HOSTNAME: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Gateway API `Group` (empty = core).
pub const GATEWAY_GROUP: &str = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Gateway API `Kind`.
pub const GATEWAY_KIND: &str = "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";

/// Most steps of a rollout.
pub const MAX_STEPS: usize = 32;
/// Most analysis metrics of a rollout.
pub const MAX_METRICS: usize = 10;
/// Most errno names of `openErrors.errnos`.
pub const MAX_ERRNOS: usize = 32;
/// Longest analysis `query`.
pub const MAX_QUERY_LENGTH: usize = 4096;
/// Longest Prometheus address.
pub const MAX_URL_LENGTH: usize = 2048;
/// Longest duration string.
pub const MAX_DURATION_LENGTH: usize = 32;
/// Most failures / consecutive errors a rollout may tolerate.
pub const MAX_TOLERATED: i32 = 1000;
/// A Go duration as Kubernetes and CEL's `duration()` write them, without sign: one or more
/// `<number><unit>` with units ns, us, µs, ms, s, m, h (e.g. `30s`, `1m30s`, `1.5h`). The
/// controller parses exactly these (rollout/duration.rs; a test checks both agree).
pub const GO_DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// An errno name as the agent exports it in its `result` label (e.g. `EACCES`).
pub const ERRNO_NAME: &str = "^E[A-Z0-9]+$";
/// A Prometheus HTTP API base URL.
pub const PROMETHEUS_URL: &str = r"^https?://[^\s]+$";

/// The patterns above, compiled once for the controller's own check.
pub struct Compiled {
    pub dns_1035_label: Regex,
    pub dns_1123_label: Regex,
    pub dns_1123_subdomain: Regex,
    pub label_value: Regex,
    pub label_name: Regex,
    pub iana_svc_name: Regex,
    pub hostname: Regex,
    pub gateway_group: Regex,
    pub gateway_kind: Regex,
    pub go_duration: Regex,
    pub errno_name: Regex,
    pub prometheus_url: Regex,
}

/// The compiled patterns. They are constants of this file, compiled by a unit test too, so a
/// typo fails the build's tests rather than a reconcile.
pub fn compiled() -> &'static Compiled {
    static COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled {
        dns_1035_label: compile(DNS_1035_LABEL),
        dns_1123_label: compile(DNS_1123_LABEL),
        dns_1123_subdomain: compile(DNS_1123_SUBDOMAIN),
        label_value: compile(LABEL_VALUE),
        label_name: compile(LABEL_NAME),
        iana_svc_name: compile(IANA_SVC_NAME),
        hostname: compile(HOSTNAME),
        gateway_group: compile(GATEWAY_GROUP),
        gateway_kind: compile(GATEWAY_KIND),
        go_duration: compile(GO_DURATION),
        errno_name: compile(ERRNO_NAME),
        prometheus_url: compile(PROMETHEUS_URL),
    });
    &COMPILED
}

fn compile(pattern: &'static str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("the API pattern {pattern} does not compile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_means_what_its_name_says() {
        let c = compiled();
        assert!(c.dns_1035_label.is_match("checkout-v2") && !c.dns_1035_label.is_match("2checkout"));
        assert!(c.dns_1123_label.is_match("2checkout") && !c.dns_1123_label.is_match("a.b"));
        assert!(c.dns_1123_subdomain.is_match("a.b-c.d") && !c.dns_1123_subdomain.is_match("a..b"));
        assert!(
            c.label_value.is_match("") && c.label_value.is_match("v1.2_x") && !c.label_value.is_match("-v")
        );
        assert!(c.label_name.is_match("track") && !c.label_name.is_match(""));
        assert!(c.iana_svc_name.is_match("http") && !c.iana_svc_name.is_match("a--b"));
        assert!(c.hostname.is_match("*.shop.example") && !c.hostname.is_match("Shop"));
        assert!(c.gateway_group.is_match("") && c.gateway_group.is_match("gateway.networking.k8s.io"));
        assert!(c.gateway_kind.is_match("Gateway") && !c.gateway_kind.is_match("9Gateway"));
        assert!(c.go_duration.is_match("1m30s") && !c.go_duration.is_match("1d"));
        assert!(c.errno_name.is_match("EACCES") && !c.errno_name.is_match("eacces"));
        assert!(c.prometheus_url.is_match("http://p:9090") && !c.prometheus_url.is_match("p:9090"));
    }
}
