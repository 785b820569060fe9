//! What every end-to-end test needs from the real cluster: the CRDs installed (ours from
//! `crds/`, Gateway API's HTTPRoute from the copy in `deploy/gateway-api/` — nothing downloaded,
//! so an air-gapped cluster works — the way `cargo xtask kind-up` installs them), a fresh namespace, and the controller running
//! in-process against that namespace (`--no-leader-elect`, metrics on a free port).

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use splitscope::cli::ControllerArgs;
use tokio_util::sync::CancellationToken;

/// How long a test waits for the cluster to converge.
pub const CONVERGE: Duration = Duration::from_secs(90);

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run kubectl (is it installed?): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`kubectl {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Installs the CRDs once per test process; panics with the reason if that is impossible.
pub fn install_crds() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let root = workspace_root();
        let gateway = root.join("deploy/gateway-api/httproutes.yaml");
        kubectl(&["apply", "--server-side", "-f", &gateway.to_string_lossy()])?;
        let crds = root.join("crds");
        kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crds.to_string_lossy(),
        ])?;
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/trafficsplits.splitscope.dev",
            "crd/httproutes.gateway.networking.k8s.io",
        ])?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("cannot install the CRDs into the cluster: {e}");
    }
}

/// A client for the cluster KUBECONFIG names; panics with the reason if there is none.
pub async fn client() -> Client {
    splitscope::telemetry::init(splitscope::cli::LogFormat::Text);
    Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("no Kubernetes cluster: set KUBECONFIG (e.g. `kind create cluster`): {e}"))
}

/// A namespace of its own for one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("ss-e2e-{test}-{:x}", nanos ^ std::process::id());
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"splitscope.dev/e2e": "true"}}
        }))
        .unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort, without waiting; a failed test leaves its namespace for inspection
        // when SPLITSCOPE_E2E_KEEP is set.
        if std::env::var_os("SPLITSCOPE_E2E_KEEP").is_none() {
            let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        }
    }
}

/// The controller running in this process, scoped to one namespace.
pub struct RunningController {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningController {
    pub fn start(namespace: &str) -> Self {
        let args = ControllerArgs {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            namespace: Some(namespace.to_string()),
            no_leader_elect: true,
            lease_namespace: None,
            lease_name: "splitscope-e2e".into(),
            prometheus_url: None,
            prometheus_token_file: None,
            prometheus_ca_file: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(splitscope::controller::run_until(args, stop.clone()));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops it and fails the test if it had stopped on an error.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("the controller failed: {e:#}"),
                Ok(Err(e)) => panic!("the controller task panicked: {e}"),
                Err(_) => panic!("the controller did not stop within 30s of cancel"),
            }
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `probe` until it returns `Some`, or panics after `CONVERGE` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {CONVERGE:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes `name` if it exists and waits until it is gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let _ = api.delete(name, &DeleteParams::default()).await;
    eventually(&format!("{name} to be deleted"), || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// `kubectl get` output, for checks of what a user sees (printer columns).
pub fn kubectl_get(args: &[&str]) -> String {
    kubectl(args).unwrap_or_else(|e| panic!("{e}"))
}
