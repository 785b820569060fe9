//! cgroup id → pod: the cgroup path (cgroups.rs), the container id and pod UID in it
//! (containers.rs), then this node's Pods (pods.rs). Standalone there are no pods and the
//! labels stay empty.

use std::sync::Arc;

use super::cgroups::CgroupPaths;
use super::containers;
use super::pods::{PodDirectory, PodRef};

/// The result of attributing one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub pod: PodRef,
    /// False when the cgroup path or its pod is not known yet: ask again later.
    pub complete: bool,
}

pub struct Attributor {
    cgroups: CgroupPaths,
    pods: Option<Arc<PodDirectory>>,
}

impl Attributor {
    pub fn new(cgroups: CgroupPaths, pods: Option<Arc<PodDirectory>>) -> Self {
        Self { cgroups, pods }
    }

    /// Whether pod labels are being resolved at all (in a cluster).
    pub fn in_cluster(&self) -> bool {
        self.pods.is_some()
    }

    /// Changes whenever an earlier answer may have changed.
    pub fn generation(&self) -> u64 {
        self.pods.as_ref().map_or(0, |p| p.generation())
    }

    /// Whether a series labelled with this pod may still count opens: the pod is on this node,
    /// or the agent runs standalone (no pods to go away).
    pub fn pod_is_live(&self, namespace: &str, pod: &str) -> bool {
        self.pods.as_ref().is_none_or(|p| p.has_pod(namespace, pod))
    }

    pub fn attribute(&mut self, cgroup_id: u64) -> Attribution {
        // Standalone, or without a cgroup v2 tree to map ids with (warned at start-up): no pod
        // will ever be found, so there is nothing to wait for.
        let Some(pods) = self.pods.clone().filter(|_| self.cgroups.has_root()) else {
            return Attribution {
                pod: PodRef::default(),
                complete: true,
            };
        };
        let Some(path) = self.cgroups.path(cgroup_id) else {
            return Attribution::default();
        };
        let parsed = containers::parse(path);
        if parsed.container_id.is_none() && parsed.pod_uid.is_none() {
            // Not a pod's cgroup (a system service, a user session): nothing more to learn.
            return Attribution {
                pod: PodRef::default(),
                complete: true,
            };
        }
        match pods.lookup(parsed.container_id.as_deref(), parsed.pod_uid.as_deref()) {
            Some(pod) => Attribution {
                complete: !pod.container.is_empty() || parsed.container_id.is_none(),
                pod,
            },
            None => Attribution::default(),
        }
    }
}
