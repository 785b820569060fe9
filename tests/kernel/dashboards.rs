//! The Grafana dashboards against the live binaries, through a real Prometheus (Debian's
//! package): the agent traces this kernel's opens, the controller reconciles a TrafficSplit
//! served by a fake API server (tests/src/fake_api_server.rs), Prometheus scrapes both, and every
//! panel's query — as Grafana sends it with every variable at "All" — must parse, evaluate and
//! return data. Every metric name the dashboards use must be one the binaries really export.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::Duration;

use serde_json::{Value, json};
use splitscope_tests::dashboards::{self, Query};
use splitscope_tests::fake_api_server::FakeApiServer;
use splitscope_tests::prometheus::{Job, Prometheus, require_prometheus, sample_value};
use splitscope_tests::served::{self, PodEndpoint, controller_resources};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Grafana's `$__rate_interval` at a 1 s scrape interval is 4 scrapes; a little more keeps
/// `rate()` fed while a scrape is late on a busy 2-core machine.
const RATE_INTERVAL: &str = "6s";
const NODE: &str = "test-node";
const CONTROLLER_POD: &str = "splitscope-controller-test";

/// The design's checkout split (finalizer already added); with a rollout measuring against
/// `prometheus` when given (its first step keeps the 95/5 weights, then it waits for a
/// promotion while its analysis goes on, so the rollout panels have data).
fn checkout(prometheus: Option<&str>) -> Value {
    let rollout = prometheus.map(|address| {
        json!({
            "stable": "stable",
            "canary": "canary",
            "steps": [{"setWeight": 5}, {"pause": {}}],
            "analysis": {
                "interval": "2s",
                "prometheus": {"address": format!("http://{address}")},
                "metrics": [{"name": "scrapes", "query": "sum(up)", "thresholdRange": {"min": 1}}],
            },
        })
    });
    served::checkout(&[("stable", "v1", 95), ("canary", "v2", 5)], rollout)
}

/// The design's checkout split (finalizer already added), and ready endpoints for both backends.
fn objects() -> Vec<Value> {
    let endpoints = |backend: &str, n: usize| -> Vec<(String, String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("{backend}-{i}"),
                    format!("{backend}-uid-{i}"),
                    format!("10.0.0.{i}"),
                )
            })
            .collect()
    };
    let slice = |backend: &str, n: usize| {
        let eps = endpoints(backend, n);
        let eps: Vec<PodEndpoint<'_>> = eps
            .iter()
            .map(|(pod, uid, address)| PodEndpoint { pod, uid, address })
            .collect();
        served::checkout_slice(backend, &eps)
    };
    vec![checkout(None), slice("stable", 3), slice("canary", 1)]
}

/// Every sample name of a Prometheus text exposition (histograms as their _bucket/_sum/_count).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

