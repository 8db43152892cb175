//! Following a live kernel log: a file with `tail -f` semantics (rotation and
//! truncation), `/dev/kmsg`, or `journalctl -k -f`, behind one small trait
//! ([`LineSource`]) so that the reader's logic is tested with a plain file.
//!
//! Everything here is blocking with explicit timeouts: the agent calls
//! [`KernelLogReader::poll`] from a dedicated thread (or `spawn_blocking`), and a timeout
//! lets it notice shutdown without a signal.

use super::{parse_line, KernelTimestamp, KernelXid, MAX_LINE_LEN};
use gpuwarden_model::{Event, GpuUuid, TimestampMs};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// What a source has for the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePoll {
    /// One line, without its line break.
    Line(String),
    /// Nothing new before the timeout; poll again.
    Idle,
    /// The source is finished (stdin closed, `journalctl` exited). Never from a followed file.
    End,
}

/// A source of kernel log lines.
pub trait LineSource: Send {
    /// The next complete line, waiting at most `timeout`.
    fn poll_line(&mut self, timeout: Duration) -> io::Result<SourcePoll>;
    /// What is being read, for logs and errors (`/dev/kmsg`, a path, `journalctl -k`).
    fn describe(&self) -> String;
}

/// `EPIPE`, which `/dev/kmsg` returns when records were overwritten before being read.
const EPIPE: i32 = 32;

/// How often a followed file is checked for new data, rotation and truncation.
const FILE_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Follows a file like `tail -F`: reads what is appended; when the path is replaced
/// (log rotation: a new inode) it finishes the old file and continues with the new one
/// from its start; when the file shrinks (truncation, `> file`) it starts over.
pub struct FileFollower {
    path: PathBuf,
    file: File,
    /// (device, inode) of the open file, to notice rotation.
    id: (u64, u64),
    pos: u64,
    buf: Vec<u8>,
}

impl FileFollower {
    /// Opens `path`; `from_start` reads what is already there, otherwise only new lines.
    pub fn open(path: impl Into<PathBuf>, from_start: bool) -> io::Result<Self> {
        let path = path.into();
        let mut file = File::open(&path)?;
        let id = file_id(&file.metadata()?);
        let pos = if from_start { 0 } else { file.seek(SeekFrom::End(0))? };
        Ok(FileFollower {
            path,
            file,
            id,
            pos,
            buf: Vec::new(),
        })
    }

    /// Takes one complete line out of the buffer, if there is one.
    fn take_line(&mut self) -> Option<String> {
        let nl = self.buf.iter().position(|&b| b == b'\n');
        let end = match nl {
            Some(i) => i,
            // A "line" longer than any kernel record: hand it over in pieces rather than
            // buffer without bound.
            None if self.buf.len() >= MAX_LINE_LEN => MAX_LINE_LEN,
            None => return None,
        };
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let consumed = if nl.is_some() { end + 1 } else { end };
        self.buf.drain(..consumed);
        Some(line)
    }

