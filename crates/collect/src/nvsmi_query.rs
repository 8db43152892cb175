//! `nvidia-smi -q` (text) parser: inventory and state of every GPU on a host that has
//! the driver but neither DCGM nor an exporter.
//!
//! The output is an indented tree of `Key : Value` lines and section headers, whose
//! keys drift between drivers (`Power Draw` → `Average Power Draw`; `GPU Shutdown Temp`
//! → `GPU Shutdown T.Limit Temp`, a *margin*, not a temperature; `Clocks Throttle
//! Reasons` → `Clocks Event Reasons`; ECC counters split by SRAM/DRAM). The parser first
//! reads the tree generically (every value is kept, with its line, in
//! [`NvsmiGpu::entries`]), then maps the values it understands onto the typed
//! [`DcgmField`]s in dcgm-exporter's units (°C, W, MHz, MiB, %), so the analyzers cannot
//! tell this source from dcgm-exporter.
//!
//! A value nvidia-smi could not read (`N/A`, `[N/A]`, `Not Supported`, `[Not
//! Supported]`, `Disabled`, `Unknown Error`, WDDM's "Not available …") is absent, never
//! 0. The one exception is on purpose: the *mode* fields (persistence, MIG, ECC) map
//! `Enabled`/`Disabled` to 1/0, as DCGM reports modes, because "disabled" is then the
//! reading itself, not a missing one.
//!
//! Truncated output (a GPU block that stops before its `Processes` section, or fewer GPU
//! blocks than `Attached GPUs` says) is an error naming the line and section where it
//! stopped, and the error carries everything parsed up to there.

use crate::kmsg::normalize_pci_bus_id;
use gpuwarden_model::{DcgmField, FieldName, GpuIdentity, GpuSamples, GpuUuid, TimestampMs};
use serde::Serialize;

/// Largest input accepted; real `-q` output is about 10 KiB per GPU.
pub const MAX_INPUT_LEN: usize = 16 * 1024 * 1024;

/// Why `nvidia-smi -q` output could not be used (fully).
#[derive(Debug, thiserror::Error)]
pub enum NvsmiQueryError {
    /// The text is not `nvidia-smi -q` output (an error message, another command).
    #[error("line {line}: not `nvidia-smi -q` output: {reason}")]
    NotQueryOutput { line: usize, reason: String },
    /// The output stops early. `partial` holds every GPU read up to `line` (a GPU whose
    /// block stops before its UUID cannot be identified and is left out).
    #[error(
        "line {line}: output is truncated: it stops in section '{section}' of GPU {gpu}; \
         {found} GPU block(s) of {} read", expected.map_or_else(|| "an unknown number".to_string(), |n| n.to_string())
    )]
    Truncated {
        line: usize,
        gpu: String,
        section: String,
        expected: Option<u32>,
        found: usize,
        partial: Box<NvsmiQuery>,
    },
    /// A complete GPU block without a `GPU UUID`: the GPU cannot be identified.
    #[error("line {line}: GPU {gpu} has no 'GPU UUID'")]
    MissingUuid { line: usize, gpu: String },
    #[error("input is {len} bytes, more than the {MAX_INPUT_LEN} accepted")]
    TooLarge { len: usize },
}

/// One `Key : Value` line of a GPU block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryEntry {
    /// Section headers from the GPU block down, then the key (`["Temperature", "GPU Current Temp"]`).
    pub path: Vec<String>,
    /// The value as printed (trimmed).
    pub value: String,
    /// 1-based line number in the input.
    pub line: usize,
}

/// A process using a GPU (`Processes` section).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NvsmiProcess {
    pub gpu: GpuUuid,
    pub pid: u32,
    /// Executable path or name as nvidia-smi prints it.
    pub name: Option<String>,
    /// `C` (compute), `G` (graphics) or `C+G`.
    pub process_type: Option<String>,
    /// Framebuffer memory used, MiB (absent on Windows WDDM).
    pub used_memory_mib: Option<f64>,
    /// MIG GPU instance, when the GPU is partitioned.
    pub gpu_instance_id: Option<u32>,
    pub compute_instance_id: Option<u32>,
}

