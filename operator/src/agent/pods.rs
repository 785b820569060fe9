//! The Pods on this node, by container id and by pod UID, kept current by a kube reflector
//! (field selector `spec.nodeName=<node>`, so the agent watches its own node's Pods only).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::containers::status_container_id;
use crate::cli::KubernetesMode;

/// Where an open happened, in Kubernetes terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Container id → pod and container; pod UID → pod (for pause/sandbox processes and for
/// containers whose status has no id yet).
#[derive(Debug, Default)]
pub struct PodIndex {
    pub by_container: HashMap<String, PodRef>,
    pub by_uid: HashMap<String, PodRef>,
    /// (namespace, name) of every Pod: which pods' metric series are still live.
    pub names: HashSet<(String, String)>,
}

impl PodIndex {
    pub fn build<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut index = Self::default();
        for pod in pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            index.names.insert((namespace.clone(), name.clone()));
            if let Some(uid) = &pod.metadata.uid {
                index.by_uid.insert(
                    uid.clone(),
                    PodRef {
                        namespace: namespace.clone(),
                        pod: name.clone(),
                        container: String::new(),
                    },
                );
            }
            let Some(status) = &pod.status else { continue };
            let statuses = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
                .chain(status.ephemeral_container_statuses.iter().flatten());
            for cs in statuses {
                if let Some(id) = cs.container_id.as_deref().filter(|id| !id.is_empty()) {
                    index.by_container.insert(
                        status_container_id(id).to_owned(),
                        PodRef {
                            namespace: namespace.clone(),
                            pod: name.clone(),
                            container: cs.name.clone(),
                        },
                    );
                }
            }
        }
        index
    }
}

/// The shared, live index. `generation` changes whenever the index does, so cached
/// attributions know when to look again.
#[derive(Debug, Default)]
pub struct PodDirectory {
    index: RwLock<PodIndex>,
    generation: AtomicU64,
}

impl PodDirectory {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn replace(&self, index: PodIndex) {
        if let Ok(mut guard) = self.index.write() {
            *guard = index;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether this node has a Pod of that name (a lock poisoned by a panic answers yes, so
    /// that nothing is forgotten on its account).
    pub fn has_pod(&self, namespace: &str, pod: &str) -> bool {
        self.index.read().map_or(true, |index| {
            index.names.contains(&(namespace.to_owned(), pod.to_owned()))
        })
    }

    /// Looks up a container id, falling back to the pod UID.
    pub fn lookup(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Option<PodRef> {
        let index = self.index.read().ok()?;
        container_id
            .and_then(|id| index.by_container.get(id))
            .or_else(|| pod_uid.and_then(|uid| index.by_uid.get(uid)))
            .cloned()
    }
}

/// Runs the reflector until `shutdown`, rebuilding the index on every change.
pub async fn reflect(
    client: Client,
    node: String,
    directory: Arc<PodDirectory>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            item = stream.next() => match item {
                None => return,
                Some(Err(err)) => tracing::warn!(error = %err, "watching this node's Pods"),
                Some(Ok(event)) => {
                    if !matches!(event, watcher::Event::InitApply(_) | watcher::Event::Init) {
                        rebuild(&reader, &directory);
                    }
                }
            },
        }
    }
}

fn rebuild(reader: &Store<Pod>, directory: &PodDirectory) {
    let pods = reader.state();
    directory.replace(PodIndex::build(pods.iter().map(|p| p.as_ref())));
}

/// Decides whether the agent talks to Kubernetes: `off` never; `auto` when a cluster is
/// configured and answers, else standalone (and says so); `on` requires it.
pub async fn connect(mode: KubernetesMode) -> anyhow::Result<Option<Client>> {
    if mode == KubernetesMode::Off {
        return Ok(None);
    }
    let attempt = async {
        let config = kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no Kubernetes configuration (in-cluster or KUBECONFIG): {e}"))?;
        let cluster = config.cluster_url.to_string();
        let client = Client::try_from(config)?;
        match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(e)) => Err(anyhow::anyhow!("the API server at {cluster} did not answer: {e}")),
            Err(_) => Err(anyhow::anyhow!(
                "the API server at {cluster} did not answer within 5 s"
            )),
        }
    };
    match (attempt.await, mode) {
        (Ok(client), _) => Ok(Some(client)),
        (Err(e), KubernetesMode::On) => Err(e.context("--kubernetes on")),
        (Err(e), _) => {
            tracing::info!("running standalone (process and cgroup only, no pod labels): {e:#}");
            Ok(None)
        }
    }
}

/// This node's name: `--node-name`, else the host name (what kubelet uses by default).
pub fn node_name(flag: Option<&str>) -> String {
    flag.map(str::to_owned).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
    use kube::api::ObjectMeta;

    pub fn pod(ns: &str, name: &str, uid: &str, containers: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(
                    containers
                        .iter()
                        .map(|(n, id)| ContainerStatus {
                            name: (*n).into(),
                            container_id: Some(format!("containerd://{id}")),
                            ..ContainerStatus::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn indexes_containers_and_pod_uids() {
        let pods = [
            pod(
                "shop",
                "checkout-1",
                "uid-1",
                &[("app", "aaa"), ("sidecar", "bbb")],
            ),
            pod("kube-system", "dns", "uid-2", &[("coredns", "ccc")]),
        ];
        let dir = PodDirectory::default();
        let g0 = dir.generation();
        dir.replace(PodIndex::build(pods.iter()));
        assert_ne!(dir.generation(), g0);
        let r = dir.lookup(Some("bbb"), None).unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("shop", "checkout-1", "sidecar")
        );
        let by_uid = dir.lookup(Some("unknown"), Some("uid-2")).unwrap();
        assert_eq!((by_uid.pod.as_str(), by_uid.container.as_str()), ("dns", ""));
        assert_eq!(dir.lookup(None, None), None);
        assert!(dir.has_pod("shop", "checkout-1"));
        assert!(!dir.has_pod("kube-system", "checkout-1"));
        dir.replace(PodIndex::build(pods[1..].iter()));
        assert!(!dir.has_pod("shop", "checkout-1"), "deleted pods are gone");
        assert!(dir.has_pod("kube-system", "dns"));
    }
}
