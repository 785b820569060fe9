//! kind cluster tasks: image, kind-up, kind-down, e2e.
//!
//! Each task first checks for the tools it needs (docker and its daemon, kind, kubectl, a
//! reachable cluster) and names everything that is missing with how to get it, before it
//! changes anything.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::run::{cmd, root};

const CLUSTER: &str = "splitscope";
const CONTEXT: &str = "kind-splitscope";
const IMAGE: &str = "splitscope:dev";
const NAMESPACE: &str = "splitscope-system";
const KIND_CONFIG: &str = "deploy/kind-config.yaml";
const GATEWAY_API_VERSION: &str = "deploy/gateway-api/VERSION";
/// The Gateway API HTTPRoute CRD the repository carries (no download: air-gapped clusters work).
const GATEWAY_API_CRD: &str = "deploy/gateway-api/httproutes.yaml";
const ROLLOUT_TIMEOUT: &str = "--timeout=180s";
/// How long a tool probe (`docker info`, `kubectl version`) may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A command-line tool a task needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Docker,
    Kind,
    Kubectl,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Docker => "docker",
            Tool::Kind => "kind",
            Tool::Kubectl => "kubectl",
        }
    }

    /// A command that succeeds when the tool is installed, without contacting any server
    /// (`docker version` would fail on a stopped daemon; that is checked separately).
    fn version_args(self) -> &'static [&'static str] {
        match self {
            Tool::Docker => &["--version"],
            Tool::Kind => &["version"],
            Tool::Kubectl => &["version", "--client"],
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Tool::Docker => {
                "install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop"
            }
            Tool::Kind => {
                "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, \
                 e.g. `go install sigs.k8s.io/kind@latest`)"
            }
            Tool::Kubectl => "install kubectl (https://kubernetes.io/docs/tasks/tools/#kubectl)",
        }
    }
}

/// The outcome of running one probe command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It ran and succeeded; its standard output.
    Ok(String),
    /// The program is not on PATH.
    Missing,
    /// It ran and failed (or timed out); what it said.
    Failed(String),
}

/// Runs probe commands. The real machine runs them; the tests pass a fake.
pub trait Machine {
    fn probe(&self, program: &str, args: &[&str]) -> Probe;
}

/// This machine: runs the command with a timeout so a hung daemon cannot hang the task.
pub struct Host;

impl Machine for Host {
    fn probe(&self, program: &str, args: &[&str]) -> Probe {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Missing,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Probe::Failed(format!("no answer within {}s", PROBE_TIMEOUT.as_secs()));
                }
                Err(e) => return Probe::Failed(e.to_string()),
            }
        };
        // Probe commands print little, so reading after exit cannot fill the pipes and block.
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        if status.success() {
            Probe::Ok(stdout)
        } else {
            let said = if stderr.trim().is_empty() { stdout } else { stderr };
            Probe::Failed(format!("{status}: {}", said.trim()))
        }
    }
}

