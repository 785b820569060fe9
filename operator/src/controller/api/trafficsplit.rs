//! The `TrafficSplit` custom resource (`splitscope.dev/v1alpha1`).
//!
//! Validation lives in three places that must agree, each rule written once: the OpenAPI schema
//! derived here (types, ranges, lengths, and the patterns and limits of patterns.rs), the CEL
//! rules attached here (`x-kubernetes-validations`), and validate.rs, the controller's own check
//! from the same constants. Every list and map is bounded (`maxItems`/`maxProperties`) so the API
//! server's CEL cost estimator accepts the rules.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::{
    DNS_1035_LABEL, DNS_1123_LABEL, DNS_1123_SUBDOMAIN, GATEWAY_GROUP, GATEWAY_KIND, HOSTNAME, LABEL_VALUE,
    MAX_BACKENDS, MAX_CONDITIONS, MAX_HOSTNAMES, MAX_LABEL_LENGTH, MAX_LABELS, MAX_PARENT_REFS, MAX_PORT,
    MAX_PORTS, MAX_SUBDOMAIN_LENGTH, MAX_WEIGHT, MIN_PORT, MIN_WEIGHT, WEIGHT_SUM,
};
use super::rollout::{Rollout, RolloutStatus};

/// Finalizer that guards the ordered teardown of the owned objects.
pub const FINALIZER: &str = "splitscope.dev/cleanup";
/// Label on every owned object, with the value [`MANAGED_BY_VALUE`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "splitscope";
/// Label on every owned object naming its TrafficSplit (copied by the EndpointSlice controller
/// from the Services to their slices, which is how a slice maps back to its TrafficSplit).
pub const TRAFFIC_SPLIT_LABEL: &str = "splitscope.dev/traffic-split";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "splitscope";

