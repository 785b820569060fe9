//! Rollouts end to end on one machine: the real `splitscope controller` binary against the fake
//! API server (tests/src/fake_api_server.rs), a real Prometheus (Debian's package) scraping an
//! exporter of per-pod `splitscope_file_opens_total` counters that each test moves the way a
//! healthy, broken or idle canary would, and the built-in `openErrors` analysis deciding.
//!
//! Needs Debian's `prometheus` (`cargo xtask deps test`); fails naming it when absent. No BPF and
//! no root: the agent's side is the exporter here (the kernel tier checks the agent itself).

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use splitscope_tests::fake_api_server::FakeApiServer;
use splitscope_tests::opens_exporter::OpensExporter;
use splitscope_tests::process_group::GroupChild;
use splitscope_tests::prometheus::{Job, Prometheus};
use splitscope_tests::served::{self, PodEndpoint, controller_resources};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const TS: &str = "/apis/splitscope.dev/v1alpha1/trafficsplits";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const EVENTS: &str = "/apis/events.k8s.io/v1/events";
const STABLE_PODS: [&str; 2] = ["checkout-v1-a", "checkout-v1-b"];
const CANARY_PODS: [&str; 1] = ["checkout-v2-a"];
/// Every wait in these tests: long enough for several analysis intervals on a busy machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// The backend's EndpointSlice, with one ready endpoint per pod.
fn slice(backend: &str, pods: &[&str]) -> Value {
    let uids: Vec<String> = pods.iter().map(|p| format!("uid-{p}")).collect();
    let addresses: Vec<String> = (0..pods.len())
        .map(|i| format!("10.0.{}.{i}", backend.len()))
        .collect();
    let endpoints: Vec<PodEndpoint<'_>> = pods
        .iter()
        .zip(&uids)
        .zip(&addresses)
        .map(|((pod, uid), address)| PodEndpoint { pod, uid, address })
        .collect();
    served::checkout_slice(backend, &endpoints)
}

/// shop/checkout, stable v1 at 100 and canary v2 at 0, with `rollout`.
fn traffic_split(rollout: Value) -> Value {
    served::checkout(&[("stable", "v1", 100), ("canary", "v2", 0)], Some(rollout))
}

/// `steps` judged every 3 s by `openErrors` (at most +5 points) and by a query that the canary
/// opens files at all (the template variables at work; `> 0` makes an idle canary no data, not a
/// failure).
fn rollout(steps: Value, failure_limit: u32, consecutive_error_limit: u32) -> Value {
    json!({
        "stable": "stable",
        "canary": "canary",
        "steps": steps,
        "analysis": {
            "interval": "3s",
            "failureLimit": failure_limit,
            "consecutiveErrorLimit": consecutive_error_limit,
            "metrics": [
                {"name": "open-errors", "openErrors": {"maxIncrease": 0.05}},
                {"name": "canary-opens",
                 "query": "sum(increase(splitscope_file_opens_total{namespace=\"{{ namespace }}\",pod=~\"{{ canaryPods }}\"}[{{ interval }}])) > 0",
                 "thresholdRange": {"min": 1}},
            ],
        },
    })
}

/// One rollout's world: the fake API server, the exporter, Prometheus and the controller.
struct World {
    api: FakeApiServer,
    exporter: OpensExporter,
    prometheus: Prometheus,
    controller: GroupChild,
    metrics_addr: String,
    kubeconfig: std::path::PathBuf,
    _kube_dir: tempfile::TempDir,
}

