//! CPU time of this thread, this process or a child, read from `/proc` (Linux). No
//! unsafe code and no extra crate: the figures are in clock ticks, which is precise
//! enough over the seconds-long runs of the benchmarks.

use std::time::Duration;

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture gpuwarden targets.
    100.0
}

/// utime + stime of a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after the closing paren.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is index 0, utime is field 14 overall → index 11; stime index 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / ticks_per_second()))
}

/// CPU time used so far by the calling thread.
pub fn thread_cpu() -> Duration {
    stat_cpu("/proc/thread-self/stat").unwrap_or_default()
}

/// CPU time used so far by process `pid` (all its threads).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}
