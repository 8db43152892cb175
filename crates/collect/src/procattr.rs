//! Process attribution: which container, Kubernetes pod or Slurm job a GPU process
//! belongs to, from what the host's `/proc` and kubelet directories say.
//!
//! For a PID, `/proc/<pid>/cgroup` (cgroup v1: one line per hierarchy; v2: `0::/path`)
//! is searched for, in order of trust:
//!
//! 1. a **container id** (64 hex digits) in the runtime's naming: Docker
//!    (`/docker/<id>`, `docker-<id>.scope`), containerd (`cri-containerd-<id>.scope`,
//!    `…:cri-containerd:<id>`), CRI-O (`crio-<id>.scope`; `crio-conmon-<id>` is the
//!    monitor process, not the container), or a bare id under a kubelet pod directory;
//! 2. a **Kubernetes pod UID** from the kubelet's cgroup layout: systemd driver
//!    `kubepods-<qos>-pod<uid with _>.slice`, cgroupfs driver `/kubepods/<qos>/pod<uid>/`;
//! 3. a **Slurm job** from the `task/cgroup` plugin layout (`/slurm/uid_N/job_N/…` on v1,
//!    `slurmstepd.scope/job_N/…` on v2), else `SLURM_JOB_ID` in `/proc/<pid>/environ`.
//!
//! The **Slurm account** (what tenants scoped by account are matched on) is in no cgroup
//! path; `slurmstepd` exports it as `SLURM_JOB_ACCOUNT` into every task's environment,
//! which is read from `/proc/<pid>/environ` when a Slurm job is known. A process can
//! change its own environment, so the account says what the job's processes declare:
//! at worst a user discloses their own GPU to another account's tenant, never the
//! reverse (attribution only ever describes the GPUs the process itself uses).
//!
//! The cgroup path does not carry a pod's namespace or name. [`KubeletLogDirs`] finds
//! them in the kubelet's log directories (`/var/log/pods/<ns>_<pod>_<uid>/<container>/`
//! and `/var/log/containers/<pod>_<ns>_<container>-<id>.log`), which every kubelet
//! writes and a DaemonSet can mount read-only. The kubelet pod-resources gRPC API
//! (`/var/lib/kubelet/pod-resources/kubelet.sock`) would also give the device→pod
//! assignment; it is not used yet (see `docs/deploy.md`).
//!
//! Reads are bounded (a cgroup file over 64 KiB or an environment over 256 KiB is cut)
//! and never fail the caller: an unreadable PID (gone, or not ours to read) simply has no
//! attribution.

use gpuwarden_model::Workload;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

const MAX_CGROUP_BYTES: u64 = 64 * 1024;
const MAX_ENVIRON_BYTES: u64 = 256 * 1024;
/// Directory entries scanned at most per lookup in the kubelet log directories.
const MAX_DIR_ENTRIES: usize = 20_000;

/// The container runtime whose naming matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    /// A bare container id under a kubelet pod cgroup (cgroupfs driver): runtime unknown.
    Unknown,
}

/// What a process's cgroup membership says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// Kubernetes pod UID in its canonical dashed form.
    pub pod_uid: Option<String>,
    pub slurm_job: Option<String>,
    /// The cgroup v2 path, or the v1 path of the first hierarchy that named something.
    pub path: Option<String>,
}

/// Everything known about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    pub pid: u32,
    pub cgroup: CgroupInfo,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// Slurm job from the cgroup path, else from the environment.
    pub slurm_job: Option<String>,
    /// `SLURM_JOB_ACCOUNT` from the environment, only when a Slurm job is known.
    pub slurm_account: Option<String>,
}