/// A service whose traffic is split by weight between backends (versions of it).
///
/// The controller creates the root Service (`spec.service`), one Service per backend
/// (`<service>-<backend>`) and the routing object of `spec.routing.provider` carrying the weights.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "splitscope.dev",
    version = "v1alpha1",
    kind = "TrafficSplit",
    plural = "trafficsplits",
    shortname = "ts",
    namespaced,
    status = "TrafficSplitStatus",
    doc = "A Service whose traffic is split by weight between backends (versions).",
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".status.service",
        description = "The root Service clients call"
    ),
    printcolumn(
        name = "Backends",
        type_ = "string",
        json_path = ".status.weights",
        description = "Backends with their weights (percent)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Ready or Degraded"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase",
        description = "Phase of spec.rollout: Progressing, Paused, Succeeded, Failed or Aborted"
    ),
    printcolumn(
        name = "Canary",
        type_ = "integer",
        json_path = ".status.rollout.canaryWeight",
        description = "The rollout's canary weight (percent)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // Only size() on metadata.name: kube-apiserver's CEL cost estimator takes metadata.name as
    // unbounded (before kubernetes/kubernetes#139573), so a regex over it, e.g. a DNS-1035 check,
    // exceeds the cost budget and the API server refuses the whole CRD. That format is checked
    // by the controller (validate.rs: InvalidSpec naming metadata.name). The backend Service
    // name is `<name>-<backend>`, hence the one character less.
    validation = Rule::new(format!(
        "has(self.spec.service) || self.spec.backends.all(b, size(self.metadata.name) + size(b.name) <= {})",
        MAX_LABEL_LENGTH - 1
    ))
    .message(Message::Message(format!("metadata.name + '-' + backend name must be at most {MAX_LABEL_LENGTH} characters: it names the backend Service"))),
    // With spec.service set the name names no Service, but it is still the value of the
    // splitscope.dev/traffic-split label on every object the controller makes (and in the
    // selector its teardown lists them with), and label values stop at 63 characters.
    validation = Rule::new(format!("size(self.metadata.name) <= {MAX_LABEL_LENGTH}"))
    .message(Message::Message(format!("metadata.name must be at most {MAX_LABEL_LENGTH} characters: it is the value of the splitscope.dev/traffic-split label on every object the controller makes"))),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(format!("self.backends.map(b, b.weight).sum() == {WEIGHT_SUM}"))
        .message(Message::Message(format!("spec.backends: weights must sum to {WEIGHT_SUM}"))),
    validation = Rule::new("self.backends.all(b, self.backends.exists_one(c, c.name == b.name))")
        .message("spec.backends: backend names must be unique"),
    validation = Rule::new(format!(
        "!has(self.service) || self.backends.all(b, size(self.service) + size(b.name) <= {})",
        MAX_LABEL_LENGTH - 1
    ))
    .message(Message::Message(format!("spec.service + '-' + backend name must be at most {MAX_LABEL_LENGTH} characters: it names the backend Service"))),
    validation = Rule::new("!has(self.routing) || !has(self.routing.parentRefs) || size(self.routing.parentRefs) == 0 || !has(self.routing.provider) || self.routing.provider == 'GatewayAPI'")
        .message("spec.routing.parentRefs is only allowed with provider GatewayAPI"),
    validation = Rule::new("!has(self.routing) || !has(self.routing.hostnames) || size(self.routing.hostnames) == 0 || !has(self.routing.provider) || self.routing.provider != 'None'")
        .message("spec.routing.hostnames needs a routing provider (GatewayAPI or Istio), not None"),
    validation = Rule::new("size(self.ports) == 1 || self.ports.all(p, has(p.name))")
        .message("spec.ports: every port needs a name when there is more than one"),
    validation = Rule::new("self.ports.all(p, !has(p.name) || self.ports.exists_one(q, has(q.name) && q.name == p.name))")
        .message("spec.ports: port names must be unique"),
    validation = Rule::new("self.ports.all(p, self.ports.exists_one(q, q.port == p.port && q.protocol == p.protocol))")
        .message("spec.ports: each port/protocol pair must be unique"),
    validation = Rule::new("!has(self.rollout) || self.backends.exists(b, b.name == self.rollout.stable)")
        .message("spec.rollout.stable must name a backend of spec.backends"),
    validation = Rule::new("!has(self.rollout) || self.backends.exists(b, b.name == self.rollout.canary)")
        .message("spec.rollout.canary must name a backend of spec.backends"),
    validation = Rule::new("!has(self.rollout) || self.rollout.stable != self.rollout.canary")
        .message("spec.rollout: stable and canary must be two different backends"),
    validation = Rule::new("!has(self.rollout) || self.rollout.steps.all(s, !has(s.setWeight) || s.setWeight <= self.backends.filter(b, b.name == self.rollout.stable || b.name == self.rollout.canary).map(b, b.weight).sum())")
        .message("spec.rollout.steps: setWeight must be within the pair's share (the stable's plus the canary's spec weight)"),
    validation = Rule::new("!has(self.rollout) || !has(self.routing) || !has(self.routing.provider) || self.routing.provider != 'None'")
        .message("spec.rollout needs a routing provider (GatewayAPI or Istio): with None nothing enforces the weights"),
)]
pub struct TrafficSplitSpec {
    /// Name of the root Service that clients call (a DNS-1035 label). Defaults to
    /// `metadata.name`. Backend Services are named `<service>-<backend>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), pattern(DNS_1035_LABEL))]
    pub service: Option<String>,

    /// Labels shared by the pods of every backend: the root Service's selector.
    #[schemars(schema_with = "label_map")]
    pub selector: BTreeMap<String, String>,

    /// Ports of the root and backend Services (1 to 16).
    #[schemars(length(min = 1, max = MAX_PORTS))]
    pub ports: Vec<ServicePort>,

    /// The backends (versions) and their share of the traffic in percent (1 to 16; weights sum
    /// to 100; names unique).
    #[schemars(length(min = 1, max = MAX_BACKENDS))]
    pub backends: Vec<Backend>,

    /// How the weights are enforced.
    #[serde(default)]
    pub routing: Routing,

    /// What happens to the root Service when the TrafficSplit is deleted: Delete (default)
    /// removes it with everything else; Orphan keeps it (ownerReference removed) so clients keep
    /// working.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Progressive delivery: the canary's weight moved step by step, measured at every step,
    /// rolled back on failures (docs/rollouts.md). While it runs and after it ended, the route's
    /// weights for the pair come from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// One port of the root and backend Services.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name (a DNS-1123 label); required when there is more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), pattern(DNS_1123_LABEL))]
    pub name: Option<String>,

    /// Port the Services listen on.
    #[schemars(range(min = MIN_PORT, max = MAX_PORT))]
    pub port: i32,

