//! One collection of a host: GPUs (NVML, or `nvidia-smi -q` when NVML is not there), an
//! optional local dcgm-exporter page, XIDs from NVML, and the processes on each GPU with
//! their container / pod / Slurm job.
//!
//! A source that fails is logged once per change of state and skipped for this interval;
//! the batch goes out with what the other sources gave (a GPU missing from a batch shows
//! up as stale on the server, which is the truth).

use crate::cli::AgentArgs;
use anyhow::Result;
use gpuwarden_agent::{Batch, WirePage};
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::kmsg::normalize_pci_bus_id;
use gpuwarden_collect::nvml::{GpuProcess, GpuSource};
use gpuwarden_collect::nvsmi_query::parse_query;
use gpuwarden_collect::procattr::{KubeletLogDirs, PodResolver, ProcAttributor};
use gpuwarden_collect::prom::Limits;
use gpuwarden_model::{Clock, Event, EventKind, GpuIdentity, GpuUuid, SystemClock};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// PCI bus id (normalised) → (GPU, node), for the kernel-log reader.
pub type Inventory = Arc<Mutex<HashMap<String, (GpuUuid, String)>>>;

/// Largest `nvidia-smi -q` output and local exporter page read.
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Processes tracked for "process started" events (bounded against fork storms).
const MAX_TRACKED_PROCESSES: usize = 10_000;

pub struct HostCollector {
    node: String,
    gpu: Option<Arc<Mutex<Box<dyn GpuSource>>>>,
    nvsmi_fallback: bool,
    dcgm_url: Option<String>,
    http: reqwest::Client,
    attributor: Arc<ProcAttributor>,
    inventory: Inventory,
    known_processes: HashSet<(GpuUuid, u32)>,
    failing: HashSet<&'static str>,
}

impl HostCollector {
    pub fn new(args: &AgentArgs, node: String, gpu: Option<Box<dyn GpuSource>>) -> Result<Self> {
        let resolver: Option<Box<dyn PodResolver>> = (!args.kubelet_pods_dir.as_os_str().is_empty()).then(|| {
            Box::new(KubeletLogDirs {
                pods_dir: args.kubelet_pods_dir.clone(),
                containers_dir: args.kubelet_containers_dir.clone(),
            }) as Box<dyn PodResolver>
        });
        Ok(HostCollector {
            node,
            nvsmi_fallback: gpu.is_none() && args.nvml_fixture.is_none() && !args.no_nvml,
            gpu: gpu.map(|g| Arc::new(Mutex::new(g))),
            dcgm_url: args.dcgm_exporter.clone(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
            attributor: Arc::new(ProcAttributor::new(&args.proc_root, resolver)),
            inventory: Arc::default(),
            known_processes: HashSet::new(),
            failing: HashSet::new(),
        })
    }

    pub fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.gpu {
            Some(g) => parts.push(g.lock().describe()),
            None if self.nvsmi_fallback => parts.push("nvidia-smi -q (NVML not available)".into()),
            None => {}
        }
        if let Some(u) = &self.dcgm_url {
            parts.push(format!("dcgm-exporter {u}"));
        }
        if parts.is_empty() {
            "no GPU source".into()
        } else {
            parts.join(" + ")
        }
    }

    /// Logs a source's failure once, and its recovery once.
    fn note(&mut self, source: &'static str, result: std::result::Result<(), String>) {
        match result {
            Err(e) if self.failing.insert(source) => tracing::warn!("{source}: {e}"),
            Ok(()) if self.failing.remove(source) => tracing::info!("{source} works again"),
            _ => {}
        }
    }