impl World {
    async fn start(rollout: Value) -> Self {
        let exporter = OpensExporter::start().await.unwrap();
        for pod in STABLE_PODS {
            exporter.set_rate("shop", pod, 20, 0, "ENOENT");
        }
        for pod in CANARY_PODS {
            exporter.set_rate("shop", pod, 20, 0, "ENOENT");
        }
        let prometheus = Prometheus::start(&[Job {
            name: "splitscope-agent-metrics",
            target: exporter.target(),
            labels: vec![("node", "test-node")],
        }])
        .await;
        let api = FakeApiServer::start(
            controller_resources(false),
            vec![
                traffic_split(rollout),
                slice("stable", &STABLE_PODS),
                slice("canary", &CANARY_PODS),
            ],
        )
        .await
        .unwrap();
        let kube_dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(kube_dir.path()).unwrap();
        let (controller, metrics_addr) = controller(&kubeconfig, &prometheus.url()).await;
        Self {
            api,
            exporter,
            prometheus,
            controller,
            metrics_addr,
            kubeconfig,
            _kube_dir: kube_dir,
        }
    }

    fn object(&self) -> Value {
        self.api.object(TS, "shop", "checkout").expect("the TrafficSplit")
    }

    fn rollout_status(&self) -> Value {
        self.object()["status"]["rollout"].clone()
    }

    /// (stable, canary) weights of the HTTPRoute.
    fn route_weights(&self) -> Option<(i64, i64)> {
        let route = self.api.object(ROUTES, "shop", "checkout")?;
        let refs = route["spec"]["rules"][0]["backendRefs"].as_array()?.clone();
        let weight = |name: &str| {
            refs.iter()
                .find(|r| r["name"] == name)
                .and_then(|r| r["weight"].as_i64())
        };
        Some((weight("checkout-stable")?, weight("checkout-canary")?))
    }

    /// Every Event's reason, once per occurrence (kube's Recorder folds repeats of one reason
    /// and action into a series with a count).
    fn event_reasons(&self) -> Vec<String> {
        let mut events = self.api.objects(EVENTS);
        events.sort_by_key(|e| e["eventTime"].as_str().map(str::to_owned));
        events
            .iter()
            .flat_map(|e| {
                let count = e["series"]["count"].as_u64().unwrap_or(1) as usize;
                std::iter::repeat_n(e["reason"].as_str().unwrap_or_default().to_owned(), count)
            })
            .collect()
    }

