//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, started
//! with `pg_ctl` on a free loopback port, stopped and removed on drop (so a suite can run
//! twice in a row, and a failed test leaves nothing running).
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as
//! the `postgres` user (`runuser -u postgres --`), which owns the temporary directory.
//! The binaries are looked up in `PATH`, then in Debian's `/usr/lib/postgresql/*/bin`.
//!
//! [`PgCluster::start_or_skip`] returns `None` (the test skips with a message) when
//! PostgreSQL is not installed, unless `GPUWARDEN_REQUIRE_TOOLS=1` (set by
//! `scripts/test.sh`), in which case it panics: the test command must not pass without
//! the database tests having run. Always compiled (std only) so the binary's end-to-end
//! tests can use it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running throwaway PostgreSQL server. See the module docs.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some("postgres")` when the server runs as another user (we are root).
    run_as: Option<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The directory holding `initdb`, `pg_ctl` and `psql`, if PostgreSQL is installed.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            if d.join("initdb").is_file() && d.join("pg_ctl").is_file() {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// `psql` beside `initdb`, else Debian's, else whatever `PATH` has.
fn psql_program(bin: &Path) -> PathBuf {
    let beside = bin.join("psql");
    if beside.is_file() {
        return beside;
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/psql"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgCluster {
    /// Starts a server, or `None` (with a message on stderr) when PostgreSQL is not
    /// installed and `GPUWARDEN_REQUIRE_TOOLS` is not `1`. Panics when it is installed
    /// but does not start, or is required and missing.
    pub fn start_or_skip(test: &str) -> Option<PgCluster> {
        if find_bin_dir().is_none() {
            let required = std::env::var("GPUWARDEN_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: PostgreSQL (initdb, pg_ctl) is required (GPUWARDEN_REQUIRE_TOOLS=1) but not installed; \
                 install the Debian package postgresql"
            );
            eprintln!("{test}: skipped, PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        }
        Some(PgCluster::start().unwrap_or_else(|e| panic!("{test}: {e}")))
    }

    /// `initdb` and start a server on a free loopback port (bounded waits: 60 s for
    /// `initdb`, 30 s for the start). `fsync` is off: tests need no crash safety from a
    /// throwaway server, and it keeps them fast on a busy disk.
    pub fn start() -> Result<PgCluster, String> {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start) with PostgreSQL's default durability (`fsync` on), for
    /// benchmarks whose figures must be comparable to a real deployment.
    pub fn start_durable() -> Result<PgCluster, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<PgCluster, String> {
        let bin = find_bin_dir().ok_or("PostgreSQL is not installed (no initdb in PATH or /usr/lib/postgresql)")?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("gpuwarden-pg-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let run_as = is_root().then(|| "postgres".to_string());
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            run_as,
        };
        if cluster.run_as.is_some() {
            let out = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&cluster.dir)
                .output()
                .map_err(|e| format!("chown of {}: {e}", cluster.dir.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "chown postgres {}: {} (is there a postgres user?)",
                    cluster.dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let data = cluster.data_dir();
        cluster.run_pg(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            Duration::from_secs(60),
        )?;
        // A free port can be taken between the check and the bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
            let mut opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                cluster.port,
                path_str(&cluster.dir)?
            );
            if !durable {
                opts.push_str(" -c fsync=off -c full_page_writes=off");
            }
            let log = cluster.dir.join("server.log");
            match cluster.run_pg(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&data)?,
                    "-o",
                    &opts,
                    "-l",
                    path_str(&log)?,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
                Duration::from_secs(40),
            ) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!("{e}\nserver log:\n{log}");
                }
            }
        }
        Err(format!("PostgreSQL did not start: {last}"))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser `postgres` (trust authentication).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with `psql` against `database` (errors stop it: `ON_ERROR_STOP`).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(psql_program(&self.bin))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates an empty database named `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Restarts the server (fast shutdown: open connections are cut), waiting until it
    /// accepts connections again.
    pub fn restart(&self) -> Result<(), String> {
        let data = self.data_dir();
        self.run_pg(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "fast", "-w", "-t", "30", "restart"],
            Duration::from_secs(40),
        )
    }

    /// Runs a PostgreSQL program (as `postgres` when we are root) with a time limit.
    fn run_pg(&self, program: &str, args: &[&str], limit: Duration) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out_path = self.dir.join(format!("{program}.out"));
        let out = std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut child = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                    return Err(format!("{program} failed ({status}): {text}"));
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{program} did not finish within {limit:?}"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for {program}: {e}")),
            }
        }
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            if let Ok(data) = path_str(&self.data_dir()).map(str::to_owned) {
                let _ = self.run_pg(
                    "pg_ctl",
                    &["-D", &data, "-m", "immediate", "-w", "-t", "20", "stop"],
                    Duration::from_secs(25),
                );
            }
        }
        if std::env::var_os("GPUWARDEN_PG_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