/// Opens files under a unique comm until cancelled, so rates and failed-open panels have data.
fn keep_opening(comm: String, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let files = Files::new("dash");
        while !stop.is_cancelled() {
            run_opener(
                &comm,
                &[op("openat", &files.exists, 3), op("openat", &files.missing, 2)],
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test]
async fn every_dashboard_panel_returns_data_from_the_live_binaries_through_prometheus() {
    require_bpf();
    require_prometheus();

    // The controller, reconciling the checkout split.
    let api = FakeApiServer::start(controller_resources(false), objects())
        .await
        .unwrap();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path()).unwrap();
    let (controller, mut controller_logs) = spawn_with_env(
        &[],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("POD_NAME", OsStr::new(CONTROLLER_POD)),
        ],
        &["controller", "--no-leader-elect", "--metrics-addr", "127.0.0.1:0"],
    );
    let serving = wait_for(&mut controller_logs, "serving /metrics").await;
    let controller_addr = serving["fields"]["addr"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let phase = api
            .object("/apis/splitscope.dev/v1alpha1/trafficsplits", "shop", "checkout")
            .map(|ts| ts["status"]["phase"].clone());
        if phase == Some(json!("Ready")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller never reported checkout Ready (phase {phase:?}); requests: {:#?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Ready once its caches are synced (a poll in short rounds may trail the first reconcile).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http_get(&controller_addr, "/readyz").await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller's /readyz never turned 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The agent, on this kernel.
    let (agent, mut agent_logs) = spawn(&standalone_agent(&[]));
    let agent_addr = agent_ready(&mut agent_logs).await;
    let stop = CancellationToken::new();
    let opener = keep_opening(unique("ssdash"), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The dashboards, read as Grafana reads them.
    let files = dashboards::dashboard_files();
    let loaded: Vec<(String, Value)> = files
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                dashboards::load(p),
            )
        })
        .collect();
    // 2. A real Prometheus scrapes both, labelled as in the cluster.
    let constants: BTreeMap<String, String> = loaded
        .iter()
        .flat_map(|(_, d)| dashboards::constants(d))
        .collect();
    let agent_job = constants
        .get("agent_job")
        .expect("agent dashboard has an agent_job constant")
        .clone();
    let controller_job = constants
        .get("controller_job")
        .expect("controller dashboard has a controller_job constant")
        .clone();
    for job in [&agent_job, &controller_job] {
        let services = std::fs::read_to_string(dashboards::repo_root().join(format!(
            "deploy/{}/metrics-service.yaml",
            if *job == agent_job { "agent" } else { "controller" }
        )))
        .unwrap();
        assert!(
            services.contains(&format!("name: {job}")),
            "no metrics Service named {job}: the job name would not match"
        );
    }
    let prometheus = Prometheus::start(&[
        Job {
            name: &agent_job,
            target: agent_addr.clone(),
            labels: vec![("node", NODE)],
        },
        Job {
            name: &controller_job,
            target: controller_addr.clone(),
            labels: vec![("kubernetes_pod", CONTROLLER_POD)],
        },
    ])
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let ready = prometheus
            .query("min(count_over_time(up[10s])) >= 7 and min(up) == 1")
            .await
            .is_ok_and(|r| !r.is_empty());
        if ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never scraped both binaries 7 times"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The split gets a rollout measuring against this Prometheus (a spec change, as a user's
    // apply); wait until its measurements are scraped.
    api.put(checkout(Some(&prometheus.addr)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while prometheus
        .query(r#"splitscope_analysis_measurements_total{outcome="success"} > 0"#)
        .await
        .map_or(true, |r| r.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no successful rollout measurement was scraped; requests: {:#?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 1. Every metric a dashboard uses is exported by the real binaries (the rollout running).
    let mut exported = exported_names(&http_get(&controller_addr, "/metrics").await.body);
    exported.extend(exported_names(&http_get(&agent_addr, "/metrics").await.body));
    let mut unexported = Vec::new();
    for (name, dashboard) in &loaded {
        for Query { what, expr } in dashboards::queries(dashboard) {
            for metric in dashboards::metric_names(&expr).unwrap() {
                if !exported.contains(&metric) {
                    unexported.push(format!("{name}: {what} uses {metric}"));
                }
            }
        }
    }
    assert!(
        unexported.is_empty(),
        "not exported by the binaries: {unexported:#?}\nexported: {exported:#?}"
    );

    // 3. Every query of every dashboard, as Grafana sends it, returns data.
    let mut failures = Vec::new();
    let mut answers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, dashboard) in &loaded {
        for Query { what, expr } in dashboards::queries(dashboard) {
            let sent = dashboards::as_sent(&expr, &constants, RATE_INTERVAL);
            match prometheus.query(&sent).await {
                Ok(result) if result.is_empty() => {
                    failures.push(format!("{name}: {what}: no data for {sent}"))
                }
                Ok(result) => {
                    println!(
                        "{name}: {what}: {} series, first {}",
                        result.len(),
                        result[0]["value"]
                    );
                    answers.insert(format!("{name}: {what}"), result);
                }
                Err(e) => failures.push(format!("{name}: {what}: {e} for {sent}")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // 4. The panels that state facts state the right ones.
    let weights = prometheus
        .query(
            r#"max by (backend) (splitscope_trafficsplit_backend_weight{namespace="shop", name="checkout"})"#,
        )
        .await
        .unwrap();
    let weights: BTreeMap<String, f64> = weights
        .iter()
        .map(|s| {
            (
                s["metric"]["backend"].as_str().unwrap().to_owned(),
                sample_value(s),
            )
        })
        .collect();
    assert_eq!(
        weights,
        BTreeMap::from([("canary".to_owned(), 5.0), ("stable".to_owned(), 95.0)])
    );
    let ready = &answers["controller.json: panel \"Ready TrafficSplits\""];
    assert_eq!(sample_value(&ready[0]), 1.0, "{ready:?}");
    let leader = &answers["controller.json: panel \"Current leader\""];
    assert_eq!(
        leader[0]["metric"]["kubernetes_pod"], CONTROLLER_POD,
        "{leader:?}"
    );
    // The rollout measured once at 5 % and now waits at `pause: {}` for a promotion.
    let phase = &answers["controller.json: panel \"Rollout phase\""];
    assert_eq!(phase[0]["metric"]["phase"], "Paused", "{phase:?}");
    let canary = &answers["controller.json: panel \"Canary weight\""];
    assert_eq!(sample_value(&canary[0]), 5.0, "{canary:?}");
    let attach = &answers["agent.json: panel \"Attach mode per node\""];
    assert_eq!(attach[0]["metric"]["node"], NODE, "{attach:?}");
    assert!(
        ["tracepoint", "kprobe", "fentry"].contains(&attach[0]["metric"]["mode"].as_str().unwrap()),
        "{attach:?}"
    );
    let failed = &answers["agent.json: panel \"Failed opens/s by errno\""];
    assert!(
        failed
            .iter()
            .any(|s| s["metric"]["result"] == "ENOENT" && sample_value(s) > 0.0),
        "{failed:?}"
    );

    stop.cancel();
    opener.await.unwrap();
    for child in [&controller, &agent] {
        sigterm(child);
    }
    for mut child in [controller, agent] {
        exits_cleanly(&mut child, Duration::from_secs(15)).await;
    }
    drop(prometheus);
}