    /// Reads what is available now. Returns the number of bytes read.
    fn read_available(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let mut total = 0;
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                return Ok(total);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.pos += n as u64;
            total += n;
            if self.buf.len() >= MAX_LINE_LEN * 4 {
                return Ok(total);
            }
        }
    }

    /// At end of file: has the file been rotated away or truncated?
    fn check_replaced(&mut self) -> io::Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Between "rename old" and "create new": keep the old file for now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if file_id(&meta) != self.id {
            // Rotated. Drain what was written to the old file just before the rename,
            // and end a partial last line there: the new file starts a new line.
            self.read_available()?;
            if self.buf.last().is_some_and(|&b| b != b'\n') {
                self.buf.push(b'\n');
            }
            let new = File::open(&self.path)?;
            self.id = file_id(&new.metadata()?);
            self.file = new;
            self.pos = 0;
        } else if meta.len() < self.pos {
            // Truncated in place: everything we had is gone; start over.
            self.file.seek(SeekFrom::Start(0))?;
            self.pos = 0;
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> (u64, u64) {
    // Without inodes rotation is only seen as truncation.
    (0, 0)
}

impl LineSource for FileFollower {
    fn poll_line(&mut self, timeout: Duration) -> io::Result<SourcePoll> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.take_line() {
                return Ok(SourcePoll::Line(line));
            }
            if self.read_available()? > 0 {
                continue;
            }
            self.check_replaced()?;
            if self.read_available()? > 0 || self.buf.contains(&b'\n') {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(SourcePoll::Idle);
            }
            std::thread::sleep(FILE_POLL_INTERVAL.min(deadline - now));
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Lines from any blocking reader (stdin, `/dev/kmsg`, a child's stdout), read on a
/// thread of its own so that polling can time out.
pub struct StreamSource {
    rx: Receiver<io::Result<String>>,
    name: String,
}

impl StreamSource {
    /// Starts reading `reader` on a new thread. Up to 1024 lines are buffered.
    pub fn spawn<R: Read + Send + 'static>(reader: R, name: impl Into<String>) -> Self {
        let (tx, rx) = mpsc::sync_channel(1024);
        let name = name.into();
        let thread_name = format!("kernel-log: {name}");
        let spawned = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || read_lines(BufReader::new(reader), tx));
        if let Err(e) = spawned {
            // The receiver sees a closed channel: the source ends at once.
            tracing::warn!(error = %e, "could not start the kernel log reader thread");
        }
        StreamSource { rx, name }
    }

    /// Follows `/dev/kmsg` from the oldest record the kernel still holds.
    ///
    /// Opening can succeed where reading is refused (containers without `CAP_SYSLOG`,
    /// `dmesg_restrict`), so a first non-blocking read on a separate descriptor (each
    /// descriptor has its own position) checks that records can really be read; the
    /// error is returned here, where the caller can still fall back.
    pub fn kmsg() -> io::Result<Self> {
        probe_kmsg()?;
        let f = File::open("/dev/kmsg")?;
        Ok(Self::spawn(f, "/dev/kmsg"))
    }

    /// Standard input.
    pub fn stdin() -> Self {
        Self::spawn(io::stdin(), "stdin")
    }
}

#[cfg(unix)]
fn probe_kmsg() -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut record = [0u8; 8192];
    match f.read(&mut record) {
        Ok(_) => Ok(()),
        // Nothing to read yet, or records overwritten: readable either way.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EPIPE) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn probe_kmsg() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "/dev/kmsg exists only on Linux",
    ))
}

