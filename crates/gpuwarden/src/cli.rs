//! The command line: subcommands and their flags. `--help` is the first manual most
//! users read, so every flag says what it does and what its default is.

use crate::logging::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "gpuwarden",
    version,
    about = "Watches a fleet of NVIDIA GPUs for health and abuse, and explains what it finds.",
    long_about = "gpuwarden scrapes dcgm-exporter (or its own simulator), stores the samples, and \
serves an API and /metrics.\n\nStart with `gpuwarden run`: with no configuration it simulates a \
fleet of 4 nodes x 8 GPUs, scrapes it exactly as it would scrape real exporters, and serves \
http://127.0.0.1:9470/api/v1/gpus.",
    after_help = "Examples:\n  gpuwarden run                          # simulated fleet, API on 127.0.0.1:9470\n  gpuwarden run --config gpuwarden.toml  # real dcgm-exporter targets\n  gpuwarden scrape http://gpu-node:9400/metrics\n  gpuwarden simulate --nodes 2 --inject GPU-...=thermal"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: scrape, store, serve the API (simulated fleet by default).
    Run(RunArgs),
    /// Serve a simulated fleet's dcgm-exporter endpoints, without scraping them.
    Simulate(SimulateArgs),
    /// One-shot health report of an exporter endpoint. Exit code: 0 when no GPU is
    /// unhealthy, 1 when at least one is, 2 on error (e.g. the scrape failed), 3 when
    /// nothing could be judged (no GPU has a measured health dimension: the page has no
    /// temperature, power, ECC/remap, PCIe/NVLink error or clock/XID field).
    Scrape(ScrapeArgs),
    /// Notifications: send a test message to a sink, manage silences, show the outbox,
    /// measure delivery.
    #[command(subcommand)]
    Notify(crate::commands::notify::NotifyCommand),
    /// Measure gpuwarden: ingest throughput, bytes per sample, and Prometheus side by side.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Security rule catalog: export Prometheus alerting rules, generate the detection docs, list.
    #[command(subcommand)]
    Rules(crate::commands::rules::RulesCommand),
    /// Forensic evidence bundle of a GPU: collect (from a stopped instance's data directory or a
    /// copy) and verify.
    #[command(subcommand)]
    Forensics(crate::commands::forensics::ForensicsCommand),
    /// Grafana dashboards over dcgm-exporter metrics and gpuwarden's /metrics.
    #[command(subcommand)]
    Dashboards(DashboardsCommand),
    /// Collect on this GPU host (NVML, kernel log, local dcgm-exporter) and push to `gpuwarden serve`.
    Agent(AgentArgs),
    /// Serve the API and receive pushes from agents and Prometheus remote_write (no simulator).
    Serve(ServeArgs),
    /// Explain the NVIDIA XID (GPU) and SXID (NVSwitch) reports in a kernel log, with the
    /// XID catalog's meaning, severity and recommended action.
    Xid(XidArgs),
    /// Train the failure predictor (hard failure within 24 h) from the store's history, or
    /// from a simulated history when the store has too few failures.
    Train(TrainArgs),
    /// The audit trail (every change and denied request, hash-chained): verify its chain,
    /// show its latest records.
    #[command(subcommand)]
    Audit(crate::commands::audit::AuditCommand),

    // about and long_about are on the args structs (commands/backup*.rs), beside the code.
    Backup(crate::commands::backup::BackupArgs),
    Restore(crate::commands::backup::RestoreArgs),

    /// Authentication: create, list and revoke API tokens (`gpuwarden auth token --help`).
    #[command(subcommand)]
    Auth(crate::commands::auth::AuthCommand),
}