impl Attribution {
    /// The model's workload for this process (empty when nothing is known).
    pub fn workload(&self) -> Workload {
        Workload {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
            job: self.slurm_job.clone(),
            account: self.slurm_account.clone(),
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container id in one path segment, with its runtime.
fn container_in_segment(seg: &str) -> Option<(String, Runtime)> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    if seg.starts_with("crio-conmon-") {
        return None;
    }
    for (prefix, runtime) in [
        ("cri-containerd-", Runtime::Containerd),
        ("docker-", Runtime::Docker),
        ("crio-", Runtime::CriO),
    ] {
        if let Some(id) = seg.strip_prefix(prefix).filter(|id| is_hex_id(id)) {
            return Some((id.to_owned(), runtime));
        }
    }
    // containerd's cgroup-namespace notation: `<slice>:cri-containerd:<id>`.
    let mut parts = seg.rsplitn(3, ':');
    if let (Some(id), Some(kind)) = (parts.next(), parts.next()) {
        if is_hex_id(id) {
            let runtime = match kind {
                "cri-containerd" => Runtime::Containerd,
                "docker" => Runtime::Docker,
                "crio" => Runtime::CriO,
                _ => Runtime::Unknown,
            };
            return Some((id.to_owned(), runtime));
        }
    }
    None
}

/// A pod UID in one segment: `pod<uid>` (cgroupfs) or `kubepods-…-pod<uid_>.slice`.
fn pod_uid_in_segment(seg: &str) -> Option<String> {
    let seg = seg.split(':').next().unwrap_or(seg);
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let uid = match seg.rfind("-pod") {
        Some(i) if seg.starts_with("kubepods") => &seg[i + 4..],
        _ => seg.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    let valid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    valid.then_some(uid)
}

/// Parses the text of `/proc/<pid>/cgroup`. Never fails: unknown shapes give nothing.
pub fn parse_cgroup(text: &str) -> CgroupInfo {
    let mut info = CgroupInfo::default();
    for line in text.lines() {
        // `hierarchy-id:controllers:path`; the path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let in_kubepods = segments.first().is_some_and(|s| s.starts_with("kubepods"))
            || segments.iter().any(|s| s.starts_with("kubepods"));
        let mut named = false;
        for (i, seg) in segments.iter().enumerate() {
            if info.pod_uid.is_none() {
                if let Some(uid) = pod_uid_in_segment(seg) {
                    info.pod_uid = Some(uid);
                    named = true;
                }
            }
            if info.container_id.is_none() {
                if let Some((id, rt)) = container_in_segment(seg) {
                    info.container_id = Some(id);
                    info.runtime = Some(rt);
                    named = true;
                } else if is_hex_id(seg) {
                    // `/docker/<id>` or a bare id under a cgroupfs pod directory.
                    let parent = i.checked_sub(1).map(|p| segments[p]);
                    let runtime = match parent {
                        Some("docker") => Some(Runtime::Docker),
                        Some(p) if in_kubepods && p.starts_with("pod") => Some(Runtime::Unknown),
                        _ => None,
                    };
                    if let Some(rt) = runtime {
                        info.container_id = Some((*seg).to_owned());
                        info.runtime = Some(rt);
                        named = true;
                    }
                }
            }
            if info.slurm_job.is_none() && path.contains("slurm") {
                if let Some(job) = seg
                    .strip_prefix("job_")
                    .filter(|j| !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()))
                {
                    info.slurm_job = Some(job.to_owned());
                    named = true;
                }
            }
        }
        if named && info.path.is_none() {
            info.path = Some(path.to_owned());
        }
    }
    info
}

/// `SLURM_JOB_ID` from the NUL-separated text of `/proc/<pid>/environ`.
pub fn slurm_job_from_environ(environ: &[u8]) -> Option<String> {
    environ_value(environ, b"SLURM_JOB_ID=")
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
}

/// `SLURM_JOB_ACCOUNT` from the NUL-separated text of `/proc/<pid>/environ`. Slurm
/// account names are short words; anything longer than 256 bytes or with control
/// characters is not taken.
pub fn slurm_account_from_environ(environ: &[u8]) -> Option<String> {
    environ_value(environ, b"SLURM_JOB_ACCOUNT=")
        .filter(|v| v.len() <= 256 && !v.chars().any(char::is_control))
        .map(str::to_owned)
}

fn environ_value<'a>(environ: &'a [u8], key: &[u8]) -> Option<&'a str> {
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(key))
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
}

fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path).ok()?.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Looks a pod or container up by the names the kubelet gives its log directories.
pub trait PodResolver: Send + Sync {
    /// Namespace and pod name of a pod UID.
    fn pod(&self, uid: &str) -> Option<(String, String)>;
    /// Container name of a container id.
    fn container(&self, id: &str) -> Option<String>;
}

/// [`PodResolver`] over `/var/log/pods` and `/var/log/containers` (or test copies).
#[derive(Debug, Clone)]
pub struct KubeletLogDirs {
    pub pods_dir: PathBuf,
    pub containers_dir: PathBuf,
}

impl Default for KubeletLogDirs {
    fn default() -> Self {
        KubeletLogDirs {
            pods_dir: PathBuf::from("/var/log/pods"),
            containers_dir: PathBuf::from("/var/log/containers"),
        }
    }
}

fn dir_names(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .take(MAX_DIR_ENTRIES)
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
}

