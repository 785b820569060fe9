//! The TrafficSplit's `.status`, computed from what one reconcile observed. Pure: no I/O.
//!
//! Conditions follow the metav1.Condition conventions: `lastTransitionTime` changes only when a
//! condition's status changes, so an unchanged observation yields an identical status and the
//! reconciler can skip the patch (no self-triggered loop).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::controller::api::rollout::RolloutStatus;
use crate::controller::api::trafficsplit::{BackendStatus, Phase, TrafficSplitStatus};

pub const READY: &str = "Ready";
pub const ACCEPTED: &str = "Accepted";
pub const BACKENDS_AVAILABLE: &str = "BackendsAvailable";

/// Condition reasons (part of the API: documented in docs/controller.md).
pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const CONFLICT: &str = "Conflict";
    pub const ROUTE_API_UNAVAILABLE: &str = "RouteAPIUnavailable";
    pub const VALID: &str = "Valid";
    pub const ALL_BACKENDS_READY: &str = "AllBackendsReady";
    pub const NO_READY_ENDPOINTS: &str = "NoReadyEndpoints";
    pub const ENDPOINTS_PENDING: &str = "EndpointsPending";
    pub const BACKENDS_UNAVAILABLE: &str = "BackendsUnavailable";
}

/// One backend as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendObservation {
    pub name: String,
    pub service: String,
    pub weight: i32,
    /// Ready endpoints from the backend Service's EndpointSlices; `None` while no slice exists.
    pub ready_endpoints: Option<i32>,
}

/// How the reconcile went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The spec is invalid; nothing was written.
    InvalidSpec(String),
    /// These objects belong to someone else (`Kind namespace/name: whose`); nothing was written.
    Conflict(Vec<String>),
    /// The Services were applied but the provider's route API is not served.
    RouteApiUnavailable(String),
    /// Everything was applied; the string names the route object(s), e.g. `HTTPRoute checkout`.
    Applied(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub generation: Option<i64>,
    pub service: String,
    pub backends: Vec<BackendObservation>,
    pub outcome: Outcome,
    /// The rollout's progress as decided in this reconcile (or as it was, when nothing was
    /// applied).
    pub rollout: Option<RolloutStatus>,
}

/// The status to write, given the current one (for transition times) and the time now.
pub fn compute(previous: Option<&TrafficSplitStatus>, obs: &Observation, now: &Time) -> TrafficSplitStatus {
    let generation = obs.generation;
    let availability = availability(&obs.backends);
    let (accepted, backends_available) = match &obs.outcome {
        Outcome::InvalidSpec(msg) => (
            ("False", reason::INVALID_SPEC, msg.clone()),
            (
                "Unknown",
                reason::INVALID_SPEC,
                "not evaluated: the spec is invalid".to_string(),
            ),
        ),
        _ => (
            ("True", reason::VALID, "the spec is valid".to_string()),
            availability.condition(),
        ),
    };
    let (ready, phase) = match &obs.outcome {
        Outcome::InvalidSpec(msg) => (("False", reason::INVALID_SPEC, msg.clone()), Phase::Degraded),
        Outcome::Conflict(objects) => (
            (
                "False",
                reason::CONFLICT,
                format!(
                    "not owned by this TrafficSplit, left untouched (delete or rename them to resolve): {}",
                    objects.join("; ")
                ),
            ),
            Phase::Degraded,
        ),
        Outcome::RouteApiUnavailable(api) => (
            (
                "False",
                reason::ROUTE_API_UNAVAILABLE,
                format!(
                    "{api} is not served by the API server (are its CRDs installed?); the Services are in place, the weights are not enforced"
                ),
            ),
            Phase::Degraded,
        ),
        Outcome::Applied(route) => match &availability {
            Availability::Ready(_) => (
                (
                    "True",
                    reason::RECONCILED,
                    format!("{} applied with weights {}", route, weights(&obs.backends)),
                ),
                Phase::Ready,
            ),
            Availability::Pending(msg) => (("False", reason::ENDPOINTS_PENDING, msg.clone()), Phase::Pending),
            Availability::Unavailable(msg) => (
                ("False", reason::BACKENDS_UNAVAILABLE, msg.clone()),
                Phase::Degraded,
            ),
        },
    };

    let wanted = [
        (READY, ready),
        (ACCEPTED, accepted),
        (BACKENDS_AVAILABLE, backends_available),
    ];
    let conditions = wanted
        .into_iter()
        .map(|(type_, (status, reason, message))| {
            let last = previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect();

    TrafficSplitStatus {
        observed_generation: generation,
        phase: Some(phase),
        service: Some(obs.service.clone()),
        weights: Some(weights(&obs.backends)),
        conditions,
        backends: obs
            .backends
            .iter()
            .map(|b| BackendStatus {
                name: b.name.clone(),
                service: b.service.clone(),
                weight: b.weight,
                ready_endpoints: b.ready_endpoints.unwrap_or(0),
            })
            .collect(),
        rollout: obs.rollout.clone(),
    }
}

/// `stable=95,canary=5`
pub fn weights(backends: &[BackendObservation]) -> String {
    backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.weight))
        .collect::<Vec<_>>()
        .join(",")
}

