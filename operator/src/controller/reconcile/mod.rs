//! One reconcile of a TrafficSplit: the finalizer entry point. kube-runtime's finalizer helper
//! adds `splitscope.dev/cleanup` first, then hands a live object to [`apply`] (validate → render
//! → observe → apply → prune → status) and a deleted one to the teardown (teardown.rs).

mod apply;
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::controller::api::trafficsplit::{FINALIZER, TrafficSplit};
use crate::controller::runtime::context::{Context, Error};
use crate::controller::runtime::metrics::ReconcileResult;
use crate::controller::teardown::cleanup;

/// Resync of a healthy TrafficSplit (repairs drift on kinds that are not watched).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry while another owner holds one of our objects (it is not watched).
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);
/// Retry while the provider's API is not served.
pub const ROUTE_API_RETRY: Duration = Duration::from_secs(120);

/// Entry point for the Controller: finalizer bookkeeping, metrics, backoff reset.
pub async fn reconcile(ts: Arc<TrafficSplit>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*ts);
    let namespace = ts.namespace().ok_or_else(|| Error::NoNamespace(ts.name_any()))?;
    let api: Api<TrafficSplit> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, ts, |event| async {
        match event {
            FinalizerEvent::Apply(ts) => apply::apply(ts, ctx.clone()).await,
            FinalizerEvent::Cleanup(ts) => cleanup(ts, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&key);
            ctx.metrics.reconciled(started, ReconcileResult::Success);
        }
        Err(_) => ctx.metrics.reconciled(started, ReconcileResult::Error),
    }
    result
}
