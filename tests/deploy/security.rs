//! Security and contract assertions on the rendered workloads: the controller meets the Pod
//! Security "restricted" level; the agent has exactly the justified privileges; both are
//! configured only through flags/env vars the binary really has (`splitscope::cli`).

use std::collections::BTreeSet;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::kustomize::{KUSTOMIZATIONS, Rendered, render};

/// The agent's capabilities, each justified in deploy/agent/daemonset.yaml.
const AGENT_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_ADMIN"];

/// The host paths the agent mounts, all read-only.
const AGENT_HOST_PATHS: &[&str] = &[
    "/sys/kernel/btf",
    "/sys/kernel/tracing",
    "/sys/fs/bpf",
    "/sys/fs/cgroup",
];

fn controller(default: &Rendered) -> Deployment {
    serde_json::from_value(default.find("Deployment", "splitscope-controller").clone()).unwrap()
}

fn agent(default: &Rendered) -> DaemonSet {
    serde_json::from_value(default.find("DaemonSet", "splitscope-agent").clone()).unwrap()
}

fn pod_spec_of(value: &Value) -> Option<PodSpec> {
    serde_json::from_value(value["spec"]["template"]["spec"].clone()).ok()
}

fn only_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container per pod");
    assert!(spec.init_containers.is_none(), "no init containers");
    &spec.containers[0]
}

/// Pod Security Standards "restricted", for one pod spec (the subset that applies to what we
/// ship: no host namespaces, no hostPath, non-root, no privilege escalation, drop ALL, seccomp).
pub fn restricted_violations(spec: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true) {
        out.push("host namespace".to_owned());
    }
    for volume in spec.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            out.push(format!("hostPath volume {}", volume.name));
        }
    }
    let pod_seccomp = pod.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            out.push(format!("{}: privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false) {
            out.push(format!("{}: allowPrivilegeEscalation is not false", c.name));
        }
        let non_root = sc.run_as_non_root.or(pod.run_as_non_root) == Some(true);
        let uid = sc.run_as_user.or(pod.run_as_user);
        if !non_root || uid == Some(0) {
            out.push(format!("{}: may run as root", c.name));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.unwrap_or_default().iter().any(|d| d == "ALL") {
            out.push(format!("{}: does not drop ALL capabilities", c.name));
        }
        if caps
            .add
            .unwrap_or_default()
            .iter()
            .any(|a| a != "NET_BIND_SERVICE")
        {
            out.push(format!("{}: adds capabilities", c.name));
        }
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str())
            .or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{}: seccomp is not RuntimeDefault", c.name));
        }
    }
    out
}

/// The env var names (`SPLITSCOPE_*`) of `splitscope <subcommand>`'s flags, global ones included.
fn cli_env_vars(subcommand: &str) -> BTreeSet<String> {
    let cli = splitscope::cli::Cli::command();
    let sub = cli
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("splitscope has no subcommand {subcommand}"));
    cli.get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The port of `splitscope <subcommand>`'s default --metrics-addr.
fn default_metrics_port(subcommand: &str) -> i32 {
    let cli = splitscope::cli::Cli::command();
    let sub = cli.find_subcommand(subcommand).unwrap();
    let arg = sub
        .get_arguments()
        .find(|a| a.get_long() == Some("metrics-addr"))
        .expect("--metrics-addr");
    let default = arg.get_default_values()[0].to_string_lossy().into_owned();
    let addr: std::net::SocketAddr = default.parse().unwrap();
    i32::from(addr.port())
}

/// Checks the container's args and env against the CLI; returns the env it sets.
fn check_cli_contract(container: &Container, subcommand: &str) {
    assert_eq!(
        container.args.as_deref(),
        Some(&[subcommand.to_owned()][..]),
        "{}: runs `splitscope {subcommand}` (flags go in env vars)",
        container.name
    );
    assert!(container.command.is_none(), "the image's entrypoint is used");
    let known = cli_env_vars(subcommand);
    for env in container.env.iter().flatten() {
        if env.name.starts_with("SPLITSCOPE_") {
            assert!(
                known.contains(&env.name),
                "{}: {} is not a flag of `splitscope {subcommand}` (known: {known:?})",
                container.name,
                env.name
            );
        }
    }
}

fn env_field_ref(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone())
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// The container port a probe targets, resolving a named port.
fn probe_target(container: &Container, probe: &Option<Probe>) -> (String, i32) {
    let get = probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{}: probe is not an HTTP GET", container.name));
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{}: no port named {name}", container.name))
                .container_port
        }
    };
    (get.path.clone().unwrap_or_default(), port)
}

fn has_limits(container: &Container) -> bool {
    let r = container.resources.clone().unwrap_or_default();
    let has = |m: &Option<std::collections::BTreeMap<String, _>>, k: &str| {
        m.as_ref().is_some_and(|m| m.contains_key(k))
    };
    has(&r.requests, "cpu") && has(&r.requests, "memory") && has(&r.limits, "cpu") && has(&r.limits, "memory")
}

