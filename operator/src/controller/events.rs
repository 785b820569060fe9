//! Kubernetes Events about a TrafficSplit (kube's `Recorder`, events.k8s.io/v1), shown by
//! `kubectl describe trafficsplit`. Publishing is best effort: a failed Event is logged and never
//! fails the reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::controller::api::trafficsplit::TrafficSplit;

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "splitscope.dev/controller";

/// Event reasons (documented in docs/controller.md).
pub mod reason {
    pub const CREATED: &str = "Created";
    pub const UPDATED: &str = "Updated";
    pub const ADOPTED: &str = "Adopted";
    pub const DELETED: &str = "Deleted";
    pub const ORPHANED: &str = "Orphaned";
    pub const CONFLICT: &str = "Conflict";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ROUTE_API_UNAVAILABLE: &str = "RouteAPIUnavailable";
    pub const CLEANED_UP: &str = "CleanedUp";
}

pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter {
        controller: REPORTING_CONTROLLER.into(),
        instance,
    }
}

/// Publishes one Event about `ts`, optionally naming the child object it concerns.
pub async fn publish(
    recorder: &Recorder,
    ts: &TrafficSplit,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    child: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note)),
        action: action.into(),
        secondary: child,
    };
    if let Err(e) = recorder.publish(&event, &ts.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish Event");
    }
}

/// The Events API caps `note` at 1 kB.
fn truncate(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut cut = MAX - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_events_api_limit() {
        assert_eq!(truncate("short".into()), "short");
        let long = truncate("é".repeat(900));
        assert!(long.len() <= 1000 && long.ends_with("..."), "{}", long.len());
    }
}
