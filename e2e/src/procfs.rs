//! What the end-to-end tests read about the processes they started, from `/proc`: resident
//! memory (now, peak, sampled), CPU time; and stopping a forking process with its children.
//!
//! Must not: signal a process the test did not start (only `child`'s own children).

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The KiB figure of `field` (e.g. `VmRSS:`) in the text of a `/proc/PID/status`.
pub fn status_kib_in(status: &str, field: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow::anyhow!("no {field} in the process status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no value in {line:?}"))?
        .parse()?)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_kib_in(&status, field).map_err(|e| anyhow::anyhow!("/proc/{pid}/status: {e}"))
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// `VmHWM` (peak resident set) of a process in KiB.
pub fn hwm_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// `(utime, stime)` clock ticks from the text of a `/proc/PID/stat` (fields 14 and 15).
pub fn user_sys_ticks_in(stat: &str) -> anyhow::Result<(u64, u64)> {
    // Fields after the parenthesised name (which may hold spaces): state is the 1st, utime the
    // 12th, stime the 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("malformed /proc stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(f.len() > 13, "short /proc stat");
    Ok((f[11].parse()?, f[12].parse()?))
}

/// User and system CPU ticks a process has used so far.
pub fn user_sys_ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    user_sys_ticks_in(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// User + system CPU time a process has used so far, in seconds (assuming the usual 100 clock
/// ticks per second).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let (user, sys) = user_sys_ticks(pid)?;
    Ok((user + sys) as f64 / 100.0)
}

/// SIGKILLs the children of `child` (socat `fork` serves every accepted connection in a child,
/// which outlives its parent and keeps the connection open), then `child` itself.
pub fn kill_with_children(child: &mut Child) {
    let pid = child.id().to_string();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Field 4 (after the parenthesised name) is the parent pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1));
            if ppid == Some(pid.as_str()) {
                let _ = Command::new("kill")
                    .args(["-9", &e.file_name().to_string_lossy()])
                    .status();
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Samples the `VmRSS` of some processes every `every` on a thread, keeping the highest seen.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RssSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RssSampler")
            .field("peaks", &self.peaks())
            .finish()
    }
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(vec![0u64; pids.len()]));
        let thread = {
            let stop = stop.clone();
            let peaks = peaks.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (i, pid) in pids.iter().enumerate() {
                        if let Ok(kib) = rss_kib(*pid) {
                            let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                            p[i] = p[i].max(kib);
                        }
                    }
                    std::thread::sleep(every);
                }
            })
        };
        RssSampler {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// The highest `VmRSS` seen so far per process, in KiB (in the order given to `start`).
    pub fn peaks(&self) -> Vec<u64> {
        self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_parse() {
        let status = "Name:\tferrolb\nVmHWM:\t   31744 kB\nVmRSS:\t   30012 kB\n";
        assert_eq!(status_kib_in(status, "VmRSS:").unwrap(), 30012);
        assert_eq!(status_kib_in(status, "VmHWM:").unwrap(), 31744);
        assert!(status_kib_in(status, "VmSwap:").is_err());
        // A process name with spaces and a parenthesis does not shift the fields.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(user_sys_ticks_in(stat).unwrap(), (7, 3));
        assert!(user_sys_ticks_in("42 (x) S 1").is_err());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(cpu_secs(std::process::id()).unwrap() >= 0.0);
    }
}
