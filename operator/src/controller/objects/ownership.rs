//! Ownership of the objects a TrafficSplit writes: the labels and controller ownerReference every
//! owned object carries, and who owns a live object — so whether we may write it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::ObjectMeta;

use crate::controller::api::trafficsplit::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, TRAFFIC_SPLIT_LABEL, TrafficSplit,
};

/// The labels every owned object carries.
pub fn owned_labels(ts_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (TRAFFIC_SPLIT_LABEL.to_string(), ts_name.to_string()),
    ])
}

/// Label selector matching every object owned by the TrafficSplit `ts_name`.
pub fn owned_selector(ts_name: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TRAFFIC_SPLIT_LABEL}={ts_name}")
}

/// Metadata of an owned object named `object_name`: our labels (plus `extra`) and a controller
/// ownerReference to `ts`.
pub fn owned_meta(ts: &TrafficSplit, object_name: String, extra: Option<(&str, &str)>) -> ObjectMeta {
    let mut labels = owned_labels(&ts.metadata.name.clone().unwrap_or_default());
    if let Some((k, v)) = extra {
        labels.insert(k.to_string(), v.to_string());
    }
    // blockOwnerDeletion: foreground deletion of the TrafficSplit waits for its children.
    let owner = ts.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    });
    ObjectMeta {
        name: Some(object_name),
        namespace: ts.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Whether `owner_refs` holds a controller reference to the TrafficSplit with `uid`.
pub fn controlled_by(owner_refs: Option<&Vec<OwnerReference>>, uid: &str) -> bool {
    owner_refs.is_some_and(|refs| {
        refs.iter()
            .any(|r| r.controller == Some(true) && r.uid == uid && r.kind == "TrafficSplit")
    })
}

/// Labels and ownerReferences we set are all present on `live` (the part of every kind's drift
/// comparison that is about ownership; the API server may add labels of its own).
pub fn meta_matches(live: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let empty = BTreeMap::new();
    let live_labels = live.labels.as_ref().unwrap_or(&empty);
    let labels_ok = desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| live_labels.get(k) == Some(v));
    let owners_ok = desired.owner_references.iter().flatten().all(|want| {
        live.owner_references.iter().flatten().any(|have| {
            have.uid == want.uid
                && have.controller == want.controller
                && have.block_owner_deletion == want.block_owner_deletion
        })
    });
    labels_ok && owners_ok
}

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
    use crate::controller::testing::fixtures::UID;
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
