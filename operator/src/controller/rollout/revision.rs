//! The rollout's revision: a hash of what defines it — the canary backend's labels (which pods
//! are the canary) and `spec.rollout` but its `progressDeadline` (a limit on waiting, not a part
//! of what is rolled out: setting it on a rollout held at `CanaryUnavailable` must not restart
//! it). A new value starts a new rollout; the same value resumes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::controller::api::rollout::Rollout;

/// Ten hex digits of the SHA-256 of the canonical JSON (keys sorted, no spaces) of the canary's
/// labels and the rollout. Stable across controller versions and restarts, unlike std's hasher,
/// whose output may change between Rust releases.
pub fn revision(canary_labels: &BTreeMap<String, String>, rollout: &Rollout) -> String {
    let rollout = Rollout {
        progress_deadline: None,
        ..rollout.clone()
    };
    let mut canonical = String::new();
    write_canonical(
        &json!({"canaryLabels": canary_labels, "rollout": rollout}),
        &mut canonical,
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    digest.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON with object keys sorted whatever serde_json's map keeps (its `preserve_order` feature,
/// which any crate in the build may turn on, keeps insertion order instead).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::api::rollout::{Pause, RolloutStep};

    fn rollout() -> Rollout {
        Rollout {
            stable: "stable".into(),
            canary: "canary".into(),
            steps: vec![
                RolloutStep {
                    set_weight: Some(10),
                    pause: None,
                },
                RolloutStep {
                    set_weight: None,
                    pause: Some(Pause::default()),
                },
            ],
            analysis: None,
            progress_deadline: None,
        }
    }

    #[test]
    fn changes_with_the_canary_labels_or_the_rollout_only() {
        let labels = BTreeMap::from([("version".to_string(), "v2".to_string())]);
        let base = revision(&labels, &rollout());
        assert_eq!(base.len(), 10);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(revision(&labels.clone(), &rollout()), base, "deterministic");

        let v3 = BTreeMap::from([("version".to_string(), "v3".to_string())]);
        assert_ne!(revision(&v3, &rollout()), base);

        let mut other = rollout();
        other.steps[0].set_weight = Some(20);
        assert_ne!(revision(&labels, &other), base);

        let mut deadline = rollout();
        deadline.progress_deadline = Some("10m".into());
        assert_eq!(
            revision(&labels, &deadline),
            base,
            "progressDeadline is not part of it"
        );
    }

    /// Pinned: a controller upgrade must not restart every rollout in flight. The value is the
    /// SHA-256 of `{"canaryLabels":{"version":"v2"},"rollout":{"canary":"canary","stable":"stable",
    /// "steps":[{"setWeight":10},{"pause":{}}]}}` (keys sorted, no spaces), computed outside Rust
    /// (Python: `hashlib.sha256(json.dumps(v, sort_keys=True, separators=(",", ":")))`).
    #[test]
    fn is_stable_across_releases() {
        let labels = BTreeMap::from([("version".to_string(), "v2".to_string())]);
        assert_eq!(revision(&labels, &rollout()), "2fb09f3d6c");
    }
}