/// One GPU of the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NvsmiGpu {
    /// Line of the `GPU 00000000:3B:00.0` header.
    pub line: usize,
    pub identity: GpuIdentity,
    /// Every value mapped onto a DCGM field, stamped with the caller's time.
    pub samples: GpuSamples,
    pub processes: Vec<NvsmiProcess>,
    pub serial: Option<String>,
    pub vbios_version: Option<String>,
    /// Names of the active clock-event (throttle) reasons, e.g. `["SW Power Cap"]`.
    pub clock_event_reasons_active: Vec<String>,
    /// Every value of the block, mapped or not.
    pub entries: Vec<QueryEntry>,
}

impl NvsmiGpu {
    /// The raw value at an exact path (`&["PCI", "Bus Id"]`).
    pub fn raw(&self, path: &[&str]) -> Option<&str> {
        find_exact(&self.entries, path)
    }

    /// A mapped DCGM value.
    pub fn value(&self, field: DcgmField) -> Option<f64> {
        self.samples.get(&FieldName::Dcgm(field))
    }
}

/// Everything read from one `nvidia-smi -q` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NvsmiQuery {
    /// `Timestamp` of the header, as printed (local time of the host, no zone).
    pub timestamp: Option<String>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    /// `Attached GPUs` of the header.
    pub attached_gpus: Option<u32>,
    pub gpus: Vec<NvsmiGpu>,
}

/// A GPU block while it is read.
struct RawGpu {
    header: String,
    line: usize,
    entries: Vec<QueryEntry>,
    last_line: usize,
}