/// `gpuwarden train`: build a training set, fit the GBDT with a time-based split, save a
/// versioned model to `DATA_DIR/models/`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data directory (its store is the history; the model goes to `models/`).
    #[arg(long, default_value = "./gpuwarden-data")]
    pub data_dir: PathBuf,
    /// TOML configuration of the instance (same as `run`): its `[store]` section says
    /// where the history is (`url = "postgres://…"` for the PostgreSQL store).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use a simulated history even if the store has enough failures.
    #[arg(long)]
    pub simulate: bool,
    /// Fewest hard failures in the store's history to train on it.
    #[arg(long, default_value_t = 50)]
    pub min_failures: usize,
    /// Simulated GPUs.
    #[arg(long, default_value_t = 1024)]
    pub gpus: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 30.0)]
    pub days: f64,
    /// Simulator step (1–5 min).
    #[arg(long, default_value = "2m")]
    pub step: humantime::Duration,
    /// Simulator seed (evaluation uses other seeds).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fault-rate multiplier of the simulated fleet.
    #[arg(long, default_value_t = 60.0)]
    pub fault_rate_multiplier: f64,
    /// perpetual's budget (model complexity).
    #[arg(long, default_value_t = 0.5)]
    pub budget: f32,
}

/// `gpuwarden agent`: collect on this GPU host and push to `gpuwarden serve`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Base URL of `gpuwarden serve`'s ingest listener, e.g. https://gpuwarden.example:9471.
    #[arg(long, env = "GPUWARDEN_SERVER")]
    pub server: Option<String>,
    /// File holding the bearer token for the server (one line).
    #[arg(long, env = "GPUWARDEN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for an https --server (a private CA), besides the
    /// system's trust store.
    #[arg(long, value_name = "FILE", env = "GPUWARDEN_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (the server's `client_ca`); its common name
    /// or a DNS name must be this host's node name. Needs --client-key.
    #[arg(long, value_name = "FILE", env = "GPUWARDEN_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", env = "GPUWARDEN_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Node name sent with every batch. Default: this host's name.
    #[arg(long, env = "GPUWARDEN_NODE")]
    pub node: Option<String>,
    /// Time between collections (each becomes one batch).
    #[arg(long, default_value = "10s")]
    pub interval: humantime::Duration,
    /// Durable spool of batches the server has not acknowledged yet.
    #[arg(long, default_value = "/var/lib/gpuwarden-agent/spool")]
    pub spool_dir: PathBuf,
    /// Largest spool size in MiB; when full, the oldest batches are dropped (counted).
    #[arg(long, default_value_t = 256)]
    pub spool_max_mib: u64,
    /// Most batches kept in the spool.
    #[arg(long, default_value_t = 20_000)]
    pub spool_max_batches: usize,
    /// Read GPUs from a recorded NVML-shaped JSON file instead of NVML (tests, demos).
    #[arg(long, value_name = "FILE")]
    pub nvml_fixture: Option<PathBuf>,
    /// Do not use NVML (e.g. when only a local dcgm-exporter should be read).
    #[arg(long)]
    pub no_nvml: bool,
    /// Also scrape a local dcgm-exporter, e.g. http://127.0.0.1:9400/metrics.
    #[arg(long, value_name = "URL")]
    pub dcgm_exporter: Option<String>,
    /// Kernel log to read XIDs from: `auto` (/dev/kmsg, else journalctl -k), `off`, or a file.
    #[arg(long, default_value = "auto")]
    pub kernel_log: String,
    /// Where the host's /proc is (for process attribution), e.g. /host/proc in a container.
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Kubelet log directory with <namespace>_<pod>_<uid> folders (pod names); "" disables.
    #[arg(long, default_value = "/var/log/pods")]
    pub kubelet_pods_dir: PathBuf,
    /// Kubelet container log links <pod>_<namespace>_<container>-<id>.log (container names).
    #[arg(long, default_value = "/var/log/containers")]
    pub kubelet_containers_dir: PathBuf,
    /// Read NVML once, write the readings as a fixture file (testdata/nvml format), exit.
    #[arg(long, value_name = "FILE")]
    pub record_nvml: Option<PathBuf>,
    /// Stop after this many batches, once the spool is empty (tests).
    #[arg(long, hide = true)]
    pub exit_after_batches: Option<u64>,
}

