//! Who owns a live object the TrafficSplit wants to write, and so whether we may write it.

use kube::api::ObjectMeta;

use super::render::controlled_by;
use super::trafficsplit::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, TRAFFIC_SPLIT_LABEL};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No such object: we create it.
    Absent,
    /// Controlled by this TrafficSplit (ownerReference with its uid).
    Owned,
    /// No controller at all but our labels for this TrafficSplit name: left behind by an earlier
    /// TrafficSplit of the same name (deletionPolicy Orphan). We take it over.
    Adoptable,
    /// Anything else: someone else's object. We never write it; the text says whose it is.
    Foreign(String),
}

/// Classifies `live` (None = not found) against the TrafficSplit `name`/`uid`.
pub fn classify(live: Option<&ObjectMeta>, name: &str, uid: &str) -> Ownership {
    let Some(meta) = live else {
        return Ownership::Absent;
    };
    if controlled_by(meta.owner_references.as_ref(), uid) {
        return Ownership::Owned;
    }
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    if let Some(c) = controller {
        return Ownership::Foreign(format!("controlled by {} {}", c.kind, c.name));
    }
    let labels = meta.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE) && label(TRAFFIC_SPLIT_LABEL) == Some(name) {
        Ownership::Adoptable
    } else {
        Ownership::Foreign("not created by this TrafficSplit".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::UID;
    use crate::controller::render::owned_labels;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner(kind: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "splitscope.dev/v1alpha1".into(),
            kind: kind.into(),
            name: "checkout".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn absent_owned_adoptable_foreign() {
        assert_eq!(classify(None, "checkout", UID), Ownership::Absent);

        let owned = ObjectMeta {
            owner_references: Some(vec![owner("TrafficSplit", UID, true)]),
            ..ObjectMeta::default()
        };
        assert_eq!(classify(Some(&owned), "checkout", UID), Ownership::Owned);

        let orphan = ObjectMeta {
            labels: Some(owned_labels("checkout")),
            ..ObjectMeta::default()
        };
        assert_eq!(classify(Some(&orphan), "checkout", UID), Ownership::Adoptable);
        // Our labels, but for another TrafficSplit name: not ours to take.
        assert!(matches!(
            classify(Some(&orphan), "payments", UID),
            Ownership::Foreign(_)
        ));

        let plain = ObjectMeta::default();
        assert_eq!(
            classify(Some(&plain), "checkout", UID),
            Ownership::Foreign("not created by this TrafficSplit".into())
        );

        // A previous TrafficSplit of the same name that still controls it (uid differs).
        let other = ObjectMeta {
            labels: Some(owned_labels("checkout")),
            owner_references: Some(vec![owner("TrafficSplit", "other-uid", true)]),
            ..ObjectMeta::default()
        };
        assert_eq!(
            classify(Some(&other), "checkout", UID),
            Ownership::Foreign("controlled by TrafficSplit checkout".into())
        );

        // A non-controller reference to us does not make it ours.
        let weak = ObjectMeta {
            owner_references: Some(vec![owner("TrafficSplit", UID, false)]),
            ..ObjectMeta::default()
        };
        assert!(matches!(
            classify(Some(&weak), "checkout", UID),
            Ownership::Foreign(_)
        ));
    }
}