/// Parses `nvidia-smi -q` output. `node` is the host the output came from, `ts_ms` the
/// time it was taken (stamped on the samples; the output's own timestamp has no zone).
pub fn parse_query(text: &str, node: &str, ts_ms: TimestampMs) -> Result<NvsmiQuery, NvsmiQueryError> {
    if text.len() > MAX_INPUT_LEN {
        return Err(NvsmiQueryError::TooLarge { len: text.len() });
    }
    let mut header: Vec<(String, String)> = Vec::new();
    let mut saw_banner = false;
    let mut blocks: Vec<RawGpu> = Vec::new();
    // (indent, section name) from the GPU block down.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut last_line = 0;

    for (i, raw_line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw_line.trim_end_matches(['\r', ' ', '\t']);
        let content = line.trim_start_matches([' ', '\t', '\u{feff}']);
        if content.is_empty() {
            continue;
        }
        last_line = lineno;
        let indent = line.len() - content.len();
        if indent == 0 {
            stack.clear();
            if content.starts_with("==") && content.contains("NVSMI LOG") {
                saw_banner = true;
            } else if let Some(bus) = content.strip_prefix("GPU ").filter(|b| !b.contains(" : ")) {
                blocks.push(RawGpu {
                    header: bus.trim().to_string(),
                    line: lineno,
                    entries: Vec::new(),
                    last_line: lineno,
                });
            } else if let (key, Some(value)) = split_key_value(content) {
                header.push((key.to_string(), value.to_string()));
                // A header line after GPU blocks ends the last block.
                if !blocks.is_empty() {
                    stack.clear();
                }
            } else if !saw_banner && blocks.is_empty() {
                return Err(NvsmiQueryError::NotQueryOutput {
                    line: lineno,
                    reason: format!("unexpected line '{}'", truncate(content, 80)),
                });
            }
            continue;
        }
        let Some(block) = blocks.last_mut() else {
            // Indented text before any GPU block: not -q output.
            if !saw_banner {
                return Err(NvsmiQueryError::NotQueryOutput {
                    line: lineno,
                    reason: format!("unexpected line '{}'", truncate(content, 80)),
                });
            }
            continue;
        };
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        block.last_line = lineno;
        match split_key_value(content) {
            (key, Some(value)) => {
                let mut path: Vec<String> = stack.iter().map(|(_, s)| s.clone()).collect();
                path.push(key.to_string());
                block.entries.push(QueryEntry {
                    path,
                    value: value.to_string(),
                    line: lineno,
                });
            }
            (section, None) => {
                stack.push((indent, section.to_string()));
                // A section with nothing under it yet still counts as reached, so an
                // empty `Processes` section (nothing running) is recorded.
                block.entries.push(QueryEntry {
                    path: stack.iter().map(|(_, s)| s.clone()).collect(),
                    value: String::new(),
                    line: lineno,
                });
            }
        }
    }

    if !saw_banner && blocks.is_empty() {
        return Err(NvsmiQueryError::NotQueryOutput {
            line: last_line.max(1),
            reason: "no '==============NVSMI LOG==============' banner and no GPU block".to_string(),
        });
    }

    let get_header = |k: &str| {
        header
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .filter(|v| !is_absent(v))
    };
    // Drivers from 610 on append "[Deprecated; … Use KMD Version instead]" to these two
    // and print the new keys as well: prefer the new keys, else the first word.
    let first_word = |v: String| v.split_whitespace().next().map(str::to_string);
    let mut query = NvsmiQuery {
        timestamp: get_header("Timestamp"),
        driver_version: get_header("KMD Version").or_else(|| get_header("Driver Version").and_then(first_word)),
        cuda_version: get_header("CUDA UMD Version").or_else(|| get_header("CUDA Version").and_then(first_word)),
        attached_gpus: get_header("Attached GPUs").and_then(|v| v.parse().ok()),
        gpus: Vec::new(),
    };

    // Where the output stops early, if it does: the first block without `Processes`
    // (the last section of every GPU block in every driver we have seen).
    let incomplete = blocks.iter().position(|b| {
        !b.entries
            .iter()
            .any(|e| e.path.first().is_some_and(|p| p == "Processes"))
    });
    let n_blocks = blocks.len();
    let mut truncated = None;
    for (index, block) in blocks.into_iter().enumerate() {
        let is_incomplete = incomplete == Some(index);
        if is_incomplete {
            let section = block
                .entries
                .last()
                .map(|e| e.path.join(" > "))
                .unwrap_or_else(|| "(none)".to_string());
            truncated = Some((block.last_line, block.header.clone(), section));
        }
        match build_gpu(block, index, node, ts_ms, &query) {
            Ok(gpu) => query.gpus.push(gpu),
            Err(e) if is_incomplete || incomplete.is_some_and(|k| index > k) => {
                // The GPU cannot be identified because the output stopped: left out.
                tracing::debug!(error = %e, "dropping unidentifiable GPU from truncated nvidia-smi -q output");
            }
            Err(e) => return Err(e),
        }
        if is_incomplete {
            break;
        }
    }
    if truncated.is_none() {
        let last_gpu = || {
            query
                .gpus
                .last()
                .and_then(|g| g.identity.pci_bus_id.clone())
                .unwrap_or_else(|| "(none)".to_string())
        };
        match query.attached_gpus {
            Some(expected) if expected as usize > n_blocks => {
                truncated = Some((
                    last_line,
                    last_gpu(),
                    format!("end of output after {n_blocks} of {expected} GPU blocks"),
                ));
            }
            // Every driver prints `Attached GPUs` before the first GPU block: output
            // that has neither stopped in its header.
            None if n_blocks == 0 => {
                truncated = Some((
                    last_line.max(1),
                    last_gpu(),
                    "header, before 'Attached GPUs'".to_string(),
                ));
            }
            _ => {}
        }
    }
    if let Some((line, gpu, section)) = truncated {
        return Err(NvsmiQueryError::Truncated {
            line,
            gpu,
            section,
            expected: query.attached_gpus,
            found: n_blocks,
            partial: Box::new(query),
        });
    }
    Ok(query)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `Key      : Value` → (`Key`, Some(`Value`)); a section header → (`Header`, None).
fn split_key_value(content: &str) -> (&str, Option<&str>) {
    if let Some(i) = content.find(" : ") {
        return (content[..i].trim_end(), Some(content[i + 3..].trim()));
    }
    if let Some(k) = content.strip_suffix(" :") {
        return (k.trim_end(), Some(""));
    }
    (content, None)
}

/// True for the values nvidia-smi prints when it could not read one.
fn is_absent(v: &str) -> bool {
    let v = v.trim();
    v.is_empty()
        || matches!(
            v,
            "N/A"
                | "[N/A]"
                | "Not Supported"
                | "[Not Supported]"
                | "Disabled"
                | "Unknown Error"
                | "[Unknown Error]"
                | "ERR!"
                | "[GPU requires reset]"
                | "Requested functionality has been deprecated"
        )
        || v.starts_with("Not available")
        || v.starts_with("Insufficient Permissions")
}

/// The number at the start of a value: `41 C` → 41, `16x` → 16, `69.85 W` → 69.85,
/// `100.00%` → 100. Absent values and non-numbers give `None`.
fn number(v: &str) -> Option<f64> {
    if is_absent(v) {
        return None;
    }
    let token = v.split_whitespace().next()?;
    let token = token.trim_end_matches(['%', 'x']);
    let n = token.parse::<f64>().ok()?;
    n.is_finite().then_some(n)
}

/// `Yes`/`Enabled`/`Active` → 1, `No`/`Not Active` → 0. (`Disabled` as a mode is handled
/// by [`mode`].)
fn yes_no(v: &str) -> Option<f64> {
    match v.trim() {
        "Yes" | "Active" => Some(1.0),
        "No" | "Not Active" => Some(0.0),
        _ => None,
    }
}

/// A mode: `Enabled` → 1, `Disabled` → 0 (see the module docs for why 0 here).
fn mode(v: &str) -> Option<f64> {
    match v.trim() {
        "Enabled" => Some(1.0),
        "Disabled" => Some(0.0),
        _ => None,
    }
}

fn find_exact<'a>(entries: &'a [QueryEntry], path: &[&str]) -> Option<&'a str> {
    entries
        .iter()
        .find(|e| e.path.len() == path.len() && e.path.iter().zip(path).all(|(a, b)| a == b))
        .map(|e| e.value.as_str())
}

