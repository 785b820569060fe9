//! The report step of a reconcile: what was observed (the backends through the EndpointSlice
//! cache) turned into `.status` by the pure status computation, written through `/status` only
//! when it changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::controller::api::patterns::MAX_BACKENDS;
use crate::controller::api::trafficsplit::{
    FIELD_MANAGER, TrafficSplit, TrafficSplitStatus, backend_service_name,
};
use crate::controller::runtime::context::{Context, Error};
use crate::controller::runtime::endpoints::ready_endpoints;
use crate::controller::status::{self, BackendObservation, Observation, Outcome};

/// The backends as observed through the EndpointSlice cache.
pub fn observation(ts: &TrafficSplit, ctx: &Context, outcome: Outcome) -> Observation {
    let namespace = ts.namespace().unwrap_or_default();
    let service = ts.service_name();
    let slices = ctx.slices.state();
    // Bounded like the status schema (an invalid spec may list more backends than allowed).
    let backends = ts
        .spec
        .backends
        .iter()
        .take(MAX_BACKENDS)
        .map(|b| {
            let backend_service = backend_service_name(&service, &b.name);
            BackendObservation {
                name: b.name.clone(),
                ready_endpoints: ready_endpoints(&slices, &namespace, &backend_service),
                service: backend_service,
                weight: b.weight,
            }
        })
        .collect();
    Observation {
        generation: ts.metadata.generation,
        service,
        backends,
        outcome,
        // As it was; the Apply path replaces it with this reconcile's decision.
        rollout: ts.status.as_ref().and_then(|s| s.rollout.clone()),
    }
}

/// Now, at the one-second precision `metav1.Time` keeps (so a round trip compares equal).
pub(super) fn now() -> Time {
    let secs = Timestamp::now().as_second();
    Time(Timestamp::from_second(secs).unwrap_or_else(|_| Timestamp::now()))
}

/// What writing the status came to.
pub enum StatusWrite {
    /// It was the same already: nothing written.
    Unchanged(TrafficSplitStatus),
    /// Written.
    Done(TrafficSplitStatus),
    /// Someone else changed the object since it was read (409 on the resourceVersion
    /// precondition): nothing written, nothing of this reconcile counts; the watch brings the
    /// newer object and the next reconcile starts from it.
    Stale,
}

/// Writes the status through `/status` (server-side apply) unless it would not change.
///
/// With a rollout, the write carries the object's resourceVersion as a precondition: two
/// controllers that overlap (an old leader still finishing a reconcile) cannot both count a
/// measurement or both take a step from the same status.
pub async fn write_status(ts: &TrafficSplit, ctx: &Context, obs: Observation) -> Result<StatusWrite, Error> {
    let new: TrafficSplitStatus = status::compute(ts.status.as_ref(), &obs, &now());
    if ts.status.as_ref() == Some(&new) {
        return Ok(StatusWrite::Unchanged(new));
    }
    let namespace = ts.namespace().unwrap_or_default();
    let name = ts.name_any();
    let api: Api<TrafficSplit> = Api::namespaced(ctx.client.clone(), &namespace);
    let guarded = ts.spec.rollout.is_some() || ts.status.as_ref().is_some_and(|s| s.rollout.is_some());
    let mut patch = json!({
        "apiVersion": TrafficSplit::api_version(&()),
        "kind": TrafficSplit::kind(&()),
        "status": new,
    });
    if guarded && let Some(version) = &ts.metadata.resource_version {
        patch["metadata"] = json!({"name": name, "resourceVersion": version});
    }
    match api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Done(new)),
        Err(kube::Error::Api(status)) if guarded && status.code == 409 => {
            tracing::debug!(trafficsplit = %format!("{namespace}/{name}"), "status changed since it was read: starting over from the newer one");
            Ok(StatusWrite::Stale)
        }
        Err(source) => Err(Error::Status {
            namespace,
            name,
            source,
        }),
    }
}