#[test]
fn controller_is_restricted_and_highly_available() {
    let default = render("deploy/default");
    let deployment = controller(&default);
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    let violations = restricted_violations(pod);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(pod.automount_service_account_token, Some(true));
    let c = only_container(pod);
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    let uid = sc
        .run_as_user
        .or(pod.security_context.as_ref().and_then(|s| s.run_as_user));
    assert!(uid.is_some_and(|u| u != 0), "explicit non-root uid");
    assert!(has_limits(c), "requests and limits for cpu and memory");
    let port = default_metrics_port("controller");
    assert_eq!(probe_target(c, &c.liveness_probe), ("/healthz".into(), port));
    assert_eq!(probe_target(c, &c.readiness_probe), ("/readyz".into(), port));
    assert!(
        pod.topology_spread_constraints.is_some() || pod.affinity.is_some(),
        "replicas spread over nodes"
    );
}

/// Rollouts measure against the Prometheus that `cargo xtask kind-up` installs beside the
/// controller (deploy/prometheus-grafana): the URL names its Service, namespace and port.
#[test]
fn the_controller_measures_rollouts_against_the_bundled_prometheus() {
    let default = render("deploy/default");
    let deployment = controller(&default);
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let url = env_value(only_container(&pod), "SPLITSCOPE_PROMETHEUS_URL")
        .expect("the controller's SPLITSCOPE_PROMETHEUS_URL");
    let monitoring = render("deploy/prometheus-grafana");
    let service = monitoring.find("Service", "splitscope-prometheus");
    let port = service["spec"]["ports"][0]["port"].as_i64().unwrap();
    assert_eq!(
        url,
        format!(
            "http://{}.{}.svc:{port}",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        )
    );
}

#[test]
fn controller_runs_with_leader_election_in_its_namespace() {
    let default = render("deploy/default");
    let deployment = controller(&default);
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let c = only_container(&pod);
    check_cli_contract(c, "controller");
    assert_eq!(
        env_field_ref(c, "SPLITSCOPE_LEASE_NAMESPACE").as_deref(),
        Some("metadata.namespace"),
        "the Lease lives where the Role grants it: the pod's namespace"
    );
    assert_eq!(env_field_ref(c, "POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        env_value(c, "SPLITSCOPE_NO_LEADER_ELECT"),
        None,
        "two replicas need leader election"
    );
    assert!(
        !c.args.iter().flatten().any(|a| a.contains("no-leader-elect")),
        "two replicas need leader election"
    );
}

#[test]
fn agent_has_exactly_the_justified_privileges() {
    let default = render("deploy/default");
    let daemonset = agent(&default);
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    assert_ne!(pod.host_network, Some(true), "no hostNetwork");
    assert_ne!(pod.host_pid, Some(true), "no hostPID");
    assert_ne!(pod.host_ipc, Some(true), "no hostIPC");
    assert_eq!(
        pod.security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref()
            .unwrap()
            .type_,
        "RuntimeDefault"
    );
    let c = only_container(&pod);
    let sc = c.security_context.clone().unwrap();
    assert_ne!(sc.privileged, Some(true), "not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "capabilities are only effective for uid 0 without ambient capabilities"
    );
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, AGENT_CAPABILITIES.iter().copied().collect());
    assert!(has_limits(c), "requests and limits for cpu and memory");

    let mounts: BTreeSet<(String, bool)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.read_only == Some(true)))
        .collect();
    let mut host_paths = BTreeSet::new();
    for volume in pod.volumes.iter().flatten() {
        let host = volume
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("unexpected non-hostPath volume {}", volume.name));
        host_paths.insert(host.path.clone());
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap_or_else(|| panic!("volume {} is not mounted", volume.name));
        assert_eq!(mount.read_only, Some(true), "{} is read-only", host.path);
        assert_ne!(
            mount.mount_propagation.as_deref(),
            Some("Bidirectional"),
            "Bidirectional propagation needs a privileged container"
        );
    }
    assert_eq!(
        host_paths,
        AGENT_HOST_PATHS.iter().map(|s| s.to_string()).collect()
    );
    assert!(mounts.iter().all(|(_, ro)| *ro));
}

