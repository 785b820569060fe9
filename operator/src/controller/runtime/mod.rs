//! What runs the reconciler: the Controller and its watches (watches.rs, given the reconcile
//! function by the composition root), leader election (leader.rs), the per-object backoff and
//! error policy (backoff.rs), metrics (metrics.rs), the context every reconcile shares
//! (context.rs) and the EndpointSlice cache's ready-endpoint counts (endpoints.rs).

pub(crate) mod backoff;
pub(crate) mod context;
pub(crate) mod endpoints;
pub(crate) mod leader;
pub mod metrics;
pub(crate) mod watches;