    /// Port (number or name) on the pods; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,

    /// TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// One backend (version): its pods are the `selector` pods that also carry `labels`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Backend name (a DNS-1123 label, unique in the TrafficSplit).
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), pattern(DNS_1123_LABEL))]
    pub name: String,

    /// Labels that tell this backend's pods apart (added to `selector`).
    #[schemars(schema_with = "label_map")]
    pub labels: BTreeMap<String, String>,

    /// Share of the traffic in percent (0 = none).
    #[schemars(range(min = MIN_WEIGHT, max = MAX_WEIGHT))]
    pub weight: i32,
}

/// How the weights are enforced.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// GatewayAPI (an HTTPRoute, default), Istio (DestinationRule + VirtualService) or None
    /// (Services only).
    #[serde(default)]
    pub provider: Provider,

    /// Gateway API only: where the HTTPRoute attaches. Empty = the root Service (GAMMA mesh mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PARENT_REFS))]
    pub parent_refs: Vec<ParentRef>,

    /// Host names the route matches (GatewayAPI: HTTPRoute hostnames; Istio: extra
    /// VirtualService hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_HOSTNAMES), schema_with = "hostname_list")]
    pub hostnames: Vec<String>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Provider {
    #[default]
    #[serde(rename = "GatewayAPI")]
    GatewayApi,
    Istio,
    None,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GatewayApi => "GatewayAPI",
            Provider::Istio => "Istio",
            Provider::None => "None",
        }
    }
}

/// A Gateway API `ParentReference` (same fields and limits as `gateway.networking.k8s.io/v1`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group of the parent (default `gateway.networking.k8s.io`; `""` for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUBDOMAIN_LENGTH), pattern(GATEWAY_GROUP))]
    pub group: Option<String>,

    /// Kind of the parent (default `Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), pattern(GATEWAY_KIND))]
    pub kind: Option<String>,

    /// Namespace of the parent (default: the TrafficSplit's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LABEL_LENGTH), pattern(DNS_1123_LABEL))]
    pub namespace: Option<String>,

    /// Name of the parent.
    #[schemars(length(min = 1, max = MAX_SUBDOMAIN_LENGTH))]
    pub name: String,

    /// Listener (Gateway) or port name (Service) to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_SUBDOMAIN_LENGTH), pattern(DNS_1123_SUBDOMAIN))]
    pub section_name: Option<String>,

    /// Port of the parent to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_PORT, max = MAX_PORT))]
    pub port: Option<i32>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Orphan,
}

/// Observed state, written by the controller through `/status`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending (children not there yet), Ready or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<Phase>,

    /// The root Service (`spec.service` or `metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,

    /// Backends and weights as `name=weight,...` (for the printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,

    /// `Ready`, `Accepted` and `BackendsAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONDITIONS))]
    pub conditions: Vec<Condition>,

    /// Per backend: its Service, weight and ready endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_BACKENDS))]
    pub backends: Vec<BackendStatus>,

    /// Progress of `spec.rollout` (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Ready,
    Degraded,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    pub name: String,
    /// The backend's Service.
    pub service: String,
    pub weight: i32,
    /// Ready endpoints of the backend's Service (from its EndpointSlices).
    pub ready_endpoints: i32,
}

/// Schema of a label map: 1 to 16 labels, values are label values (keys are checked by the
/// controller: a regex per key in CEL would be costed on unbounded strings).
fn label_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": MAX_LABELS,
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_LABEL_LENGTH,
            "pattern": LABEL_VALUE,
        },
    })
}

/// Schema of `status.phase`: a plain string enum (the derived `Option` schema would list `null`
/// among the enum values).
fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Pending (children not there yet), Ready or Degraded.",
        "type": "string",
        "enum": ["Pending", "Ready", "Degraded"],
    })
}

/// Schema of the hostname list: each item a Gateway API `Hostname`.
fn hostname_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SUBDOMAIN_LENGTH,
            "pattern": HOSTNAME,
        },
    })
}

impl TrafficSplit {
    /// Name of the root Service.
    pub fn service_name(&self) -> String {
        self.spec
            .service
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// Name of a backend's Service.
pub fn backend_service_name(service: &str, backend: &str) -> String {
    format!("{service}-{backend}")
}
