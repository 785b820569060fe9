//! Progressive delivery (`spec.rollout`): the canary's weight moved step by step, measured
//! against Prometheus at every step (with the agent's failed opens as a built-in signal), rolled
//! back on its own when the canary is worse.
//!
//! `engine` decides (pure); `analysis` measures (Prometheus); `revision` says when a new rollout
//! starts; `action` reads what people ask through the annotation. The reconciler runs them
//! between validation and rendering: the route's weights for the pair come from the decision.

pub mod action;
pub mod analysis;
pub mod engine;
pub mod revision;
