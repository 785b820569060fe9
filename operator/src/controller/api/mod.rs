//! The TrafficSplit API: the resource type and its names (trafficsplit.rs), the one source of
//! every pattern and limit (patterns.rs), the CRD generated from them (crd.rs) and the
//! controller's own check of a spec (validate.rs).

pub(crate) mod crd;
pub mod duration;
pub(crate) mod patterns;
pub mod rollout;
pub mod template;
pub mod trafficsplit;
pub mod validate;