impl PodResolver for KubeletLogDirs {
    fn pod(&self, uid: &str) -> Option<(String, String)> {
        // `<namespace>_<pod>_<uid>`: namespaces and pod names cannot contain '_'.
        let suffix = format!("_{uid}");
        dir_names(&self.pods_dir).find_map(|name| {
            let rest = name.strip_suffix(&suffix)?;
            let (ns, pod) = rest.split_once('_')?;
            Some((ns.to_owned(), pod.to_owned()))
        })
    }

    fn container(&self, id: &str) -> Option<String> {
        // `<pod>_<namespace>_<container>-<id>.log`
        let suffix = format!("-{id}.log");
        dir_names(&self.containers_dir).find_map(|name| {
            let rest = name.strip_suffix(&suffix)?;
            rest.splitn(3, '_').nth(2).map(str::to_owned)
        })
    }
}

/// Attributes processes by reading a `/proc`-shaped directory.
pub struct ProcAttributor {
    proc_root: PathBuf,
    resolver: Option<Box<dyn PodResolver>>,
}

impl ProcAttributor {
    /// `proc_root` is `/proc` on a host (or the host's `/proc` mounted into a container
    /// that shares the host PID namespace).
    pub fn new(proc_root: impl Into<PathBuf>, resolver: Option<Box<dyn PodResolver>>) -> Self {
        ProcAttributor {
            proc_root: proc_root.into(),
            resolver,
        }
    }