/// First value whose path starts with `section` and ends with one of `keys`, at any
/// depth in between (drivers nest some keys: `GPU Ceiling Power Limit > Current Power Limit`).
fn find_in<'a>(entries: &'a [QueryEntry], section: &str, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        entries
            .iter()
            .find(|e| e.path.len() >= 2 && e.path[0] == section && e.path.last().is_some_and(|l| l == k))
            .map(|e| e.value.as_str())
            .filter(|v| !is_absent(v))
    })
}

/// The clock-event reason names and NVML's `nvmlClocksEventReason*` bits (the same
/// bitmask DCGM exports as `DCGM_FI_DEV_CLOCKS_EVENT_REASONS`).
const CLOCK_EVENT_BITS: [(&str, u64); 9] = [
    ("Idle", 0x1),
    ("Applications Clocks Setting", 0x2),
    ("SW Power Cap", 0x4),
    ("HW Slowdown", 0x8),
    ("Sync Boost", 0x10),
    ("SW Thermal Slowdown", 0x20),
    ("HW Thermal Slowdown", 0x40),
    ("HW Power Brake Slowdown", 0x80),
    ("Display Clock Setting", 0x100),
];

fn build_gpu(
    block: RawGpu,
    index: usize,
    node: &str,
    ts_ms: TimestampMs,
    query: &NvsmiQuery,
) -> Result<NvsmiGpu, NvsmiQueryError> {
    let e = &block.entries;
    let top = |key: &str| find_exact(e, &[key]).filter(|v| !is_absent(v));
    let uuid = top("GPU UUID").ok_or_else(|| NvsmiQueryError::MissingUuid {
        line: block.line,
        gpu: block.header.clone(),
    })?;
    let uuid = GpuUuid::new(uuid);

    let mut identity = GpuIdentity::new(uuid.clone(), node);
    identity.index = Some(index as u32);
    identity.model = top("Product Name").map(str::to_string);
    identity.pci_bus_id = find_in(e, "PCI", &["Bus Id"])
        .and_then(normalize_pci_bus_id)
        .or_else(|| normalize_pci_bus_id(&block.header));
    identity.driver_version = query.driver_version.clone();
    identity.device = top("Minor Number")
        .and_then(|m| m.parse::<u32>().ok())
        .map(|m| format!("nvidia{m}"));
    let serial = top("Serial Number").map(str::to_string);
    let vbios_version = top("VBIOS Version").map(str::to_string);
    for (label, value) in [
        ("serial", serial.clone()),
        ("vbios_version", vbios_version.clone()),
        ("cuda_version", query.cuda_version.clone()),
        ("brand", top("Product Brand").map(str::to_string)),
        ("architecture", top("Product Architecture").map(str::to_string)),
    ] {
        if let Some(v) = value {
            identity.extra_labels.insert(label.to_string(), v);
        }
    }

    let mut samples = GpuSamples::new(uuid.clone(), ts_ms);
    let mut put = |field: DcgmField, v: Option<f64>| {
        if let Some(v) = v {
            samples.values.push((FieldName::Dcgm(field), v));
        }
    };
    let num_in = |section: &str, keys: &[&str]| find_in(e, section, keys).and_then(number);
    let num_at = |path: &[&str]| find_exact(e, path).and_then(number);

    // Modes.
    put(
        DcgmField::PersistenceMode,
        find_exact(e, &["Persistence Mode"]).and_then(mode),
    );
    put(
        DcgmField::MigMode,
        find_exact(e, &["MIG Mode", "Current"]).and_then(mode),
    );
    put(
        DcgmField::EccCurrent,
        find_exact(e, &["ECC Mode", "Current"]).and_then(mode),
    );
    put(
        DcgmField::ComputeMode,
        top("Compute Mode").and_then(|m| match m {
            "Default" => Some(0.0),
            "Exclusive_Thread" => Some(1.0),
            "Prohibited" => Some(2.0),
            "Exclusive_Process" => Some(3.0),
            _ => None,
        }),
    );
    put(
        DcgmField::Pstate,
        // `P0` … `P15`: a state number, not a float (`PNaN` or `Pinf` is not a state).
        top("Performance State")
            .and_then(|p| p.strip_prefix('P'))
            .and_then(|n| n.parse::<u8>().ok())
            .map(f64::from),
    );
    put(DcgmField::FanSpeed, top("Fan Speed").and_then(number));

    // Temperatures. Only the absolute thresholds map to DCGM's fields; the `T.Limit`
    // forms of newer drivers are margins to the limit and stay in `entries`.
    put(DcgmField::GpuTemp, num_in("Temperature", &["GPU Current Temp"]));
    put(DcgmField::MemoryTemp, num_in("Temperature", &["Memory Current Temp"]));
    put(DcgmField::SlowdownTemp, num_in("Temperature", &["GPU Slowdown Temp"]));
    put(DcgmField::ShutdownTemp, num_in("Temperature", &["GPU Shutdown Temp"]));
    put(
        DcgmField::GpuMaxOpTemp,
        num_in("Temperature", &["GPU Max Operating Temp"]),
    );

    // Power. `Power Draw` (older drivers) and `Average Power Draw` are what NVML's power
    // usage returns; the instantaneous reading is the fallback.
    put(
        DcgmField::PowerUsage,
        num_in(
            "GPU Power Readings",
            &["Power Draw", "Average Power Draw", "Instantaneous Power Draw"],
        ),
    );
    put(
        DcgmField::PowerMgmtLimit,
        num_in("GPU Power Readings", &["Requested Power Limit", "Power Limit"]),
    );
    put(
        DcgmField::EnforcedPowerLimit,
        num_in("GPU Power Readings", &["Current Power Limit", "Enforced Power Limit"]),
    );

    // Clocks.
    put(DcgmField::SmClock, num_at(&["Clocks", "SM"]));
    put(DcgmField::MemClock, num_at(&["Clocks", "Memory"]));
    put(DcgmField::MaxSmClock, num_at(&["Max Clocks", "SM"]));
    put(DcgmField::MaxMemClock, num_at(&["Max Clocks", "Memory"]));

    // Utilization (`Gpu` in older drivers).
    put(DcgmField::GpuUtil, num_in("Utilization", &["GPU", "Gpu"]));
    put(DcgmField::MemCopyUtil, num_in("Utilization", &["Memory"]));
    put(DcgmField::EncUtil, num_in("Utilization", &["Encoder"]));
    put(DcgmField::DecUtil, num_in("Utilization", &["Decoder"]));

    // Framebuffer memory.
    put(DcgmField::FbTotal, num_at(&["FB Memory Usage", "Total"]));
    put(DcgmField::FbReserved, num_at(&["FB Memory Usage", "Reserved"]));
    put(DcgmField::FbUsed, num_at(&["FB Memory Usage", "Used"]));
    put(DcgmField::FbFree, num_at(&["FB Memory Usage", "Free"]));

    // ECC totals, from either layout.
    for (scope, sbe, dbe) in [
        ("Volatile", DcgmField::EccSbeVolTotal, DcgmField::EccDbeVolTotal),
        ("Aggregate", DcgmField::EccSbeAggTotal, DcgmField::EccDbeAggTotal),
    ] {
        let sum = |old: &str, parts: &[&str]| -> Option<f64> {
            if let Some(v) = num_at(&["ECC Errors", scope, old, "Total"]) {
                return Some(v);
            }
            let vals: Vec<f64> = parts.iter().filter_map(|p| num_at(&["ECC Errors", scope, p])).collect();
            // Parts too large to add up (a corrupted counter) give no total, not +Inf.
            let total: f64 = vals.iter().sum();
            (!vals.is_empty() && total.is_finite()).then_some(total)
        };
        put(sbe, sum("Single Bit", &["SRAM Correctable", "DRAM Correctable"]));
        put(
            dbe,
            sum(
                "Double Bit",
                &[
                    "SRAM Uncorrectable",
                    "SRAM Uncorrectable Parity",
                    "SRAM Uncorrectable SEC-DED",
                    "DRAM Uncorrectable",
                ],
            ),
        );
    }

    // Retired pages (pre-Ampere) and remapped rows (Ampere and later).
    put(DcgmField::RetiredSbe, num_at(&["Retired Pages", "Single Bit ECC"]));
    put(DcgmField::RetiredDbe, num_at(&["Retired Pages", "Double Bit ECC"]));
    put(
        DcgmField::RetiredPending,
        find_in(
            e,
            "Retired Pages",
            &["Pending Page Blacklist", "Pending Page Retirement"],
        )
        .and_then(yes_no),
    );
    put(
        DcgmField::CorrectableRemappedRows,
        num_at(&["Remapped Rows", "Correctable Error"]),
    );
    put(
        DcgmField::UncorrectableRemappedRows,
        num_at(&["Remapped Rows", "Uncorrectable Error"]),
    );
    put(
        DcgmField::RowRemapPending,
        find_exact(e, &["Remapped Rows", "Pending"]).and_then(yes_no),
    );
    put(
        DcgmField::RowRemapFailure,
        find_exact(e, &["Remapped Rows", "Remapping Failure Occurred"]).and_then(yes_no),
    );

    // PCIe.
    put(
        DcgmField::PcieLinkGen,
        num_at(&["PCI", "GPU Link Info", "PCIe Generation", "Current"]),
    );
    put(
        DcgmField::PcieLinkWidth,
        num_at(&["PCI", "GPU Link Info", "Link Width", "Current"]),
    );
    put(DcgmField::PcieReplayCounter, num_at(&["PCI", "Replays Since Reset"]));

    // Clock-event reasons: a bitmask, known only when at least one flag was readable.
    let mut mask = 0u64;
    let mut known = false;
    let mut active = Vec::new();
    for q in e {
        let [section, key] = q.path.as_slice() else { continue };
        if section != "Clocks Event Reasons" && section != "Clocks Throttle Reasons" {
            continue;
        }
        let Some((name, bit)) = CLOCK_EVENT_BITS.iter().find(|(n, _)| n == key) else {
            continue;
        };
        match yes_no(&q.value) {
            Some(1.0) => {
                mask |= bit;
                known = true;
                active.push((*name).to_string());
            }
            Some(_) => known = true,
            None => {}
        }
    }
    put(DcgmField::ClockEventReasons, known.then_some(mask as f64));

    let processes = processes(e, &uuid);
    Ok(NvsmiGpu {
        line: block.line,
        identity,
        samples,
        processes,
        serial,
        vbios_version,
        clock_event_reasons_active: active,
        entries: block.entries,
    })
}