/// `gpuwarden serve`: the server of a fleet of agents (no simulator).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the API, UI and /metrics (loopback only unless authentication is on).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where samples, events, the inventory and the batch ledger are kept.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration (same as `run`); configured targets are scraped, no simulator.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Another host name the API/UI answers to (repeatable), besides `localhost`,
    /// `127.0.0.1`, `[::1]` and the listen address: the name a reverse proxy forwards in
    /// `Host`. Requests for other names are refused (DNS rebinding); see docs/api.md.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// Require an API token (or a UI session) on every request, as `[auth] enabled = true`
    /// does; tokens come from `gpuwarden auth token create`.
    #[arg(long)]
    pub auth: bool,
    /// Separate listener that serves only the push endpoints, /healthz and /metrics; may be
    /// a non-loopback address when --ingest-token-file is given.
    #[arg(long)]
    pub ingest_listen: Option<SocketAddr>,
    /// PEM certificate chain of the API/UI listener (with --tls-key: serve HTTPS; the
    /// files are re-read when they change and on SIGHUP). Overrides `[tls]`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate chain of the ingest listener (default: --tls-cert / `[tls]`).
    /// Overrides `[ingest.tls]`.
    #[arg(long, value_name = "FILE", requires = "ingest_tls_key")]
    pub ingest_tls_cert: Option<PathBuf>,
    /// PEM private key of --ingest-tls-cert.
    #[arg(long, value_name = "FILE", requires = "ingest_tls_cert")]
    pub ingest_tls_key: Option<PathBuf>,
    /// PEM CA of agent client certificates: the ingest listener then requires one, and a
    /// batch is accepted only for the node named by the certificate (common name or DNS
    /// name). Needs TLS on the ingest listener.
    #[arg(long, value_name = "FILE")]
    pub ingest_client_ca: Option<PathBuf>,
    /// Bearer tokens accepted on the push endpoints, one per line: `TOKEN node=HOST` or
    /// `TOKEN nodes=GLOB,GLOB` binds a token to nodes; a bare `TOKEN` may write any node
    /// (a warning at start). Tokens shorter than 32 characters are refused.
    #[arg(long, env = "GPUWARDEN_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// Print a new random ingest token (256 bits, hex) and exit.
    #[arg(long)]
    pub generate_ingest_token: bool,
    /// Time a client has to send a request's headers before its connection is closed
    /// (both listeners).
    #[arg(long, default_value = "10s")]
    pub header_read_timeout: humantime::Duration,
    /// Time to answer one request before it is answered 408 (both listeners).
    #[arg(long, default_value = "60s")]
    pub request_timeout: humantime::Duration,
    /// Connections served at once per listener; new ones past it are closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Largest push body in bytes (remote_write: compressed size).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_ingest_bytes: usize,
    /// The interval agents push at: a GPU is stale after 2.5 of them without data.
    #[arg(long, default_value = "10s")]
    pub agent_interval: humantime::Duration,
}

#[derive(Debug, Subcommand)]
pub enum DashboardsCommand {
    /// Write the dashboards (fleet health, GPU detail, security and incidents) as JSON.
    Export(DashboardsExportArgs),
}

#[derive(Debug, Args)]
pub struct DashboardsExportArgs {
    /// Directory to write the JSON files into.
    #[arg(long, default_value = "dashboards")]
    pub out: PathBuf,
}