enum Availability {
    Ready(String),
    Pending(String),
    Unavailable(String),
}

impl Availability {
    fn condition(&self) -> (&'static str, &'static str, String) {
        match self {
            Availability::Ready(m) => ("True", reason::ALL_BACKENDS_READY, m.clone()),
            Availability::Pending(m) => ("Unknown", reason::ENDPOINTS_PENDING, m.clone()),
            Availability::Unavailable(m) => ("False", reason::NO_READY_ENDPOINTS, m.clone()),
        }
    }
}

/// Every backend that gets traffic (weight > 0) needs a ready endpoint. A backend whose Service
/// has no EndpointSlice yet is pending; one with slices but no ready endpoint is unavailable.
fn availability(backends: &[BackendObservation]) -> Availability {
    let weighted = || backends.iter().filter(|b| b.weight > 0);
    let down: Vec<String> = weighted()
        .filter(|b| b.ready_endpoints == Some(0))
        .map(|b| {
            format!(
                "backend {} (Service {}, weight {}) has no ready endpoints",
                b.name, b.service, b.weight
            )
        })
        .collect();
    if !down.is_empty() {
        return Availability::Unavailable(down.join("; "));
    }
    let pending: Vec<String> = weighted()
        .filter(|b| b.ready_endpoints.is_none())
        .map(|b| format!("no EndpointSlice yet for Service {}", b.service))
        .collect();
    if !pending.is_empty() {
        return Availability::Pending(pending.join("; "));
    }
    let counts: Vec<String> = backends
        .iter()
        .map(|b| format!("{}: {} ready", b.name, b.ready_endpoints.unwrap_or(0)))
        .collect();
    Availability::Ready(counts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The condition of `type_`, if present.
    fn condition<'a>(status: &'a TrafficSplitStatus, type_: &str) -> Option<&'a Condition> {
        status.conditions.iter().find(|c| c.type_ == type_)
    }

    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn backends(stable: Option<i32>, canary: Option<i32>) -> Vec<BackendObservation> {
        vec![
            BackendObservation {
                name: "stable".into(),
                service: "checkout-stable".into(),
                weight: 95,
                ready_endpoints: stable,
            },
            BackendObservation {
                name: "canary".into(),
                service: "checkout-canary".into(),
                weight: 5,
                ready_endpoints: canary,
            },
        ]
    }

    fn obs(backends: Vec<BackendObservation>, outcome: Outcome) -> Observation {
        Observation {
            rollout: None,
            generation: Some(3),
            service: "checkout".into(),
            backends,
            outcome,
        }
    }

    fn applied() -> Outcome {
        Outcome::Applied("HTTPRoute checkout".into())
    }

    fn cond(status: &TrafficSplitStatus, type_: &str) -> (String, String) {
        let c = condition(status, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn all_backends_ready_is_ready() {
        let s = compute(None, &obs(backends(Some(3), Some(1)), applied()), &at(100));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.service.as_deref(), Some("checkout"));
        assert_eq!(s.weights.as_deref(), Some("stable=95,canary=5"));
        assert_eq!(cond(&s, READY), ("True".into(), "Reconciled".into()));
        assert_eq!(cond(&s, ACCEPTED), ("True".into(), "Valid".into()));
        assert_eq!(
            cond(&s, BACKENDS_AVAILABLE),
            ("True".into(), "AllBackendsReady".into())
        );
        assert!(
            condition(&s, READY)
                .unwrap()
                .message
                .contains("stable=95,canary=5")
        );
        assert_eq!(s.backends[0].ready_endpoints, 3);
        assert_eq!(s.backends[1].service, "checkout-canary");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn a_weighted_backend_without_ready_endpoints_is_degraded() {
        let s = compute(None, &obs(backends(Some(3), Some(0)), applied()), &at(100));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(cond(&s, READY), ("False".into(), "BackendsUnavailable".into()));
        let c = condition(&s, BACKENDS_AVAILABLE).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NoReadyEndpoints")
        );
        assert!(
            c.message
                .contains("backend canary (Service checkout-canary, weight 5)")
        );
    }

    #[test]
    fn a_backend_with_weight_zero_may_be_empty() {
        let mut b = backends(Some(3), Some(0));
        b[0].weight = 100;
        b[1].weight = 0;
        let s = compute(None, &obs(b, applied()), &at(100));
        assert_eq!(s.phase, Some(Phase::Ready));
    }

    #[test]
    fn before_endpoint_slices_exist_it_is_pending() {
        let s = compute(None, &obs(backends(None, None), applied()), &at(100));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(cond(&s, READY), ("False".into(), "EndpointsPending".into()));
        assert_eq!(
            cond(&s, BACKENDS_AVAILABLE),
            ("Unknown".into(), "EndpointsPending".into())
        );
    }

    #[test]
    fn invalid_spec_names_the_field() {
        let msg = "spec.backends: weights must sum to 100, got 105".to_string();
        let s = compute(
            None,
            &obs(backends(None, None), Outcome::InvalidSpec(msg.clone())),
            &at(1),
        );
        assert_eq!(s.phase, Some(Phase::Degraded));
        let ready = condition(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert_eq!(ready.message, msg);
        assert_eq!(cond(&s, ACCEPTED), ("False".into(), "InvalidSpec".into()));
    }

    #[test]
    fn conflict_names_the_object() {
        let s = compute(
            None,
            &obs(
                backends(None, None),
                Outcome::Conflict(vec![
                    "Service shop/checkout: not created by this TrafficSplit".into(),
                ]),
            ),
            &at(1),
        );
        assert_eq!(s.phase, Some(Phase::Degraded));
        let ready = condition(&s, READY).unwrap();
        assert_eq!(ready.reason, "Conflict");
        assert!(
            ready.message.contains("Service shop/checkout"),
            "{}",
            ready.message
        );
        assert_eq!(cond(&s, ACCEPTED), ("True".into(), "Valid".into()));
    }

    #[test]
    fn missing_route_api_is_named() {
        let s = compute(
            None,
            &obs(
                backends(Some(1), Some(1)),
                Outcome::RouteApiUnavailable("gateway.networking.k8s.io/v1 HTTPRoute".into()),
            ),
            &at(1),
        );
        let ready = condition(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RouteAPIUnavailable")
        );
        assert!(ready.message.contains("gateway.networking.k8s.io/v1 HTTPRoute"));
        assert_eq!(s.phase, Some(Phase::Degraded));
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let first = compute(None, &obs(backends(Some(3), Some(1)), applied()), &at(100));
        // Same observation later: identical status, so the reconciler skips the patch.
        let again = compute(
            Some(&first),
            &obs(backends(Some(3), Some(1)), applied()),
            &at(200),
        );
        assert_eq!(first, again);

        // The canary loses its endpoints: Ready and BackendsAvailable flip, Accepted keeps its time.
        let down = compute(
            Some(&again),
            &obs(backends(Some(3), Some(0)), applied()),
            &at(300),
        );
        assert_eq!(condition(&down, READY).unwrap().last_transition_time, at(300));
        assert_eq!(
            condition(&down, BACKENDS_AVAILABLE).unwrap().last_transition_time,
            at(300)
        );
        assert_eq!(condition(&down, ACCEPTED).unwrap().last_transition_time, at(100));

        // A message change without a status change keeps the time too.
        let mut more = backends(Some(5), Some(1));
        more[0].ready_endpoints = Some(5);
        let up = compute(Some(&down), &obs(backends(Some(3), Some(1)), applied()), &at(400));
        let up2 = compute(Some(&up), &obs(more, applied()), &at(500));
        assert_eq!(condition(&up2, READY).unwrap().last_transition_time, at(400));
        assert_ne!(
            condition(&up2, BACKENDS_AVAILABLE).unwrap().message,
            condition(&up, BACKENDS_AVAILABLE).unwrap().message
        );
    }
}
