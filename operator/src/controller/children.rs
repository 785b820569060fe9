//! Reading, applying and deleting the child objects, with failures named by kind and object.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Error;
use super::trafficsplit::FIELD_MANAGER;

/// One kind of child in one namespace.
pub struct Children<K> {
    pub api: Api<K>,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
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

    fn error(&self, action: &'static str, name: &str, source: kube::Error) -> Error {
        Error::Child {
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

    pub async fn get(&self, name: &str) -> Result<Option<K>, Error> {
        self.api
            .get_opt(name)
            .await
            .map_err(|e| self.error("read", name, e))
    }

    /// Server-side apply with our field manager, forcing: we only call this on objects we own
    /// (or adopt), so a conflict can only be another manager's stale claim on our fields.
    pub async fn apply(&self, object: &K) -> Result<(), Error> {
        let name = object.name_any();
        self.api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map(drop)
            .map_err(|e| self.error("apply", &name, e))
    }

    /// Deletes the object if it is still the one we saw (uid precondition). Gone already, or
    /// replaced by another object of the same name: nothing to do.
    pub async fn delete(&self, object: &K) -> Result<bool, Error> {
        let name = object.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: object.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
            Err(e) => Err(self.error("delete", &name, e)),
        }
    }

    /// Applies a patch other than server-side apply (used to drop our ownerReference).
    pub async fn patch<P: Serialize + Debug>(&self, name: &str, patch: &Patch<P>) -> Result<bool, Error> {
        match self.api.patch(name, &PatchParams::default(), patch).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.error("patch", name, e)),
        }
    }
}