/// Checks that every tool is installed (and docker's daemon answers); the error lists every
/// problem at once, each with how to fix it.
pub fn check_tools(machine: &impl Machine, tools: &[Tool]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for &tool in tools {
        let program = tool.program();
        match machine.probe(program, tool.version_args()) {
            Probe::Missing => {
                problems.push(format!("{program} is not installed: {}", tool.install_hint()));
                continue;
            }
            Probe::Failed(e) => {
                problems.push(format!(
                    "{program} is installed but `{program} {}` failed ({e}): reinstall it, {}",
                    tool.version_args().join(" "),
                    tool.install_hint()
                ));
                continue;
            }
            Probe::Ok(_) => {}
        }
        if tool == Tool::Docker {
            let daemon = match machine.probe("docker", &["info", "--format", "{{.ServerVersion}}"]) {
                Probe::Ok(version) if !version.trim().is_empty() => None,
                Probe::Ok(_) => Some("`docker info` reports no server".to_owned()),
                Probe::Failed(e) => Some(e),
                Probe::Missing => Some("`docker info` could not be run".to_owned()),
            };
            if let Some(why) = daemon {
                problems.push(format!(
                    "docker is installed but its daemon is not reachable ({}): start it (e.g. \
                     `sudo systemctl start docker`, or open Docker Desktop), make sure your user \
                     may use it (the `docker` group), or point DOCKER_HOST at a running engine",
                    why.trim()
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!("cannot continue:\n  - {}", problems.join("\n  - "))
}

/// Checks that kubectl reaches a cluster with its current context (for `e2e`).
pub fn check_cluster(machine: &impl Machine) -> anyhow::Result<String> {
    let context = match machine.probe("kubectl", &["config", "current-context"]) {
        Probe::Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => bail!(
            "kubectl has no current context: create a cluster with `cargo xtask kind-up`, or set \
             KUBECONFIG to the kubeconfig of a running cluster"
        ),
    };
    match machine.probe("kubectl", &["version", "--request-timeout=10s"]) {
        Probe::Ok(_) => Ok(context),
        Probe::Missing => bail!("kubectl is not installed: {}", Tool::Kubectl.install_hint()),
        Probe::Failed(e) => bail!(
            "kubectl cannot reach the cluster of context `{context}` ({e}): start it (`cargo xtask \
             kind-up` for a kind cluster) or switch context (`kubectl config use-context ...`)"
        ),
    }
}

/// Checks that the carried Gateway API CRD is the release pinned in `deploy/gateway-api/VERSION`
/// (its `gateway.networking.k8s.io/bundle-version` annotation), so the two cannot drift apart.
pub fn check_gateway_api_crd(version_file: &str, crd: &str) -> anyhow::Result<()> {
    let version = version_file.trim();
    let numbers: Vec<&str> = version.strip_prefix('v').unwrap_or("").split('.').collect();
    if numbers.len() != 3 || numbers.iter().any(|n| n.parse::<u32>().is_err()) {
        bail!("{GATEWAY_API_VERSION} must hold a release tag like v1.2.3, found {version:?}");
    }
    let bundle = crd
        .lines()
        .find_map(|l| l.trim().strip_prefix("gateway.networking.k8s.io/bundle-version:"))
        .map(str::trim);
    if bundle != Some(version) {
        bail!("{GATEWAY_API_CRD} is release {bundle:?}, but {GATEWAY_API_VERSION} pins {version}");
    }
    Ok(())
}

/// Whether `kind get clusters` output lists `name`.
fn lists_cluster(kind_get_clusters: &str, name: &str) -> bool {
    kind_get_clusters.lines().any(|l| l.trim() == name)
}

/// Output of a command that must succeed.
fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["--context", CONTEXT];
    all.extend_from_slice(args);
    cmd("kubectl", &all)
}

/// `cargo xtask image`: docker build -t splitscope:dev .
pub fn image() -> anyhow::Result<()> {
    check_tools(&Host, &[Tool::Docker])?;
    build_image()
}

fn build_image() -> anyhow::Result<()> {
    cmd("docker", &["build", "-t", IMAGE, "."])
}

/// `cargo xtask kind-up`: cluster, image, Gateway API, Splitscope, Prometheus + Grafana.
pub fn up() -> anyhow::Result<()> {
    check_tools(&Host, &[Tool::Docker, Tool::Kind, Tool::Kubectl])?;
    let version_file = std::fs::read_to_string(root().join(GATEWAY_API_VERSION))
        .with_context(|| format!("reading {GATEWAY_API_VERSION}"))?;
    let crd = std::fs::read_to_string(root().join(GATEWAY_API_CRD))
        .with_context(|| format!("reading {GATEWAY_API_CRD}"))?;
    check_gateway_api_crd(&version_file, &crd)?;

    let existed = lists_cluster(&output("kind", &["get", "clusters"])?, CLUSTER);
    if existed {
        eprintln!("xtask: kind cluster `{CLUSTER}` exists; updating it");
    } else {
        cmd(
            "kind",
            &[
                "create",
                "cluster",
                "--name",
                CLUSTER,
                "--config",
                KIND_CONFIG,
                "--wait",
                "120s",
            ],
        )?;
    }

    build_image()?;
    cmd("kind", &["load", "docker-image", IMAGE, "--name", CLUSTER])?;
    prepare_nodes()?;

    // Server-side apply: the Gateway API CRD is too large for client-side apply's annotation.
    kubectl(&["apply", "--server-side", "-f", GATEWAY_API_CRD])?;
    kubectl(&["apply", "--server-side", "-k", "deploy/default"])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/trafficsplits.splitscope.dev",
        "--timeout=60s",
    ])?;
    kubectl(&["apply", "--server-side", "-k", "deploy/prometheus-grafana"])?;
    if existed {
        // Same tag, new image: make the pods start from what was just loaded.
        kubectl(&[
            "-n",
            NAMESPACE,
            "rollout",
            "restart",
            "deployment/splitscope-controller",
            "daemonset/splitscope-agent",
        ])?;
    }

    for workload in [
        "deployment/splitscope-controller",
        "daemonset/splitscope-agent",
        "deployment/splitscope-prometheus",
        "deployment/splitscope-grafana",
    ] {
        kubectl(&["-n", NAMESPACE, "rollout", "status", workload, ROLLOUT_TIMEOUT]).with_context(|| {
            format!(
                "{workload} did not become ready. Look at:\n  kubectl --context {CONTEXT} -n \
                     {NAMESPACE} get pods\n  kubectl --context {CONTEXT} -n {NAMESPACE} describe \
                     {workload}\n  kubectl --context {CONTEXT} -n {NAMESPACE} logs {workload}\n\
                     and docs/deploy.md \"Troubleshooting\""
            )
        })?;
    }
    print_next_steps();
    Ok(())
}

/// The agent reads tracepoint ids from tracefs and needs kernel BTF. kind nodes are containers
/// on the host kernel: mount tracefs in each node when it is not mounted there, and warn early
/// when the kernel has no BTF (the agent would fail on every node).
fn prepare_nodes() -> anyhow::Result<()> {
    let nodes = output("kind", &["get", "nodes", "--name", CLUSTER])?;
    for node in nodes.lines().map(str::trim).filter(|n| !n.is_empty()) {
        cmd(
            "docker",
            &[
                "exec",
                node,
                "sh",
                "-c",
                "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing",
            ],
        )?;
        if cmd("docker", &["exec", node, "test", "-e", "/sys/kernel/btf/vmlinux"]).is_err() {
            eprintln!(
                "xtask: warning: {node} has no /sys/kernel/btf/vmlinux: the host kernel lacks BTF \
                 (CONFIG_DEBUG_INFO_BTF=y), so the agent cannot load its CO-RE probe there"
            );
        }
    }
    Ok(())
}

fn print_next_steps() {
    let current = Host.probe("kubectl", &["config", "current-context"]);
    let switch = match current {
        Probe::Ok(c) if c.trim() == CONTEXT => String::new(),
        _ => format!("  kubectl config use-context {CONTEXT}\n"),
    };
    println!(
        "\nSplitscope is running on kind cluster `{CLUSTER}` (context {CONTEXT}).\n\n\
         \x20 Grafana     http://localhost:3000   dashboards in folder Splitscope (anonymous \
         viewer; admin/admin to edit)\n\
         \x20 Prometheus  http://localhost:9090\n\n\
         Next:\n{switch}\
         \x20 kubectl apply -f examples/demo/                 # namespace shop, checkout v1 + v2, a client\n\
         \x20 kubectl apply -f examples/checkout-95-5.yaml    # the 95/5 TrafficSplit\n\
         \x20 kubectl -n shop get trafficsplits -w            # watch its status\n\
         \x20 kubectl -n shop describe trafficsplit checkout  # conditions and events\n\
         \x20 kubectl apply -f examples/checkout-50-50.yaml   # move the weights\n\
         \x20 kubectl apply -f examples/rollout/demo.yaml -f examples/rollout/web.yaml\n\
         \x20 kubectl -n rollout-demo get ts web -w          # a rollout the kernel's signal rolls back\n\
         \x20 cargo xtask e2e                                 # end-to-end tests on this cluster\n\
         \x20 cargo xtask kind-down                           # delete the cluster\n"
    );
}

/// `cargo xtask kind-down`: delete the cluster.
pub fn down() -> anyhow::Result<()> {
    check_tools(&Host, &[Tool::Docker, Tool::Kind])?;
    if !lists_cluster(&output("kind", &["get", "clusters"])?, CLUSTER) {
        eprintln!("xtask: no kind cluster `{CLUSTER}`; nothing to delete");
        return Ok(());
    }
    cmd("kind", &["delete", "cluster", "--name", CLUSTER])
}

/// `cargo xtask e2e`: the ignored end-to-end tests, against kubectl's current context.
pub fn e2e() -> anyhow::Result<()> {
    check_tools(&Host, &[Tool::Kubectl])?;
    let context = check_cluster(&Host)?;
    eprintln!("xtask: running the end-to-end tests against context `{context}`");
    cmd(
        "cargo",
        &[
            "test",
            "-p",
            "splitscope-tests",
            "--test",
            "e2e",
            "--",
            "--ignored",
        ],
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Answers probes from a table keyed by the command line; unknown commands are missing.
    #[derive(Default)]
    struct Fake(HashMap<String, Probe>);

    impl Fake {
        fn with(mut self, command: &str, probe: Probe) -> Self {
            self.0.insert(command.to_owned(), probe);
            self
        }

        fn everything() -> Self {
            Fake::default()
                .with("docker --version", Probe::Ok("Docker version 28.2.2\n".into()))
                .with(
                    "docker info --format {{.ServerVersion}}",
                    Probe::Ok("28.2.2\n".into()),
                )
                .with("kind version", Probe::Ok("kind v0.29.0\n".into()))
                .with(
                    "kubectl version --client",
                    Probe::Ok("Client Version: v1.33.1\n".into()),
                )
        }
    }

    impl Machine for Fake {
        fn probe(&self, program: &str, args: &[&str]) -> Probe {
            let key = format!("{program} {}", args.join(" "));
            self.0.get(&key).cloned().unwrap_or(Probe::Missing)
        }
    }

    #[test]
    fn all_tools_present_passes() {
        check_tools(&Fake::everything(), &[Tool::Docker, Tool::Kind, Tool::Kubectl]).unwrap();
    }

    #[test]
    fn names_every_missing_tool_and_only_those() {
        let fake = Fake::default().with("kubectl version --client", Probe::Ok("v1.33".into()));
        let err = check_tools(&fake, &[Tool::Docker, Tool::Kind, Tool::Kubectl])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker is not installed: install Docker Engine"),
            "{err}"
        );
        assert!(err.contains("kind is not installed: install kind"), "{err}");
        assert!(!err.contains("kubectl"), "{err}");
    }

    #[test]
    fn docker_without_a_daemon_is_named() {
        let fake = Fake::everything().with(
            "docker info --format {{.ServerVersion}}",
            Probe::Failed(
                "exit status: 1: Cannot connect to the Docker daemon at unix:///var/run/docker.sock".into(),
            ),
        );
        let err = check_tools(&fake, &[Tool::Docker]).unwrap_err().to_string();
        assert!(
            err.contains("docker is installed but its daemon is not reachable"),
            "{err}"
        );
        assert!(err.contains("Cannot connect to the Docker daemon"), "{err}");
        // An empty server version (docker info printing nothing) is no daemon either.
        let fake = Fake::everything().with("docker info --format {{.ServerVersion}}", Probe::Ok("\n".into()));
        assert!(check_tools(&fake, &[Tool::Docker]).is_err());
    }

    #[test]
    fn a_broken_tool_is_not_reported_as_missing() {
        let fake =
            Fake::everything().with("kind version", Probe::Failed("exit status: 2: bad binary".into()));
        let err = check_tools(&fake, &[Tool::Kind]).unwrap_err().to_string();
        assert!(
            err.contains("kind is installed but `kind version` failed"),
            "{err}"
        );
    }

    #[test]
    fn e2e_needs_a_reachable_cluster() {
        let fake = Fake::everything();
        let err = check_cluster(&fake).unwrap_err().to_string();
        assert!(err.contains("no current context"), "{err}");

        let fake = fake
            .with(
                "kubectl config current-context",
                Probe::Ok("kind-splitscope\n".into()),
            )
            .with(
                "kubectl version --request-timeout=10s",
                Probe::Failed("exit status: 1: connection refused".into()),
            );
        let err = check_cluster(&fake).unwrap_err().to_string();
        assert!(
            err.contains("cannot reach the cluster of context `kind-splitscope`"),
            "{err}"
        );
        assert!(err.contains("connection refused"), "{err}");

        let fake = fake.with(
            "kubectl version --request-timeout=10s",
            Probe::Ok("Server".into()),
        );
        assert_eq!(check_cluster(&fake).unwrap(), "kind-splitscope");
    }

    #[test]
    fn the_carried_gateway_api_crd_is_the_pinned_release() {
        let crd = "metadata:\n  annotations:\n    gateway.networking.k8s.io/bundle-version: v1.6.1\n";
        check_gateway_api_crd("v1.6.1\n", crd).unwrap();
        let err = check_gateway_api_crd("v1.7.0\n", crd).unwrap_err().to_string();
        assert!(err.contains("v1.6.1") && err.contains("v1.7.0"), "{err}");
        assert!(check_gateway_api_crd("latest", crd).is_err());
        assert!(check_gateway_api_crd("v1.6", crd).is_err());
        let pinned = std::fs::read_to_string(root().join(GATEWAY_API_VERSION)).unwrap();
        let carried = std::fs::read_to_string(root().join(GATEWAY_API_CRD)).unwrap();
        check_gateway_api_crd(&pinned, &carried).unwrap();
    }

    #[test]
    fn finds_the_cluster_in_kind_output() {
        assert!(lists_cluster("other\nsplitscope\n", CLUSTER));
        assert!(!lists_cluster("splitscope-old\n", CLUSTER));
        assert!(!lists_cluster("", CLUSTER));
    }

    /// The image builds the probe like `cargo xtask build-ebpf` does: with every package of the
    /// Build set (xtask/src/deps.rs is the one list).
    #[test]
    fn dockerfile_installs_the_build_packages() {
        let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
        let install = dockerfile
            .split("apt-get install")
            .nth(1)
            .expect("the Dockerfile installs packages with apt-get");
        let words: Vec<&str> = install
            .split("&&")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        for package in crate::deps::packages(crate::deps::Set::Build) {
            assert!(words.contains(&package), "Dockerfile does not install {package}");
        }
    }

    #[test]
    fn kind_config_names_the_cluster_the_tasks_use() {
        let config = std::fs::read_to_string(root().join(KIND_CONFIG)).unwrap();
        assert!(
            config.lines().any(|l| l.trim() == format!("name: {CLUSTER}")),
            "{config}"
        );
    }
}
