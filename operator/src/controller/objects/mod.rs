//! The objects every TrafficSplit owns, whatever its routing provider: the Services (services.rs),
//! ownership — labels, controller ownerReferences, who owns a live object (ownership.rs) — and
//! the typed read/apply/delete of any owned kind, the one place that deletes (children.rs).

pub mod children;
pub mod ownership;
pub mod services;