    /// The `/proc` directory read.
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Everything that can be learned about `pid`; empty when it cannot be read.
    pub fn attribute(&self, pid: u32) -> Attribution {
        let dir = self.proc_root.join(pid.to_string());
        let cgroup = read_bounded(&dir.join("cgroup"), MAX_CGROUP_BYTES)
            .map(|b| parse_cgroup(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        // Read once: it gives the job when the cgroup path did not, and the account.
        let environ = read_bounded(&dir.join("environ"), MAX_ENVIRON_BYTES);
        let slurm_job = cgroup
            .slurm_job
            .clone()
            .or_else(|| environ.as_deref().and_then(slurm_job_from_environ));
        let slurm_account = slurm_job
            .as_ref()
            .and(environ.as_deref())
            .and_then(slurm_account_from_environ);
        let mut a = Attribution {
            pid,
            slurm_job,
            slurm_account,
            ..Attribution::default()
        };
        if let Some(r) = &self.resolver {
            if let Some((ns, pod)) = cgroup.pod_uid.as_deref().and_then(|uid| r.pod(uid)) {
                a.namespace = Some(ns);
                a.pod = Some(pod);
            }
            a.container = cgroup.container_id.as_deref().and_then(|id| r.container(id));
        }
        a.cgroup = cgroup;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/cgroup")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const CONTAINERD_ID: &str = "4f3b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    #[test]
    fn kubelet_systemd_driver_containerd_v2() {
        let c = parse_cgroup(&fixture("k8s-containerd-systemd-v2.cgroup"));
        assert_eq!(c.pod_uid.as_deref(), Some("7c9e5d0a-1b2c-4d3e-8f90-a1b2c3d4e5f6"));
        assert_eq!(c.container_id.as_deref(), Some(CONTAINERD_ID));
        assert_eq!(c.runtime, Some(Runtime::Containerd));
        assert_eq!(c.slurm_job, None);
    }

    #[test]
    fn containerd_cgroupns_notation() {
        let c = parse_cgroup(&fixture("k8s-containerd-cgroupns-v2.cgroup"));
        assert_eq!(c.pod_uid.as_deref(), Some("7c9e5d0a-1b2c-4d3e-8f90-a1b2c3d4e5f6"));
        assert_eq!(c.container_id.as_deref(), Some(CONTAINERD_ID));
        assert_eq!(c.runtime, Some(Runtime::Containerd));
    }

    #[test]
    fn kubelet_cgroupfs_driver_v1() {
        let c = parse_cgroup(&fixture("k8s-cgroupfs-v1.cgroup"));
        assert_eq!(c.pod_uid.as_deref(), Some("0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"));
        assert_eq!(
            c.container_id.as_deref(),
            Some("9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b")
        );
        assert_eq!(c.runtime, Some(Runtime::Unknown));
    }

    #[test]
    fn crio_container_but_not_its_conmon() {
        let c = parse_cgroup(&fixture("k8s-crio-v2.cgroup"));
        assert_eq!(c.runtime, Some(Runtime::CriO));
        assert_eq!(c.pod_uid.as_deref(), Some("11112222-3333-4444-5555-666677778888"));
        let conmon = parse_cgroup(&fixture("k8s-crio-conmon-v2.cgroup"));
        assert_eq!(conmon.container_id, None);
        assert_eq!(conmon.pod_uid.as_deref(), Some("11112222-3333-4444-5555-666677778888"));
    }

    #[test]
    fn docker_both_drivers() {
        let v1 = parse_cgroup(&fixture("docker-v1.cgroup"));
        assert_eq!(v1.runtime, Some(Runtime::Docker));
        assert!(v1.container_id.as_deref().is_some_and(|id| id.starts_with("e3c5b1a7")));
        assert_eq!(v1.pod_uid, None);
        let v2 = parse_cgroup(&fixture("docker-systemd-v2.cgroup"));
        assert_eq!(v2.runtime, Some(Runtime::Docker));
        assert!(v2.container_id.as_deref().is_some_and(|id| id.starts_with("5d4c3b2a")));
    }

    #[test]
    fn slurm_jobs_v1_v2_and_environ() {
        assert_eq!(
            parse_cgroup(&fixture("slurm-v1.cgroup")).slurm_job.as_deref(),
            Some("4242")
        );
        assert_eq!(
            parse_cgroup(&fixture("slurm-v2.cgroup")).slurm_job.as_deref(),
            Some("9001")
        );
        let env =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/cgroup/slurm.environ")).unwrap();
        assert_eq!(slurm_job_from_environ(&env).as_deref(), Some("777"));
        assert_eq!(slurm_job_from_environ(b"SLURM_JOB_ID=\0"), None);
        assert_eq!(slurm_account_from_environ(&env).as_deref(), Some("physics"));
        assert_eq!(slurm_account_from_environ(b"SLURM_JOB_ACCOUNT=\0"), None);
        assert_eq!(slurm_account_from_environ(b"SLURM_JOB_ACCOUNT=a\x1bb\0"), None);
    }

    #[test]
    fn host_process_has_no_attribution() {
        assert_eq!(parse_cgroup(&fixture("host-session-v2.cgroup")), CgroupInfo::default());
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            ":::",
            "0::",
            "x",
            "1:a:/kubepods/pod/",
            "0::/kubepods-pod.slice",
            "\u{0}\u{ffff}:/job_",
        ] {
            let _ = parse_cgroup(text);
        }
    }

    /// A fake host: `/proc/<pid>/{cgroup,environ}` and the kubelet log directories.
    #[test]
    fn attributes_a_pid_to_namespace_pod_and_container() {
        let root = tempfile::tempdir().unwrap();
        let proc_dir = root.path().join("proc");
        std::fs::create_dir_all(proc_dir.join("4242")).unwrap();
        std::fs::write(
            proc_dir.join("4242/cgroup"),
            fixture("k8s-containerd-systemd-v2.cgroup"),
        )
        .unwrap();
        std::fs::create_dir_all(proc_dir.join("77")).unwrap();
        std::fs::write(proc_dir.join("77/cgroup"), fixture("host-session-v2.cgroup")).unwrap();
        std::fs::write(
            proc_dir.join("77/environ"),
            b"SLURM_JOB_ID=31\0SLURM_JOB_ACCOUNT=chem\0",
        )
        .unwrap();
        let pods = root.path().join("pods");
        let containers = root.path().join("containers");
        std::fs::create_dir_all(pods.join("ml-team_trainer-0_7c9e5d0a-1b2c-4d3e-8f90-a1b2c3d4e5f6/pytorch")).unwrap();
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::write(
            containers.join(format!("trainer-0_ml-team_pytorch-{CONTAINERD_ID}.log")),
            b"",
        )
        .unwrap();
        let attributor = ProcAttributor::new(
            &proc_dir,
            Some(Box::new(KubeletLogDirs {
                pods_dir: pods,
                containers_dir: containers,
            })),
        );
        let a = attributor.attribute(4242);
        assert_eq!(a.namespace.as_deref(), Some("ml-team"));
        assert_eq!(a.pod.as_deref(), Some("trainer-0"));
        assert_eq!(a.container.as_deref(), Some("pytorch"));
        assert_eq!(a.workload().job, None);
        let b = attributor.attribute(77);
        assert_eq!(b.slurm_job.as_deref(), Some("31"));
        assert_eq!(
            b.workload().account.as_deref(),
            Some("chem"),
            "the account of a Slurm task"
        );
        assert_eq!(a.slurm_account, None, "no account without a Slurm job");
        assert!(attributor.attribute(99_999).workload().is_empty());
    }
}