    pub async fn collect(&mut self) -> Batch {
        let now = SystemClock.now_ms();
        let mut batch = Batch::new(self.node.clone(), now);
        let mut processes = Vec::new();
        if let Some(gpu) = self.gpu.clone() {
            let node = self.node.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut g = gpu.lock();
                let sample = g.sample(&node, now)?;
                let xids = g.xid_events(now)?;
                let procs = g.processes().unwrap_or_default();
                Ok::<_, gpuwarden_collect::nvml::NvmlError>((sample, xids, procs))
            })
            .await;
            match read {
                Ok(Ok(((gpus, rows), xids, procs))) => {
                    self.note("NVML", Ok(()));
                    batch.events.extend(xids.iter().map(|x| x.to_event(&self.node)));
                    processes = procs;
                    batch.pages.push(WirePage {
                        source: "nvml".into(),
                        gpus,
                        rows,
                    });
                }
                Ok(Err(e)) => self.note("NVML", Err(e.to_string())),
                Err(e) => self.note("NVML", Err(e.to_string())),
            }
        } else if self.nvsmi_fallback {
            match nvidia_smi_query(&self.node, now).await {
                Ok((page, procs)) => {
                    self.note("nvidia-smi", Ok(()));
                    processes = procs;
                    batch.pages.push(page);
                }
                Err(e) => self.note("nvidia-smi", Err(e)),
            }
        }
        if let Some(url) = self.dcgm_url.clone() {
            let r = self.scrape_dcgm(&url, now).await;
            match r {
                Ok(page) => {
                    self.note("dcgm-exporter", Ok(()));
                    batch.pages.push(page);
                }
                Err(e) => self.note("dcgm-exporter", Err(e)),
            }
        }
        self.attribute(&mut batch, &processes, now).await;
        self.update_inventory(&batch);
        batch
    }

    async fn scrape_dcgm(&self, url: &str, now: i64) -> std::result::Result<WirePage, String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("scraping {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("scraping {url}: {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| format!("scraping {url}: {e}"))?;
        if body.len() > MAX_OUTPUT_BYTES {
            return Err(format!("scraping {url}: page larger than {MAX_OUTPUT_BYTES} bytes"));
        }
        let page =
            map_exporter_page(&body, &self.node, now, &Limits::default()).map_err(|e| format!("parsing {url}: {e}"))?;
        Ok(WirePage::from_exporter_page("dcgm-exporter", &page))
    }

    /// Sets each GPU's workload when all its processes agree on one, and emits
    /// "process started" events for processes not seen in the previous interval.
    async fn attribute(&mut self, batch: &mut Batch, processes: &[GpuProcess], now: i64) {
        let attributor = self.attributor.clone();
        let pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
        let attributions = tokio::task::spawn_blocking(move || {
            pids.iter()
                .map(|&pid| (pid, attributor.attribute(pid)))
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        let mut per_gpu: BTreeMap<&GpuUuid, Vec<&gpuwarden_collect::procattr::Attribution>> = BTreeMap::new();
        for p in processes {
            if let Some(a) = attributions.get(&p.pid) {
                per_gpu.entry(&p.gpu).or_default().push(a);
            }
        }
        for page in &mut batch.pages {
            for id in &mut page.gpus {
                let Some(list) = per_gpu.get(&id.uuid) else { continue };
                let workloads: HashSet<_> = list.iter().map(|a| a.workload()).filter(|w| !w.is_empty()).collect();
                if workloads.len() == 1 && id.workload.is_empty() {
                    id.workload = workloads.into_iter().next().unwrap_or_default();
                }
                let containers: HashSet<_> = list.iter().filter_map(|a| a.cgroup.container_id.as_deref()).collect();
                if containers.len() == 1 {
                    if let Some(c) = containers.into_iter().next() {
                        id.extra_labels.insert("container_id".into(), c.to_owned());
                    }
                }
            }
        }
        let current: HashSet<(GpuUuid, u32)> = processes
            .iter()
            .take(MAX_TRACKED_PROCESSES)
            .map(|p| (p.gpu.clone(), p.pid))
            .collect();
        for (gpu, pid) in current.difference(&self.known_processes) {
            let name = std::fs::read_to_string(self.attributor_proc_comm(*pid))
                .ok()
                .map(|s| s.trim().to_owned());
            batch.events.push(Event {
                gpu: gpu.clone(),
                node: self.node.clone(),
                ts_ms: now,
                kind: EventKind::ProcessStart { pid: *pid, name },
            });
        }
        self.known_processes = current;
    }

    fn attributor_proc_comm(&self, pid: u32) -> std::path::PathBuf {
        self.attributor.proc_root().join(pid.to_string()).join("comm")
    }

    fn update_inventory(&self, batch: &Batch) {
        let mut inv = self.inventory.lock();
        for id in batch.pages.iter().flat_map(|p| &p.gpus) {
            if id.mig.is_some() {
                continue;
            }
            if let Some(pci) = id.pci_bus_id.as_deref().and_then(normalize_pci_bus_id) {
                inv.insert(pci, (id.uuid.clone(), id.node.clone()));
            }
        }
    }
}

/// `nvidia-smi -q` with a timeout, parsed by the shared parser.
async fn nvidia_smi_query(node: &str, now: i64) -> std::result::Result<(WirePage, Vec<GpuProcess>), String> {
    let mut cmd = tokio::process::Command::new("nvidia-smi");
    cmd.arg("-q").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| "nvidia-smi -q did not finish within 10 s".to_owned())?
        .map_err(|e| format!("running nvidia-smi -q: {e}"))?;
    if !out.status.success() {
        return Err(format!("nvidia-smi -q exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(MAX_OUTPUT_BYTES)]);
    let q = parse_query(&text, node, now).map_err(|e| format!("parsing nvidia-smi -q: {e}"))?;
    let mut gpus: Vec<GpuIdentity> = Vec::new();
    let mut rows = Vec::new();
    let mut procs = Vec::new();
    for g in q.gpus {
        procs.extend(g.processes.iter().map(|p| GpuProcess {
            gpu: p.gpu.clone(),
            pid: p.pid,
            used_memory_bytes: p.used_memory_mib.map(|m| (m * 1024.0 * 1024.0) as u64),
        }));
        gpus.push(g.identity);
        rows.push(g.samples);
    }
    Ok((
        WirePage {
            source: "nvidia-smi".into(),
            gpus,
            rows,
        },
        procs,
    ))
}