/// Simulator settings shared by `run` and `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Simulated nodes (each serves its own /metrics endpoint). Default 4.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// GPUs per simulated node. Default 8.
    #[arg(long)]
    pub gpus_per_node: Option<usize>,
    /// Seed of the simulation: the same seed gives the same fleet and the same faults.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated seconds per wall-clock second (e.g. 60: one hour per minute).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Multiplies the random fault rates (calibrated to published fleet statistics, which
    /// are rare on a small fleet). 0 disables random faults.
    #[arg(long)]
    pub fault_rate_multiplier: Option<f64>,
    /// Inject a fault at start: GPU_UUID=KIND (repeatable). KIND: ecc-dbe, row-remap-failure,
    /// fallen-off-bus, app-xid, thermal, power-brake, nvlink-errors, pcie-replay, straggler,
    /// miner, miner-throttled, unapproved-namespace, miner-in-job (needs a labelled job on the GPU).
    #[arg(long, value_name = "GPU=KIND")]
    pub inject: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the API, UI and /metrics. Only loopback addresses are accepted unless
    /// authentication is on (`--auth` or `[auth] enabled = true` and a token exists, or an
    /// OpenID provider in `[auth.oidc]`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where samples, events and the inventory are kept.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration (targets, intervals, retention). With targets configured, no
    /// simulator starts.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Another host name the API/UI answers to (repeatable), besides `localhost`,
    /// `127.0.0.1`, `[::1]` and the listen address: the name a reverse proxy forwards in
    /// `Host`. Requests for other names are refused (DNS rebinding); see docs/api.md.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// Require an API token (or a UI session) on every request, as `[auth] enabled = true`
    /// does; tokens come from `gpuwarden auth token create` (or an OpenID provider,
    /// `[auth.oidc]`). Needed to listen beyond loopback.
    #[arg(long)]
    pub auth: bool,
    /// Time between scrapes of each target, with a unit: `5s`, `500ms`. Default 5s.
    #[arg(long)]
    pub scrape_interval: Option<humantime::Duration>,
    /// PEM certificate chain of the API/UI listener (with --tls-key: serve HTTPS; the
    /// files are re-read when they change and on SIGHUP). Overrides `[tls]`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub sim: SimArgs,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Port of the first node's endpoint; node i listens on PORT+i. Default: free ports.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Port of the simulator's control API (faults, labels). Default: a free port.
    #[arg(long)]
    pub control_port: Option<u16>,
    /// Append every fault label (ground truth) to this JSON-lines file.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub sim: SimArgs,
}

#[derive(Debug, Args)]
pub struct ScrapeArgs {
    /// Exporter URL, e.g. http://gpu-node:9400/metrics (host:port also works).
    pub url: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Give up after this long.
    #[arg(long, default_value = "10s")]
    pub timeout: humantime::Duration,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Security rule pack on labelled simulated fleets: recall, precision, detection delay and
    /// false alarms per 1,000 GPU-hours per rule.
    Security(BenchSecurityArgs),
    /// The real binary against a hostile exporter: pages with 100,000 metric names per GPU
    /// and pages of fresh GPU UUIDs on every scrape. Prints /healthz latency while they
    /// arrive, memory, the data directory's size and how long SIGTERM takes.
    Hostile(BenchHostileArgs),
    /// Parse + store throughput, bytes per stored sample, and Prometheus scraping the same
    /// simulated endpoints side by side.
    Ingest(BenchIngestArgs),
    /// Write throughput of the embedded store and PostgreSQL (binary COPY) on the same
    /// simulated pages, per page and per scrape round.
    Store(crate::commands::bench::BenchStoreArgs),
    /// API latency (p50/p95/p99) with concurrent clients on a simulated fleet, and the CPU
    /// cost of scoring per GPU.
    Api(BenchApiArgs),
    /// A live simulated fleet of N GPUs through the real `run` pipeline for a stated time:
    /// CPU, RSS over time, scrape lag, evaluation time per round and per GPU, API latency
    /// under load while scrapes land, and bytes per sample on disk, measured live.
    Scale(BenchScaleArgs),
    /// Anomaly detection on a labelled corpus (NAB by default): our streaming detector and
    /// NAB's windowed-Gaussian baseline, scored with NAB's method on the whole corpus and
    /// held out (threshold chosen on one half, scored on the other, both ways), beside
    /// the published scoreboard when the corpus has one.
    Nab(BenchNabArgs),
    /// Fault detection on simulated fleets: recall, precision and delay per fault kind, and
    /// false incidents on fault-free fleets, for the health rules, the anomaly detectors and both.
    Detect(BenchDetectArgs),
    /// False incidents on real production traffic: replays the GenTD26 trace (per-pod GPU
    /// utilisation and memory) as dcgm-exporter pages through the analysis `run` uses and
    /// counts incidents per 1,000 GPU-hours (goal: at most 1).
    Replay(BenchReplayArgs),
    /// Failure prediction on held-out simulated histories: ROC-AUC, PR-AUC, precision and
    /// recall, lead times, against a rule baseline and random; and the cost of scoring a
    /// 10,000-GPU fleet.
    Predict(BenchPredictArgs),
}

