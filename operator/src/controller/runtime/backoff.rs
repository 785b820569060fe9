//! Per-object exponential backoff for failed reconciles: 5 s, 10 s, 20 s … capped at 5 min, reset
//! by the object's next success. One broken TrafficSplit never slows the others down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::context::{Context, Error};
use crate::controller::api::trafficsplit::TrafficSplit;

pub const BASE: Duration = Duration::from_secs(5);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<ObjectRef<TrafficSplit>, u32>>,
}

impl ErrorBackoff {
    /// Counts a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: ObjectRef<TrafficSplit>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        BASE.saturating_mul(factor).min(MAX)
    }

    pub fn succeeded(&self, key: &ObjectRef<TrafficSplit>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The Controller's error policy: retry this object after its own exponential backoff.
pub fn error_policy(ts: Arc<TrafficSplit>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff.failed(ObjectRef::from_obj(&*ts));
    tracing::warn!(
        trafficsplit = %ObjectRef::from_obj(&*ts),
        error = %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_object_caps_and_resets() {
        let b = ErrorBackoff::default();
        let a = ObjectRef::<TrafficSplit>::new("a").within("shop");
        let other = ObjectRef::<TrafficSplit>::new("b").within("shop");
        let waits: Vec<u64> = (0..8).map(|_| b.failed(a.clone()).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.failed(other.clone()).as_secs(), 5, "independent per object");
        for _ in 0..100 {
            b.failed(a.clone());
        }
        assert_eq!(b.failed(a.clone()), MAX);
        b.succeeded(&a);
        assert_eq!(b.failed(a).as_secs(), 5);
    }
}
