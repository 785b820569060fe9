//! A stand-in for the agent's `/metrics` whose per-pod `splitscope_file_opens_total` counters
//! the test moves: each pod opens files at a rate the test sets (and changes mid-test), so a real
//! Prometheus scrapes what a node agent would export for healthy, broken or idle pods.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::task::JoinHandle;

/// Opens per tick of one pod, by result (`ok` or an errno name).
type Rates = BTreeMap<(String, String), BTreeMap<String, u64>>;

#[derive(Default)]
struct Counters {
    /// (namespace, pod) -> result -> total.
    totals: BTreeMap<(String, String), BTreeMap<String, u64>>,
    rates: Rates,
}

pub struct OpensExporter {
    addr: SocketAddr,
    counters: Arc<Mutex<Counters>>,
    server: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

/// How often the rates are added to the counters.
pub const TICK: Duration = Duration::from_millis(100);

fn lock(counters: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    counters.lock().unwrap_or_else(|p| p.into_inner())
}

impl OpensExporter {
    pub async fn start() -> std::io::Result<Self> {
        let counters = Arc::new(Mutex::new(Counters::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(counters.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let ticking = counters.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                let mut c = lock(&ticking);
                let Counters { totals, rates } = &mut *c;
                for (pod, by_result) in rates.iter() {
                    let totals = totals.entry(pod.clone()).or_default();
                    for (result, n) in by_result {
                        *totals.entry(result.clone()).or_default() += n;
                    }
                }
            }
        });
        Ok(Self {
            addr,
            counters,
            server,
            ticker,
        })
    }

    /// `host:port` to scrape.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// From now on `pod` opens `ok` files successfully and fails `failed` opens with `errno`
    /// every tick (0 and 0: the pod is idle; the series it has stay, flat). A result's series
    /// is exported once its count is above 0, as the agent exports them.
    pub fn set_rate(&self, namespace: &str, pod: &str, ok: u64, failed: u64, errno: &str) {
        let mut c = lock(&self.counters);
        let key = (namespace.to_string(), pod.to_string());
        let totals = c.totals.entry(key.clone()).or_default();
        totals.entry("ok".into()).or_default();
        totals.entry(errno.into()).or_default();
        c.rates.insert(
            key,
            BTreeMap::from([("ok".to_string(), ok), (errno.to_string(), failed)]),
        );
    }
}

impl Drop for OpensExporter {
    fn drop(&mut self) {
        self.server.abort();
        self.ticker.abort();
    }
}

async fn metrics(State(counters): State<Arc<Mutex<Counters>>>) -> String {
    let c = lock(&counters);
    let mut out = String::from(
        "# HELP splitscope_file_opens_total File opens by pod and result (test exporter)\n\
         # TYPE splitscope_file_opens_total counter\n",
    );
    for ((namespace, pod), by_result) in &c.totals {
        // As the agent does: a series appears with its first open, so a canary that never
        // failed an open has no failed-open series at all, not one at 0.
        for (result, n) in by_result.iter().filter(|(_, n)| **n > 0) {
            out.push_str(&format!(
                "splitscope_file_opens_total{{namespace=\"{namespace}\",pod=\"{pod}\",container=\"app\",comm=\"app\",result=\"{result}\"}} {n}\n"
            ));
        }
    }
    out
}