#[derive(Debug, Args)]
pub struct BenchPredictArgs {
    /// Data directory holding `models/failure-current.json` (from `gpuwarden train`).
    #[arg(long, default_value = "./gpuwarden-data")]
    pub data_dir: PathBuf,
    /// Held-out seeds (never used by `train`'s default seed 1). Three histories of
    /// 1,024 GPUs hold ~1,600 failures: on 2 × 256 ROC-AUC moves by ±0.01 between draws.
    #[arg(long, value_delimiter = ',', default_value = "1001,1002,1003")]
    pub seeds: Vec<u64>,
    /// GPUs per held-out history.
    #[arg(long, default_value_t = 1024)]
    pub gpus: usize,
    /// Days per held-out history.
    #[arg(long, default_value_t = 30.0)]
    pub days: f64,
    /// Simulator step.
    #[arg(long, default_value = "2m")]
    pub step: humantime::Duration,
    /// Fault-rate multiplier (as in training).
    #[arg(long, default_value_t = 60.0)]
    pub fault_rate_multiplier: f64,
    /// GPUs of the fleet whose one scoring pass is timed (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub scoring_gpus: usize,
    /// Print the report as JSON too.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchDetectArgs {
    /// Seeds per fault kind (and fault-free fleets), 1..=N.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Nodes of 8 GPUs per simulated fleet.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Scrape (and evaluation) interval.
    #[arg(long, default_value = "10s")]
    pub interval: humantime::Duration,
    /// Normal work before the fault is injected.
    #[arg(long, default_value = "30m")]
    pub warmup: humantime::Duration,
    /// How long the run goes on after the injection.
    #[arg(long, default_value = "30m")]
    pub after: humantime::Duration,
    /// Hours of each fault-free fleet.
    #[arg(long, default_value_t = 12.0)]
    pub clean_hours: f64,
}

#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    /// Folder with the GenTD26 half (pod_gpu_duty_cycle.dev-half.csv,
    /// pod_gpu_memory_used_bytes.dev-half.csv).
    #[arg(long, default_value = "../shared/data/alibaba-gentd26")]
    pub data: PathBuf,
    /// Pods (GPUs, in sorted order) put on each node; the trace has no nodes.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// Replay only the first N pods (sorted).
    #[arg(long)]
    pub max_gpus: Option<usize>,
    /// Replay only the first H hours of the trace.
    #[arg(long)]
    pub hours: Option<f64>,
    /// Acceptance: incidents per 1,000 GPU-hours at most this (exit status 1 above it).
    #[arg(long, default_value_t = 1.0)]
    pub max_rate: f64,
    /// Print this many incidents (rule, severity, node, summary).
    #[arg(long, default_value_t = 20)]
    pub show: usize,
}

#[derive(Debug, Args)]
pub struct BenchNabArgs {
    /// A labelled corpus in NAB's layout: data/<category>/<file>.csv,
    /// labels/combined_windows.json, optionally config/profiles.json and
    /// results/final_results.json (published scores, printed beside ours when present).
    #[arg(long, default_value = "../shared/data/numenta-NAB")]
    pub data: PathBuf,
    /// Also write per-row scores of both detectors in NAB's results layout
    /// (DIR/<detector>/<category>/<detector>_<file>.csv), e.g. to score them with NAB itself.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchSecurityArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// GPUs per node.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 200.0)]
    pub hours: f64,
    /// Scrape (evaluation) interval.
    #[arg(long, default_value = "20s")]
    pub step: humantime::Duration,
    /// Seed of the fleet and of the scenario plan.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// GPUs running synthetic steady memory-bound training (the hardest legitimate case).
    #[arg(long, default_value_t = 8)]
    pub hard_legit_gpus: usize,
    /// One abuse or drift scenario starts this often.
    #[arg(long, default_value = "2h")]
    pub scenario_every: humantime::Duration,
}

