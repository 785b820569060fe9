//! Container id and pod UID from a cgroup path, for the path shapes kubelet and the container
//! runtimes create:
//!
//! - systemd cgroup driver: `.../kubepods-burstable-pod<uid_with_underscores>.slice/
//!   cri-containerd-<id>.scope` (also `crio-<id>.scope`, `docker-<id>.scope`; kind nodes add a
//!   `kubelet.slice/kubelet-kubepods...` prefix);
//! - cgroupfs driver: `.../kubepods/burstable/pod<uid>/<id>`.

/// What a cgroup path says about the container it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRef {
    /// The runtime's container id (64 hex digits), as in a Pod's `containerStatuses[].containerID`
    /// after the `containerd://` prefix.
    pub container_id: Option<String>,
    /// The pod's metadata.uid, with dashes.
    pub pod_uid: Option<String>,
}

const RUNTIME_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-", "containerd-", "cri-o-"];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn container_id_of(component: &str) -> Option<&str> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    let id = RUNTIME_PREFIXES
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(stem);
    is_container_id(id).then_some(id)
}

fn pod_uid_of(component: &str) -> Option<String> {
    let stem = component.strip_suffix(".slice").unwrap_or(component);
    let at = stem.rfind("pod")?;
    // `pod` starts the component (cgroupfs) or follows a dash (systemd slice names).
    if at != 0 && !stem[..at].ends_with('-') {
        return None;
    }
    let uid = stem[at + 3..].replace('_', "-");
    let valid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    valid.then_some(uid)
}

/// Parses a cgroup path (absolute or relative to the cgroup root).
pub fn parse(path: &str) -> ContainerRef {
    let mut found = ContainerRef::default();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = pod_uid_of(component) {
            found.pod_uid = Some(uid);
        } else if let Some(id) = container_id_of(component) {
            found.container_id = Some(id.to_owned());
        }
    }
    found
}

/// The id in a `containerStatuses[].containerID` such as `containerd://<id>`.
pub fn status_container_id(status_id: &str) -> &str {
    status_id.split_once("://").map_or(status_id, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7c1e8a4b-2f3d-4e5f-9a0b-1c2d3e4f5a6b";

    fn uid_underscored() -> String {
        UID.replace('-', "_")
    }

    #[test]
    fn systemd_driver_containerd() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid_underscored()
        );
        assert_eq!(
            parse(&path),
            ContainerRef {
                container_id: Some(ID.into()),
                pod_uid: Some(UID.into())
            }
        );
    }

    #[test]
    fn systemd_driver_crio_and_docker_and_guaranteed_pods() {
        let crio = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            uid_underscored()
        );
        assert_eq!(parse(&crio).container_id.as_deref(), Some(ID));
        assert_eq!(parse(&crio).pod_uid.as_deref(), Some(UID));
        let docker = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/docker-{ID}.scope",
            uid_underscored()
        );
        assert_eq!(parse(&docker).container_id.as_deref(), Some(ID));
    }

    #[test]
    fn kind_node_prefix() {
        let path = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            uid_underscored()
        );
        let parsed = parse(&path);
        assert_eq!(parsed.container_id.as_deref(), Some(ID));
        assert_eq!(parsed.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver() {
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            parse(&path),
            ContainerRef {
                container_id: Some(ID.into()),
                pod_uid: Some(UID.into())
            }
        );
        assert_eq!(
            parse(&format!("/kubepods/pod{UID}/{ID}")).pod_uid.as_deref(),
            Some(UID)
        );
    }

    #[test]
    fn pod_level_and_non_kubernetes_paths() {
        let pod_only = format!("/kubepods.slice/kubepods-pod{}.slice", uid_underscored());
        assert_eq!(parse(&pod_only).container_id, None);
        assert_eq!(parse(&pod_only).pod_uid.as_deref(), Some(UID));
        assert_eq!(parse("/"), ContainerRef::default());
        assert_eq!(
            parse("/user.slice/user-1000.slice/session-2.scope"),
            ContainerRef::default()
        );
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope"))
                .container_id
                .as_deref(),
            Some(ID)
        );
        // Near misses are not ids.
        assert_eq!(parse("/kubepods/burstable/podnot-a-uid/abc").pod_uid, None);
        assert_eq!(
            parse(&format!("/x/cri-containerd-{}.scope", &ID[..63])).container_id,
            None
        );
        assert_eq!(parse(&format!("/ipod{UID}")).pod_uid, None);
    }

    #[test]
    fn status_ids_drop_the_runtime_scheme() {
        assert_eq!(status_container_id(&format!("containerd://{ID}")), ID);
        assert_eq!(status_container_id(&format!("cri-o://{ID}")), ID);
        assert_eq!(status_container_id(ID), ID);
    }
}