    /// Waits until `done(status.rollout)`; fails with the status and events otherwise.
    async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.rollout_status();
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {what}: status.rollout {status:#}\nevents {:?}",
                self.event_reasons()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until an Event with `reason` exists (Events follow the status write they report),
    /// then returns every reason so far.
    async fn wait_for_event(&self, reason: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reasons = self.event_reasons();
            if reasons.iter().any(|r| r == reason) {
                return reasons;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} Event: {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn controller_metrics(&self) -> String {
        splitscope_tests::http::get(&self.metrics_addr, "/metrics")
            .await
            .body
    }

    /// `splitscope rollout ARGS` against this world's API server.
    async fn cli(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(env!("CARGO_BIN_EXE_splitscope-under-test"))
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("rollout")
            .args(args))
        .await
    }
}

/// How long one kubectl or CLI call may take: each is a handful of requests to a local server.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `command` to its end: whether it succeeded, and its stdout then stderr. A call that hangs
/// fails the test after COMMAND_TIMEOUT (and is killed), instead of keeping the controller and
/// Prometheus of this test running until CI gives up.
async fn run(command: &mut Command) -> (bool, String) {
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The real controller binary (killed with its process group when dropped, or when this test
/// process dies), its logs forwarded; returns it and its metrics address.
async fn controller(kubeconfig: &std::path::Path, prometheus_url: &str) -> (GroupChild, String) {
    let mut child = GroupChild::spawn(
        Command::new(env!("CARGO_BIN_EXE_splitscope-under-test"))
            .envs([
                ("KUBECONFIG", kubeconfig.as_os_str()),
                ("POD_NAME", OsStr::new("splitscope-controller-rollout-test")),
            ])
            .args([
                "--log-format",
                "json",
                "controller",
                "--no-leader-elect",
                "--metrics-addr",
                "127.0.0.1:0",
                "--prometheus-url",
                prometheus_url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("start the controller");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[controller] {line}");
            let _ = tx.send(line);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(addr) = v["fields"]["addr"].as_str()
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("serving /metrics"))
            {
                return addr.to_owned();
            }
        }
        panic!("the controller exited before serving /metrics")
    })
    .await
    .expect("the controller never served /metrics");
    (child, addr)
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or_default()
}

fn metric<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_healthy_canary_promotes_through_every_step() {
    let steps = json!([
        {"setWeight": 20},
        {"pause": {"duration": "2s"}},
        {"setWeight": 50},
        {"pause": {}},
        {"setWeight": 100},
    ]);
    let world = World::start(rollout(steps, 0, 2)).await;

    let paused = world
        .wait_for("awaiting promotion at 50%", |s| {
            s["pauseReason"] == "AwaitingPromotion" && s["canaryWeight"] == 50
        })
        .await;
    assert_eq!(paused["stepIndex"], 3);
    assert_eq!(
        world.route_weights(),
        Some((50, 50)),
        "the route carries the rollout's weights"
    );
    assert!(
        metric(&paused, "open-errors")["successes"].as_i64() >= Some(2),
        "{paused:#}"
    );
    assert!(
        metric(&paused, "canary-opens")["successes"].as_i64() >= Some(2),
        "{paused:#}"
    );

    // A person promotes through the CLI, waiting for the controller to take it.
    let (ok, out) = world
        .cli(&["promote", "checkout", "-n", "shop", "--wait", "30"])
        .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("promote requested for TrafficSplit shop/checkout"),
        "{out}"
    );

    let done = world.wait_for("Succeeded", |s| phase(s) == "Succeeded").await;
    assert_eq!(
        (done["canaryWeight"].clone(), done["stableWeight"].clone()),
        (json!(100), json!(0))
    );
    assert_eq!(world.route_weights(), Some((0, 100)));
    let reasons = world.wait_for_event("RolloutSucceeded").await;
    for reason in [
        "RolloutStarted",
        "WeightStepped",
        "RolloutPaused",
        "RolloutPromoted",
        "RolloutSucceeded",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event in {reasons:?}"
        );
    }
    assert_eq!(
        reasons.iter().filter(|r| *r == "WeightStepped").count(),
        3,
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r == "RolledBack" || r == "AnalysisFailed"),
        "{reasons:?}"
    );

    let metrics = world.controller_metrics().await;
    for line in [
        "splitscope_rollout_phase{name=\"checkout\",namespace=\"shop\",phase=\"Succeeded\"} 1",
        "splitscope_rollout_phase{name=\"checkout\",namespace=\"shop\",phase=\"Progressing\"} 0",
        "splitscope_rollout_canary_weight{name=\"checkout\",namespace=\"shop\"} 100",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(
        metrics.contains("splitscope_analysis_measurements_total{metric=\"open-errors\",name=\"checkout\",namespace=\"shop\",outcome=\"success\"}"),
        "{metrics}"
    );
    let (ok, out) = world.cli(&["status", "checkout", "-n", "shop"]).await;
    assert!(ok && out.contains("Phase:         Succeeded"), "{out}");
}

#[tokio::test]
async fn a_canary_whose_failed_open_ratio_rises_rolls_back() {
    let steps = json!([{"setWeight": 20}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]);
    let world = World::start(rollout(steps, 1, 2)).await;
    world
        .wait_for("awaiting promotion at 50%", |s| {
            s["pauseReason"] == "AwaitingPromotion"
        })
        .await;
    assert_eq!(world.route_weights(), Some((50, 50)));

    // The canary starts failing half of its opens (say, it lost access to a volume).
    for pod in CANARY_PODS {
        world.exporter.set_rate("shop", pod, 10, 10, "EACCES");
    }
    let failed = world.wait_for("rolled back", |s| phase(s) == "Failed").await;
    assert_eq!(
        (failed["canaryWeight"].clone(), failed["stableWeight"].clone()),
        (json!(0), json!(100))
    );
    assert_eq!(
        world.route_weights(),
        Some((100, 0)),
        "the traffic went back to the stable"
    );
    assert_eq!(
        metric(&failed, "open-errors")["failures"],
        2,
        "failureLimit 1: the second one"
    );
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("open-errors (failed-open ratio canary 0.")
            && message.contains("exceeds maxIncrease 0.05"),
        "the message names the metric and its value: {message}"
    );
    let reasons = world.wait_for_event("RolledBack").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "AnalysisFailed").count(),
        2,
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "RolledBack"), "{reasons:?}");
    let metrics = world.controller_metrics().await;
    assert!(
        metrics.contains("splitscope_analysis_measurements_total{metric=\"open-errors\",name=\"checkout\",namespace=\"shop\",outcome=\"failure\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("splitscope_rollout_canary_weight{name=\"checkout\",namespace=\"shop\"} 0"));
}

