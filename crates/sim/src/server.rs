//! The running simulator: one HTTP listener per node serving `GET /metrics` (or, for
//! fleets too large for a port per node, one listener serving `/nodes/{i}/metrics`),
//! with the fleet advanced to "now" in simulated time on every request.
//!
//! Simulated time is `start + wall elapsed × speed`. The fleet lives behind one mutex;
//! advancing and rendering happen on the blocking pool because a long catch-up (a
//! scrape after a pause at high speed) can take a while and must not stall the runtime.

use crate::config::SimConfig;
use crate::error::SimError;
use crate::fleet::{Fleet, GpuInfo};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gpuwarden_model::{Clock, FaultKind, FaultLabel, GpuUuid, SystemClock, TimestampMs};
use parking_lot::Mutex;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// dcgm-exporter's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Builds the fleet and binds one listener per node on `config.listen_host`
    /// (`base_port + i`, or ephemeral ports), or one shared listener when
    /// [`SimConfig::one_listener`]. Must run inside a tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        config.validate()?;
        let start_ms = config.start_ms.unwrap_or_else(|| SystemClock.now_ms());
        let fleet = Fleet::new(&SimConfig {
            start_ms: Some(start_ms),
            ..config.clone()
        })?;
        let nodes = fleet.node_names().to_vec();
        let mut listeners = Vec::new();
        let mut targets = Vec::with_capacity(nodes.len());
        if config.one_listener() {
            // One port for the whole fleet; node i at /nodes/{i}/metrics.
            let addr = std::net::SocketAddr::new(config.listen_host, config.base_port.unwrap_or(0));
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind { addr, source })?;
            let local = l.local_addr()?;
            for (i, name) in nodes.iter().enumerate() {
                targets.push((name.clone(), format!("http://{local}/nodes/{i}/metrics")));
            }
            listeners.push(l);
        } else {
            for (i, name) in nodes.iter().enumerate() {
                let port = config.base_port.map(|p| p + i as u16).unwrap_or(0);
                let addr = std::net::SocketAddr::new(config.listen_host, port);
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| SimError::Bind { addr, source })?;
                let local = l.local_addr()?;
                targets.push((name.clone(), format!("http://{local}/metrics")));
                listeners.push(l);
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            fleet: Mutex::new(fleet),
            wall_origin: Instant::now(),
            start_ms,
            speed: config.speed,
            targets,
            labels_path: config.labels_path.clone(),
            last_len: (0..nodes.len()).map(|_| AtomicUsize::new(16 * 1024)).collect(),
            stop: stop_tx,
            tasks: Mutex::new(Vec::new()),
        });
        let handle = SimHandle { inner: inner.clone() };
        // Labels drawn while building the fleet (none today) still reach the file.
        handle.inner.flush_labels();
        let shared = config.one_listener();
        for (node, listener) in listeners.into_iter().enumerate() {
            let app = if shared {
                Router::new()
                    .route("/nodes/{node}/metrics", get(shared_metrics))
                    .with_state(handle.clone())
            } else {
                Router::new().route("/metrics", get(metrics)).with_state(NodeState {
                    handle: handle.clone(),
                    node,
                })
            };
            let mut rx = stop_rx.clone();
            let task = tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    tracing::warn!(node, error = %e, "simulator listener stopped");
                }
            });
            inner.tasks.lock().push(task);
        }
        tracing::info!(nodes = nodes.len(), speed = config.speed, "simulator started");
        Ok(handle)
    }
}

struct Inner {
    fleet: Mutex<Fleet>,
    wall_origin: Instant,
    start_ms: TimestampMs,
    speed: f64,
    targets: Vec<(String, String)>,
    labels_path: Option<PathBuf>,
    /// Size of each node's last page, to allocate the next one at once.
    last_len: Vec<AtomicUsize>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn sim_now(&self) -> TimestampMs {
        let wall_ms = self.wall_origin.elapsed().as_secs_f64() * 1000.0;
        self.start_ms + (wall_ms * self.speed) as TimestampMs
    }