/// The `Processes` section: each process starts at `GPU instance ID` (or at a second
/// `Process ID` when a driver leaves the instance lines out).
fn processes(entries: &[QueryEntry], gpu: &GpuUuid) -> Vec<NvsmiProcess> {
    #[derive(Default)]
    struct Partial {
        pid: Option<u32>,
        name: Option<String>,
        process_type: Option<String>,
        used: Option<f64>,
        gi: Option<u32>,
        ci: Option<u32>,
        started: bool,
    }
    let mut out = Vec::new();
    let mut cur = Partial::default();
    let mut flush = |p: &mut Partial| {
        let done = std::mem::take(p);
        if let Some(pid) = done.pid {
            out.push(NvsmiProcess {
                gpu: gpu.clone(),
                pid,
                name: done.name,
                process_type: done.process_type,
                used_memory_mib: done.used,
                gpu_instance_id: done.gi,
                compute_instance_id: done.ci,
            });
        }
    };
    for q in entries.iter().filter(|q| q.path.len() == 2 && q.path[0] == "Processes") {
        let v = q.value.as_str();
        let present = (!is_absent(v)).then(|| v.to_string());
        match q.path[1].as_str() {
            "GPU instance ID" | "GPU Instance ID" => {
                if cur.started {
                    flush(&mut cur);
                }
                cur.started = true;
                cur.gi = present.and_then(|s| s.parse().ok());
            }
            "Compute instance ID" | "Compute Instance ID" => cur.ci = present.and_then(|s| s.parse().ok()),
            "Process ID" => {
                if cur.pid.is_some() {
                    flush(&mut cur);
                }
                cur.started = true;
                cur.pid = present.and_then(|s| s.parse().ok());
            }
            "Type" => cur.process_type = present,
            "Name" | "Process Name" => cur.name = present,
            "Used GPU Memory" | "Used Memory" => cur.used = number(v),
            _ => {}
        }
    }
    flush(&mut cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "\
==============NVSMI LOG==============

Timestamp                                 : Wed Sep 25 10:40:24 2024
Driver Version                            : 535.129.03
CUDA Version                              : 12.2

Attached GPUs                             : 1
GPU 00000000:07:00.0
    Product Name                          : NVIDIA A10
    Persistence Mode                      : Disabled
    GPU UUID                              : GPU-1
    Fan Speed                             : [N/A]
    Temperature
        GPU Current Temp                  : 33 C
        Memory Current Temp               : N/A
    GPU Power Readings
        Power Draw                        : Not Supported
    Processes
        GPU instance ID                   : N/A
        Compute instance ID               : N/A
        Process ID                        : 100607
            Type                          : G
            Name                          : /usr/lib/xorg/Xorg
            Used GPU Memory               : 142 MiB
";

    #[test]
    fn absent_values_are_absent_not_zero() {
        let q = parse_query(SMALL, "n", 0).unwrap();
        let g = &q.gpus[0];
        assert_eq!(g.value(DcgmField::GpuTemp), Some(33.0));
        assert_eq!(g.value(DcgmField::MemoryTemp), None);
        assert_eq!(g.value(DcgmField::FanSpeed), None);
        assert_eq!(g.value(DcgmField::PowerUsage), None);
        assert_eq!(g.value(DcgmField::PersistenceMode), Some(0.0));
        assert_eq!(g.identity.pci_bus_id.as_deref(), Some("00000000:07:00.0"));
        assert_eq!(g.processes.len(), 1);
        assert_eq!(g.processes[0].pid, 100607);
        assert_eq!(g.processes[0].used_memory_mib, Some(142.0));
        for v in ["N/A", "[N/A]", "Not Supported", "[Not Supported]", "Disabled"] {
            assert_eq!(number(v), None, "{v}");
        }
    }

    #[test]
    fn not_query_output() {
        for text in [
            "",
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
            "    indented garbage",
        ] {
            assert!(matches!(
                parse_query(text, "n", 0),
                Err(NvsmiQueryError::NotQueryOutput { .. })
            ));
        }
    }

    #[test]
    fn truncated_block_is_reported_with_partial_result() {
        let cut = SMALL.split("    Processes").next().unwrap();
        match parse_query(cut, "n", 0) {
            Err(NvsmiQueryError::Truncated {
                line, section, partial, ..
            }) => {
                assert_eq!(line, 17);
                assert_eq!(section, "GPU Power Readings > Power Draw");
                assert_eq!(partial.gpus.len(), 1);
                assert_eq!(partial.gpus[0].value(DcgmField::GpuTemp), Some(33.0));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A GPU block of `SMALL`'s shape with `lines` (indented four spaces) in it.
    fn one_gpu(lines: &str) -> NvsmiQuery {
        let text = format!(
            "==============NVSMI LOG==============\nAttached GPUs : 1\nGPU 00000000:3B:00.0\n    GPU UUID : GPU-a\n{lines}    Processes : None\n"
        );
        parse_query(&text, "n", 0).unwrap()
    }

    // Caught by the `nvsmi_query` fuzz target's "every mapped value is finite" check:
    // the performance state was read as a float, so `PNaN` became NaN and `Pinf` +Inf.
    #[test]
    fn fuzz_performance_state_is_a_state_number_not_a_float() {
        for bad in ["PNaN", "Pinf", "P-1", "P1.5", "P1e1", "P256"] {
            let q = one_gpu(&format!("    Performance State : {bad}\n"));
            assert_eq!(q.gpus[0].value(DcgmField::Pstate), None, "{bad}");
        }
        let q = one_gpu("    Performance State : P8\n");
        assert_eq!(q.gpus[0].value(DcgmField::Pstate), Some(8.0));
    }

    // Caught by the same check: ECC parts are finite one by one but their sum is not.
    #[test]
    fn fuzz_ecc_total_of_huge_parts_is_absent_not_infinite() {
        let q = one_gpu(
            "    ECC Errors\n        Volatile\n            SRAM Correctable : 1e308\n            DRAM Correctable : 1e308\n",
        );
        assert_eq!(q.gpus[0].value(DcgmField::EccSbeVolTotal), None);
        let q = one_gpu(
            "    ECC Errors\n        Volatile\n            SRAM Correctable : 2\n            DRAM Correctable : 3\n",
        );
        assert_eq!(q.gpus[0].value(DcgmField::EccSbeVolTotal), Some(5.0));
    }
}