#[tokio::test]
async fn a_canary_without_traffic_holds_with_no_data_and_resumes_when_it_comes() {
    let steps = json!([{"setWeight": 20}, {"setWeight": 100}]);
    let world = World::start(rollout(steps, 0, 2)).await;
    for pod in CANARY_PODS {
        world.exporter.set_rate("shop", pod, 0, 0, "ENOENT");
    }
    let held = world
        .wait_for("held for no data", |s| s["pauseReason"] == "NoData")
        .await;
    assert_eq!(held["canaryWeight"], 20);
    assert_eq!(held["stepIndex"], 0);
    // Three more intervals without traffic: still at step 1, never advanced blind.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let still = world.rollout_status();
    assert_eq!(
        (still["stepIndex"].clone(), still["canaryWeight"].clone()),
        (json!(0), json!(20))
    );
    assert_eq!(still["pauseReason"], "NoData");
    assert!(
        metric(&still, "open-errors")["noData"].as_i64() >= Some(3),
        "{still:#}"
    );
    assert_eq!(
        metric(&still, "open-errors")["failures"],
        0,
        "no data is never a failure"
    );
    assert_eq!(world.route_weights(), Some((80, 20)));

    for pod in CANARY_PODS {
        world.exporter.set_rate("shop", pod, 20, 0, "ENOENT");
    }
    world
        .wait_for("Succeeded once traffic came", |s| phase(s) == "Succeeded")
        .await;
    assert_eq!(world.route_weights(), Some((0, 100)));
}