fn read_lines<R: BufRead>(mut reader: R, tx: SyncSender<io::Result<String>>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.by_ref().take(MAX_LINE_LEN as u64).read_until(b'\n', &mut buf);
        match read {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let line = text.trim_end_matches(['\n', '\r']).to_string();
                if tx.send(Ok(line)).is_err() {
                    return;
                }
            }
            // /dev/kmsg: records were overwritten before we read them. The next read
            // continues with the oldest record still there.
            Err(e) if e.raw_os_error() == Some(EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

impl LineSource for StreamSource {
    fn poll_line(&mut self, timeout: Duration) -> io::Result<SourcePoll> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(line)) => Ok(SourcePoll::Line(line)),
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Ok(SourcePoll::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(SourcePoll::End),
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// `journalctl -k -f -o short-iso`: the kernel log through systemd's journal, for hosts
/// where `/dev/kmsg` is not readable (containers without `CAP_SYSLOG`). The child is
/// killed when this is dropped.
pub struct JournalSource {
    child: Child,
    lines: StreamSource,
}

impl JournalSource {
    /// Spawns `journalctl`. Waits up to `startup` for it to fail fast (not installed, no
    /// journal, no permission): a child that exits within that time is an error, so the
    /// caller can fall back instead of reading nothing forever.
    pub fn spawn(startup: Duration) -> io::Result<Self> {
        let mut child = Command::new("journalctl")
            .args(["-k", "-f", "-o", "short-iso", "--no-pager", "-n", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + startup;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!("journalctl exited at once ({status})")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("journalctl has no stdout"))?;
        Ok(JournalSource {
            child,
            lines: StreamSource::spawn(stdout, "journalctl -k"),
        })
    }
}

impl LineSource for JournalSource {
    fn poll_line(&mut self, timeout: Duration) -> io::Result<SourcePoll> {
        self.lines.poll_line(timeout)
    }

    fn describe(&self) -> String {
        self.lines.describe()
    }
}

impl Drop for JournalSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the host's clock looked like, to turn line timestamps into wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBase {
    /// When the host booted (ms since the epoch), for since-boot timestamps.
    pub boot_time_ms: Option<TimestampMs>,
    /// Now, used when a line has no usable timestamp.
    pub now_ms: TimestampMs,
}

impl TimeBase {
    /// This host: boot time from `/proc/stat` (`btime`), now from the system clock.
    pub fn host() -> Self {
        let now_ms = now_ms();
        let boot_time_ms = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|secs| secs * 1000)
        });
        TimeBase { boot_time_ms, now_ms }
    }

    /// Wall-clock milliseconds for a line's timestamp (now when unknown).
    pub fn wall_ms(&self, ts: Option<KernelTimestamp>) -> TimestampMs {
        match ts {
            Some(KernelTimestamp::Utc { ts_ms }) | Some(KernelTimestamp::Local { ts_ms }) => ts_ms,
            Some(KernelTimestamp::SinceBoot { us }) => match self.boot_time_ms {
                Some(boot) => boot.saturating_add((us / 1000) as i64),
                None => self.now_ms,
            },
            None => self.now_ms,
        }
    }
}

fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as TimestampMs)
        .unwrap_or(0)
}

/// What [`KernelLogReader::poll`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum ReaderPoll {
    Xid(Box<KernelXid>),
    Idle,
    End,
}

/// Reads XID/SXID reports from a [`LineSource`], skipping every other line.
pub struct KernelLogReader {
    source: Box<dyn LineSource>,
    time: TimeBase,
    lines_read: u64,
}

impl KernelLogReader {
    pub fn new(source: Box<dyn LineSource>) -> Self {
        KernelLogReader {
            source,
            time: TimeBase::host(),
            lines_read: 0,
        }
    }

    /// Follows a log file (`/var/log/kern.log`, a `dmesg -w` redirect).
    pub fn follow_file(path: impl Into<PathBuf>, from_start: bool) -> io::Result<Self> {
        Ok(Self::new(Box::new(FileFollower::open(path, from_start)?)))
    }

    /// The best kernel log this host offers: `/dev/kmsg` when it can be opened, else
    /// `fallback_file` when given and present, else `journalctl -k -f`.
    pub fn open_auto(fallback_file: Option<&Path>) -> io::Result<Self> {
        match StreamSource::kmsg() {
            Ok(s) => return Ok(Self::new(Box::new(s))),
            Err(e) => tracing::info!(error = %e, "/dev/kmsg is not readable; trying the fallbacks"),
        }
        if let Some(path) = fallback_file {
            if path.exists() {
                return Self::follow_file(path, false);
            }
        }
        let journal = JournalSource::spawn(Duration::from_millis(500))?;
        Ok(Self::new(Box::new(journal)))
    }

    /// Replaces the time base (tests, or a caller that knows better).
    pub fn with_time_base(mut self, time: TimeBase) -> Self {
        self.time = time;
        self
    }

    /// What is being read.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// Lines read so far, reports or not.
    pub fn lines_read(&self) -> u64 {
        self.lines_read
    }

