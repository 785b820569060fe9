//! A real Prometheus server (Debian's `prometheus` package) for the tests: started on loopback
//! with a 1 s scrape interval over the given targets, queried through its HTTP API, stopped (and
//! started again on the same port and data, for outage tests) at will. Killed when dropped, or
//! when the test process dies.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::process_group::GroupChild;

/// Fails the test, naming the fix, when no Prometheus is installed.
pub fn require_prometheus() {
    let found = std::process::Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs a real Prometheus server: install Debian's `prometheus` package \
         (`cargo xtask deps test` does)"
    );
}

/// A port nobody listens on now (Prometheus cannot report a port 0 choice back).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// One scrape job: its name, `host:port`, and labels added to every series it scrapes.
pub struct Job<'a> {
    pub name: &'a str,
    pub target: String,
    pub labels: Vec<(&'a str, &'a str)>,
}

pub struct Prometheus {
    child: Option<GroupChild>,
    pub addr: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and waits until it is ready.
    pub async fn start(jobs: &[Job<'_>]) -> Self {
        require_prometheus();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
        for job in jobs {
            // As deploy/prometheus-grafana/prometheus.yml: the metrics keep their own labels
            // (honor_labels), the target's are added.
            let labels: Vec<String> = job.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            config.push_str(&format!(
                "  - job_name: {}\n    honor_labels: true\n    static_configs:\n      - targets: ['{}']\n        labels: {{{}}}\n",
                job.name,
                job.target,
                labels.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let mut prometheus = Self {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            config: config_path,
            _dir: dir,
        };
        prometheus.resume().await;
        prometheus
    }

    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it (an outage): queries fail until `resume`.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port and data directory; waits until it is ready.
    pub async fn resume(&mut self) {
        let data = self.config.with_file_name("data");
        let child = GroupChild::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", self.config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={}", self.addr))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("start prometheus");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if crate::http::try_get(&self.addr, "/-/ready")
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus never became ready on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query: Ok(result vector) or Err(Prometheus's error).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let response = crate::http::try_get(&self.addr, &format!("/api/v1/query?query={encoded}")).await?;
        let reply: Value = serde_json::from_str(&response.body)
            .map_err(|e| format!("HTTP {}: {e}: {}", response.status, response.body))?;
        if reply["status"] != "success" {
            return Err(format!("{}: {}", reply["errorType"], reply["error"]));
        }
        Ok(reply["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// The value of one sample of a query result.
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
