//! Typed access to the objects a TrafficSplit owns — read, apply, delete, describe, reference —
//! with failures named by kind and object, and an Event for every write. This is the one place
//! that deletes an owned object: pruning (reconcile) and teardown both go through
//! [`Children::delete_controlled`].

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ownership::{Ownership, classify, controlled_by, owned_selector};
use crate::controller::api::trafficsplit::{FIELD_MANAGER, TrafficSplit};
use crate::controller::events::{self, reason as event_reason};

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot {action} {kind} {namespace}/{name}: {source}")]
    Request {
        action: &'static str,
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list the Services of TrafficSplit {namespace}/{name}: {source}")]
    ListServices {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The TrafficSplit whose objects are read and written, and where the Events about them go.
pub struct Owner<'a> {
    pub ts: &'a TrafficSplit,
    pub client: Client,
    pub recorder: &'a Recorder,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl<'a> Owner<'a> {
    pub fn new(ts: &'a TrafficSplit, client: Client, recorder: &'a Recorder) -> Self {
        Self {
            namespace: ts.namespace().unwrap_or_default(),
            name: ts.name_any(),
            uid: ts.uid().unwrap_or_default(),
            ts,
            client,
            recorder,
        }
    }
}

/// A desired child with its live state and who owns it.
pub struct Observed<K> {
    pub desired: K,
    pub live: Option<K>,
    pub ownership: Ownership,
}

/// One kind of child in one namespace.
pub struct Children<K> {
    pub api: Api<K>,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
}

/// An API of kind `K` in `namespace`, or in every namespace.
pub fn scoped_api<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// The Services of `namespace`.
pub fn services(client: Client, namespace: &str) -> Children<Service> {
    Children::new(Api::namespaced(client, namespace), "v1", "Service", namespace)
}

impl<K> Children<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    pub fn new(api: Api<K>, api_version: &str, kind: &str, namespace: &str) -> Self {
        Self {
            api,
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
        }
    }

    /// Reference to the child, as the `related` object of an Event (which also keeps Events
    /// about different children apart in the Recorder's de-duplication).
    pub fn reference(&self, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            ..ObjectReference::default()
        }
    }

    fn error(&self, action: &'static str, name: &str, source: kube::Error) -> ChildError {
        ChildError::Request {
            action,
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: name.into(),
            source,
        }
    }

    /// `Kind namespace/name`, as named in status messages and Events.
    pub fn describe(&self, name: &str) -> String {
        format!("{} {}/{}", self.kind, self.namespace, name)
    }

    pub async fn get(&self, name: &str) -> Result<Option<K>, ChildError> {
        self.api
            .get_opt(name)
            .await
            .map_err(|e| self.error("read", name, e))
    }

    /// Reads the live copy of `desired` and classifies who owns it.
    pub async fn observe(&self, owner: &Owner<'_>, desired: K) -> Result<Observed<K>, ChildError> {
        let live = self.get(&desired.name_any()).await?;
        let ownership = classify(live.as_ref().map(|l| l.meta()), &owner.name, &owner.uid);
        Ok(Observed {
            desired,
            live,
            ownership,
        })
    }

    /// `Kind namespace/name (whose)` when the observed object is someone else's.
    pub fn conflict(&self, o: &Observed<K>) -> Option<String> {
        match &o.ownership {
            Ownership::Foreign(why) => Some(format!("{} ({why})", self.describe(&o.desired.name_any()))),
            _ => None,
        }
    }

    /// Applies one observed child unless `unchanged`, with an Event saying what happened.
    /// Never writes someone else's object.
    pub async fn apply_observed(
        &self,
        owner: &Owner<'_>,
        o: &Observed<K>,
        unchanged: bool,
    ) -> Result<(), ChildError> {
        let (reason, verb) = match o.ownership {
            Ownership::Absent => (event_reason::CREATED, "created"),
            Ownership::Adoptable => (event_reason::ADOPTED, "adopted"),
            Ownership::Owned if unchanged => return Ok(()),
            Ownership::Owned => (event_reason::UPDATED, "updated"),
            Ownership::Foreign(_) => return Ok(()),
        };
        let name = o.desired.name_any();
        // Server-side apply with our field manager, forcing: only on objects we own (or adopt),
        // so a conflict can only be another manager's stale claim on our fields.
        self.api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&o.desired),
            )
            .await
            .map_err(|e| self.error("apply", &name, e))?;
        let what = self.describe(&name);
        tracing::info!(trafficsplit = %ObjectRef::from_obj(owner.ts), object = %what, "{verb}");
        events::publish(
            owner.recorder,
            owner.ts,
            EventType::Normal,
            reason,
            "Apply",
            format!("{what} {verb}"),
            Some(self.reference(&name)),
        )
        .await;
        Ok(())
    }

    /// Deletes `name` if it exists and the TrafficSplit controls it.
    pub async fn delete_if_controlled(&self, owner: &Owner<'_>, name: &str) -> Result<(), ChildError> {
        match self.get(name).await? {
            Some(live) => self.delete_controlled(owner, &live).await,
            None => Ok(()),
        }
    }

    /// Deletes `live` if the TrafficSplit controls it, and only if it is still the object we
    /// saw (uid precondition); publishes an Event `Deleted`. Gone already, or replaced by another
    /// object of the same name: nothing to do.
    pub async fn delete_controlled(&self, owner: &Owner<'_>, live: &K) -> Result<(), ChildError> {
        if !controlled_by(live.meta().owner_references.as_ref(), &owner.uid) {
            return Ok(());
        }
        let name = live.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
            Err(e) => return Err(self.error("delete", &name, e)),
        }
        let what = self.describe(&name);
        tracing::info!(trafficsplit = %ObjectRef::from_obj(owner.ts), object = %what, "deleted");
        events::publish(
            owner.recorder,
            owner.ts,
            EventType::Normal,
            event_reason::DELETED,
            "Delete",
            format!("{what} deleted"),
            Some(self.reference(&name)),
        )
        .await;
        Ok(())
    }

    /// Applies a patch other than server-side apply (used to drop our ownerReference). `false`
    /// when the object is gone.
    pub async fn patch<P: Serialize + Debug>(
        &self,
        name: &str,
        patch: &Patch<P>,
    ) -> Result<bool, ChildError> {
        match self.api.patch(name, &PatchParams::default(), patch).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.error("patch", name, e)),
        }
    }
}

impl Children<Service> {
    /// The Services carrying the TrafficSplit's labels that it controls (what pruning and
    /// teardown may delete).
    pub async fn controlled(&self, owner: &Owner<'_>) -> Result<Vec<Service>, ChildError> {
        let list = self
            .api
            .list(&ListParams::default().labels(&owned_selector(&owner.name)))
            .await
            .map_err(|source| ChildError::ListServices {
                namespace: owner.namespace.clone(),
                name: owner.name.clone(),
                source,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter(|s| controlled_by(s.metadata.owner_references.as_ref(), &owner.uid))
            .collect())
    }
}