#[tokio::test]
async fn a_prometheus_outage_holds_with_analysis_error_and_never_rolls_back() {
    let steps =
        json!([{"setWeight": 20}, {"setWeight": 50}, {"pause": {"duration": "10s"}}, {"setWeight": 100}]);
    let mut world = World::start(rollout(steps, 0, 1)).await;
    world.wait_for("at 50%", |s| s["canaryWeight"] == 50).await;

    world.prometheus.stop().await;
    let held = world
        .wait_for("held for analysis errors", |s| {
            s["pauseReason"] == "AnalysisError"
        })
        .await;
    assert_eq!(held["canaryWeight"], 50, "an outage never rolls back");
    let open = metric(&held, "open-errors");
    assert!(open["consecutiveErrors"].as_i64() >= Some(2), "{held:#}");
    assert!(
        open["lastMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("cannot reach Prometheus at")),
        "{held:#}"
    );
    assert_eq!(world.route_weights(), Some((50, 50)));
    world.wait_for_event("RolloutPaused").await;

    world.prometheus.resume().await;
    let done = world
        .wait_for("Succeeded after Prometheus came back", |s| {
            phase(s) == "Succeeded"
        })
        .await;
    assert_eq!(metric(&done, "open-errors")["failures"], 0);
    assert_eq!(world.route_weights(), Some((0, 100)));
}

/// A person steers the rollout with kubectl's plugin mechanism (`kubectl splitscope …` runs
/// `kubectl-splitscope` from PATH, here a link to the binary) and with `splitscope rollout`:
/// abort sends the traffic back, retry starts over.
#[tokio::test]
async fn abort_and_retry_through_kubectl_splitscope_and_the_cli() {
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]);
    let world = World::start(rollout(steps, 0, 2)).await;
    world
        .wait_for("awaiting promotion at 20%", |s| {
            s["pauseReason"] == "AwaitingPromotion"
        })
        .await;

    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_splitscope-under-test"),
        bin_dir.path().join("kubectl-splitscope"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // kubectl is on PATH: the deploy tests need it too.
    let (ok, text) = run(Command::new("kubectl")
        .env("PATH", &path)
        .env("KUBECONFIG", &world.kubeconfig)
        .args([
            "splitscope",
            "rollout",
            "abort",
            "checkout",
            "-n",
            "shop",
            "--wait",
            "30",
        ]))
    .await;
    assert!(ok, "{text}");
    assert!(text.contains("Phase:         Aborted"), "{text}");
    assert_eq!(world.route_weights(), Some((100, 0)));

    let (ok, out) = world
        .cli(&["retry", "checkout", "-n", "shop", "--wait", "30"])
        .await;
    assert!(ok, "{out}");
    let again = world
        .wait_for("started again", |s| {
            phase(s) != "Aborted" && s["canaryWeight"] == 20
        })
        .await;
    assert_eq!(metric(&again, "open-errors")["failures"], 0);
    let reasons = world.wait_for_event("RolloutAborted").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "RolloutStarted").count(),
        2,
        "{reasons:?}"
    );

    // spec.rollout removed (kubectl patch): the route returns to the spec's weights, the status
    // and the metrics lose the rollout.
    let (ok, text) = run(Command::new("kubectl")
        .env("KUBECONFIG", &world.kubeconfig)
        .args([
            "-n",
            "shop",
            "patch",
            "trafficsplits",
            "checkout",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"rollout":null}}"#,
        ]))
    .await;
    assert!(ok, "{text}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !world.object()["status"]["rollout"].is_null() || world.route_weights() != Some((100, 0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout never went: {:#}",
            world.object()["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = world.controller_metrics().await;
    assert!(!metrics.contains("splitscope_rollout_phase{"), "{metrics}");

    // A TrafficSplit that is not there is named.
    let (ok, out) = world.cli(&["retry", "nothing-here", "-n", "shop"]).await;
    assert!(
        !ok && out.contains("TrafficSplit shop/nothing-here not found"),
        "{out}"
    );
}

/// The controller is killed mid-rollout and another one starts (a restart, or a new leader):
/// it resumes at the same step with the same counts, from the status alone.
#[tokio::test]
async fn a_new_controller_resumes_at_the_same_step_without_recounting() {
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "6s"}}, {"setWeight": 100}]);
    let mut world = World::start(rollout(steps, 0, 2)).await;
    let before = world
        .wait_for("in the 6s pause at 20%", |s| {
            s["stepIndex"] == 1 && metric(s, "open-errors")["successes"].as_i64() >= Some(1)
        })
        .await;
    let _ = world.controller.kill().await;
    // No controller: nothing moves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frozen = world.rollout_status();
    assert_eq!(frozen["stepIndex"], 1);
    let counted = metric(&frozen, "open-errors")["successes"].as_i64().unwrap();
    assert!(counted >= metric(&before, "open-errors")["successes"].as_i64().unwrap());

    let (controller, addr) = controller(&world.kubeconfig, &world.prometheus.url()).await;
    world.controller = controller;
    world.metrics_addr = addr;
    // It does not start over: the step and the counts carry on from the status.
    let resumed = world
        .wait_for("measuring again", |s| {
            metric(s, "open-errors")["successes"].as_i64() > Some(counted)
        })
        .await;
    assert_eq!(resumed["revision"], frozen["revision"]);
    assert!(resumed["stepIndex"].as_i64() >= Some(1), "{resumed:#}");
    world.wait_for("Succeeded", |s| phase(s) == "Succeeded").await;
    let reasons = world.wait_for_event("RolloutSucceeded").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "RolloutStarted").count(),
        1,
        "never started over: {reasons:?}"
    );
}