#[test]
fn agent_is_configured_for_its_node() {
    let default = render("deploy/default");
    let daemonset = agent(&default);
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    let c = only_container(&pod);
    check_cli_contract(c, "agent");
    assert_eq!(
        env_field_ref(c, "SPLITSCOPE_NODE_NAME").as_deref(),
        Some("spec.nodeName")
    );
    assert_eq!(env_value(c, "SPLITSCOPE_KUBERNETES").as_deref(), Some("on"));
    assert_eq!(
        probe_target(c, &c.liveness_probe),
        ("/healthz".into(), default_metrics_port("agent"))
    );
    assert_eq!(
        probe_target(c, &c.readiness_probe),
        ("/readyz".into(), default_metrics_port("agent")),
        "ready once the probe is attached, not once the port answers"
    );
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| { t.key.is_none() && t.effect.is_none() && t.operator.as_deref() == Some("Exists") }),
        "runs on every node whatever its taints (control-plane, dedicated pools)"
    );
}

/// The metrics Services reach the port the binaries listen on by default.
#[test]
fn metrics_services_target_the_default_ports() {
    let default = render("deploy/default");
    for (service, workload_kind, workload, subcommand) in [
        (
            "splitscope-controller-metrics",
            "Deployment",
            "splitscope-controller",
            "controller",
        ),
        (
            "splitscope-agent-metrics",
            "DaemonSet",
            "splitscope-agent",
            "agent",
        ),
    ] {
        let svc = default.find("Service", service);
        let port = &svc["spec"]["ports"][0];
        assert_eq!(port["name"], "metrics", "{service}");
        let object = default.find(workload_kind, workload);
        let labels = &object["spec"]["template"]["metadata"]["labels"];
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{service} selects {workload}");
        }
        let pod = pod_spec_of(object).unwrap();
        let c = only_container(&pod);
        let target = port["targetPort"].as_str().unwrap();
        let container_port = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(target))
            .unwrap()
            .container_port;
        assert_eq!(container_port, default_metrics_port(subcommand), "{service}");
    }
}

/// Across every overlay: nothing privileged, no host namespaces, no privilege escalation,
/// hostPath only in the agent, images pinned by tag.
#[test]
fn nothing_privileged_anywhere() {
    for dir in KUSTOMIZATIONS {
        let rendered = render(dir);
        for object in &rendered.objects {
            let Some(pod) = pod_spec_of(object) else { continue };
            let what = format!("{dir}: {} {}", object["kind"], object["metadata"]["name"]);
            assert_ne!(pod.host_network, Some(true), "{what}: hostNetwork");
            assert_ne!(pod.host_pid, Some(true), "{what}: hostPID");
            assert_ne!(pod.host_ipc, Some(true), "{what}: hostIPC");
            let is_agent = object["kind"] == "DaemonSet" && object["metadata"]["name"] == "splitscope-agent";
            for c in &pod.containers {
                let sc = c.security_context.clone().unwrap_or_default();
                assert_ne!(sc.privileged, Some(true), "{what}: privileged");
                assert_eq!(
                    sc.allow_privilege_escalation,
                    Some(false),
                    "{what}: allowPrivilegeEscalation"
                );
                assert!(
                    sc.capabilities
                        .clone()
                        .and_then(|c| c.drop)
                        .is_some_and(|d| d.contains(&"ALL".to_owned())),
                    "{what}: drops ALL capabilities"
                );
                check_image_pinned(&what, c.image.as_deref().unwrap_or_default());
            }
            if !is_agent {
                let hostpath = pod.volumes.iter().flatten().any(|v| v.host_path.is_some());
                assert!(!hostpath, "{what}: hostPath outside the agent");
                let run_as_non_root =
                    pod.security_context.as_ref().and_then(|s| s.run_as_non_root) == Some(true);
                assert!(run_as_non_root, "{what}: runAsNonRoot");
            }
        }
    }
}

pub fn check_image_pinned(what: &str, image: &str) {
    let last = image.rsplit('/').next().unwrap_or_default();
    let tag = last.split_once(':').map(|(_, t)| t);
    assert!(
        tag.is_some_and(|t| !t.is_empty() && t != "latest") || image.contains("@sha256:"),
        "{what}: image {image:?} is not pinned by tag"
    );
}

#[test]
fn restricted_check_catches_root_and_added_capabilities() {
    let spec: PodSpec = serde_json::from_value(serde_json::json!({
        "containers": [{
            "name": "c",
            "securityContext": {
                "runAsUser": 0,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["BPF"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        }]
    }))
    .unwrap();
    let v = restricted_violations(&spec);
    assert!(v.contains(&"c: may run as root".to_owned()), "{v:?}");
    assert!(v.contains(&"c: adds capabilities".to_owned()), "{v:?}");
}

#[test]
fn cli_contract_knows_the_real_flags() {
    let agent = cli_env_vars("agent");
    assert!(agent.contains("SPLITSCOPE_NODE_NAME"));
    assert!(agent.contains("SPLITSCOPE_RING_SIZE"), "flattened probe args");
    assert!(!agent.contains("SPLITSCOPE_LEASE_NAMESPACE"));
    assert_eq!(default_metrics_port("agent"), 9102);
    assert_eq!(default_metrics_port("controller"), 8080);
}