    /// The next report, waiting at most about `timeout` for one.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<ReaderPoll> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.source.poll_line(left)? {
                SourcePoll::Line(line) => {
                    self.lines_read += 1;
                    if let Some(x) = parse_line(&line) {
                        return Ok(ReaderPoll::Xid(Box::new(x)));
                    }
                    if left.is_zero() {
                        return Ok(ReaderPoll::Idle);
                    }
                }
                SourcePoll::Idle => return Ok(ReaderPoll::Idle),
                SourcePoll::End => return Ok(ReaderPoll::End),
            }
        }
    }

    /// The model event for a report, when its PCI address maps to a GPU in `inventory`
    /// (see [`KernelXid::to_event`]). Since-boot timestamps use this host's boot time.
    pub fn to_event(&self, xid: &KernelXid, inventory: &dyn Fn(&str) -> Option<(GpuUuid, String)>) -> Option<Event> {
        let time = TimeBase {
            now_ms: now_ms(),
            ..self.time
        };
        xid.to_event(&time, inventory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const XID: &str = "[  10.000000] NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=p, GPU has fallen off the bus.";

    fn next_xid(r: &mut KernelLogReader) -> Option<u32> {
        match r.poll(Duration::from_secs(2)).unwrap() {
            ReaderPoll::Xid(x) => Some(x.code),
            _ => None,
        }
    }

    #[test]
    fn follows_appends_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(&path, format!("junk\n{XID}\n")).unwrap();
        let mut r = KernelLogReader::follow_file(&path, true).unwrap();
        assert_eq!(next_xid(&mut r), Some(79));
        assert_eq!(r.poll(Duration::from_millis(50)).unwrap(), ReaderPoll::Idle);

        // Append, in two writes: a partial line is not reported until it is complete.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        write!(f, "NVRM: Xid (PCI:0000:3b:00): 1").unwrap();
        f.flush().unwrap();
        assert_eq!(r.poll(Duration::from_millis(300)).unwrap(), ReaderPoll::Idle);
        writeln!(f, "3, pid=2, name=q, msg").unwrap();
        assert_eq!(next_xid(&mut r), Some(13));

        // Rotation: the old file is renamed, a new one created at the same path.
        std::fs::rename(&path, dir.path().join("kern.log.1")).unwrap();
        std::fs::write(&path, "NVRM: Xid (PCI:0000:3b:00): 31, msg\n").unwrap();
        assert_eq!(next_xid(&mut r), Some(31));

        // Truncation in place, then new content shorter than before.
        std::fs::write(&path, "").unwrap();
        let _ = r.poll(Duration::from_millis(300)).unwrap();
        std::fs::write(&path, "NVRM: Xid (PCI:0000:3b:00): 43, m\n").unwrap();
        assert_eq!(next_xid(&mut r), Some(43));
    }

    #[test]
    fn starting_at_the_end_skips_old_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(&path, format!("{XID}\n")).unwrap();
        let mut r = KernelLogReader::follow_file(&path, false).unwrap();
        assert_eq!(r.poll(Duration::from_millis(50)).unwrap(), ReaderPoll::Idle);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "NVRM: Xid (PCI:0000:3b:00): 48, m").unwrap();
        assert_eq!(next_xid(&mut r), Some(48));
    }

    #[test]
    fn stream_source_ends() {
        let text = format!("a\n{XID}\nb");
        let mut r = KernelLogReader::new(Box::new(StreamSource::spawn(io::Cursor::new(text.into_bytes()), "t")));
        assert_eq!(next_xid(&mut r), Some(79));
        assert_eq!(r.poll(Duration::from_secs(2)).unwrap(), ReaderPoll::End);
        assert_eq!(r.lines_read(), 3);
    }

    #[test]
    fn to_event_uses_the_time_base() {
        let r = KernelLogReader::new(Box::new(StreamSource::spawn(io::empty(), "t"))).with_time_base(TimeBase {
            boot_time_ms: Some(1_000),
            now_ms: 0,
        });
        let x = parse_line(XID).unwrap();
        let inv = |_: &str| Some((GpuUuid::new("GPU-1"), "n".to_string()));
        assert_eq!(r.to_event(&x, &inv).unwrap().ts_ms, 11_000);
    }
}