#[derive(Debug, Args)]
pub struct BenchHostileArgs {
    /// Distinct metric names on the exporter's one GPU, one scenario each (0: none).
    #[arg(long, value_delimiter = ',', default_value = "12500,25000,50000,100000")]
    pub names: Vec<usize>,
    /// Fresh GPU UUIDs on every page of the churn scenario (0: skip it).
    #[arg(long, default_value_t = 20_000)]
    pub churn: usize,
    /// How long each scenario runs before SIGTERM.
    #[arg(long, default_value = "30s")]
    pub duration: humantime::Duration,
    /// Scrape interval of the gpuwarden under test.
    #[arg(long, default_value = "1s")]
    pub interval: humantime::Duration,
    /// The gpuwarden binary to run (default: this one), e.g. an older build to compare.
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchScaleArgs {
    /// Simulated GPUs (rounded up to whole nodes).
    #[arg(long, default_value_t = 1000)]
    pub gpus: usize,
    /// GPUs per simulated node (1-64).
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// How long to measure once every GPU has been scraped, e.g. `5m`, `1h`.
    #[arg(long, default_value = "2m")]
    pub duration: humantime::Duration,
    /// Scrape interval of the fleet.
    #[arg(long, default_value = "10s")]
    pub scrape_interval: humantime::Duration,
    /// API clients, each asking once a second (a page of 100 GPUs or the fleet summary).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// The gpuwarden binary to run (default: this one), e.g. an older build to compare.
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// Simulated GPUs.
    #[arg(long, default_value_t = 1000)]
    pub gpus: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Requests per client per endpoint.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Serve without the rate-limit layer. By default the layer runs with limits too high
    /// to refuse anything, loopback not exempt, so its cost is part of the figures.
    #[arg(long)]
    pub no_rate_limit: bool,
    /// Run twice, without and with authentication (a viewer API token sent by every
    /// client), and print both side by side with their ratio.
    #[arg(long)]
    pub auth: bool,
    /// With --auth: alternate off/on this many times and print each round's ratio with
    /// the median and range, so a shared machine's drift shows as spread, not as a cost.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
}

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Simulated GPUs for the on-disk size figure (32 = 4 nodes x 8).
    #[arg(long, default_value_t = 32)]
    pub gpus: usize,
    /// Simulated duration for the on-disk size figure.
    #[arg(long, default_value = "1h")]
    pub duration: humantime::Duration,
    /// Interval between samples for the on-disk size figure.
    #[arg(long, default_value = "1s")]
    pub interval: humantime::Duration,
    /// Wall-clock duration of the side-by-side live scrape run (gpuwarden and Prometheus).
    #[arg(long, default_value = "60s")]
    pub live_duration: humantime::Duration,
    /// Skip the Prometheus comparison (when the `prometheus` binary is not installed).
    #[arg(long)]
    pub no_prometheus: bool,
    /// Where to put temporary data (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// `gpuwarden xid`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  dmesg | gpuwarden xid -\n  gpuwarden xid /var/log/kern.log\n  \
journalctl -k -o short-iso | gpuwarden xid --json - | jq .\n  \
gpuwarden xid --follow                  # this host's /dev/kmsg, else journalctl -k\n  \
gpuwarden xid --follow /var/log/kern.log"
)]
pub struct XidArgs {
    /// Kernel log to read, `-` for standard input. Any common shape: `dmesg` (also -T and
    /// --time-format iso), /dev/kmsg records, `journalctl -k`, syslog files. Other lines are
    /// skipped. With --follow and no FILE: /dev/kmsg, else `journalctl -k -f`.
    #[arg(value_name = "FILE|-", required_unless_present = "follow")]
    pub input: Option<String>,
    /// Keep reading as the log grows (like `tail -F`: survives rotation and truncation).
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per report per line (kind, code, name, severity, cause, action,
    /// pci_bus_id, pid, process, message, timestamp, …) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