    /// Appends label updates to the JSONL file. A failed write is logged, not fatal:
    /// labels stay in memory and on the API.
    fn flush_labels(&self) {
        let updates = self.fleet.lock().take_label_updates();
        let Some(path) = &self.labels_path else { return };
        if updates.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        for l in &updates {
            if serde_json::to_writer(&mut buf, l).is_ok() {
                buf.push(b'\n');
            }
        }
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(&buf));
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "cannot append fault labels");
        }
    }

    fn render(&self, node: usize) -> String {
        let hint = self.last_len.get(node).map(|l| l.load(Ordering::Relaxed)).unwrap_or(0);
        let mut out = String::with_capacity(hint + hint / 8);
        {
            let mut fleet = self.fleet.lock();
            fleet.advance_to(self.sim_now());
            fleet.render_node(node, &mut out);
        }
        if let Some(l) = self.last_len.get(node) {
            l.store(out.len(), Ordering::Relaxed);
        }
        self.flush_labels();
        out
    }
}

/// A running simulator. Cheap to clone; every clone drives the same fleet.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("targets", &self.inner.targets)
            .finish()
    }
}

/// The simulated clock: what "now" is for the simulated fleet. A receiver bounds sample
/// timestamps by it when the simulator runs faster than real time.
impl Clock for SimHandle {
    fn now_ms(&self) -> TimestampMs {
        self.inner.sim_now()
    }
}

impl SimHandle {
    /// `(node name, http://HOST:PORT/metrics)` of every node.
    pub fn targets(&self) -> Vec<(String, String)> {
        self.inner.targets.clone()
    }

    /// Current simulated time.
    pub fn now_ms(&self) -> TimestampMs {
        self.inner.sim_now()
    }

    /// Injects `kind` on `gpu` now, for the kind's default duration.
    pub fn inject(&self, gpu: &GpuUuid, kind: FaultKind) -> Result<FaultLabel, SimError> {
        self.inject_for(gpu, kind, crate::faults::default_injected_duration_ms(kind))
    }

    /// Injects `kind` on `gpu` now, lasting `duration_ms` of simulated time (`None`:
    /// until the simulator stops).
    pub fn inject_for(&self, gpu: &GpuUuid, kind: FaultKind, duration_ms: Option<i64>) -> Result<FaultLabel, SimError> {
        let now = self.inner.sim_now();
        let res = self.inner.fleet.lock().inject_for(gpu, kind, now, duration_ms);
        self.inner.flush_labels();
        res
    }

    /// Every fault label so far.
    pub fn labels(&self) -> Vec<FaultLabel> {
        self.inner.fleet.lock().labels().to_vec()
    }

    /// Every simulated GPU.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        self.inner.fleet.lock().gpus()
    }

    /// Renders node `node` as its endpoint would, advancing the fleet to now.
    pub fn render_node(&self, node: usize) -> String {
        self.inner.render(node)
    }

    /// Stops every listener and waits for them to finish.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[derive(Clone)]
struct NodeState {
    handle: SimHandle,
    node: usize,
}

async fn metrics(State(st): State<NodeState>) -> Response {
    let inner = st.handle.inner.clone();
    match tokio::task::spawn_blocking(move || inner.render(st.node)).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "render failed\n").into_response(),
    }
}

/// A node's page on the shared listener (`/nodes/{i}/metrics`).
async fn shared_metrics(
    State(handle): State<SimHandle>,
    axum::extract::Path(node): axum::extract::Path<usize>,
) -> Response {
    if node >= handle.inner.targets.len() {
        return (
            StatusCode::NOT_FOUND,
            format!("no node {node} in this simulated fleet\n"),
        )
            .into_response();
    }
    metrics(State(NodeState { handle, node })).await
}

impl SimHandle {
    pub(crate) fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SimHandle) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Option<T>> {
        let h = self.clone();
        async move { tokio::task::spawn_blocking(move || f(&h)).await.ok() }
    }
}
