//! The lab's peak memory: the proportional set size (PSS) of every process in
//! its pid namespace (its `/proc` shows only those), summed every half second.
//! PSS splits a shared page between the processes that map it, so
//! PostgreSQL's shared buffers, mapped by every backend, count once (a sum of
//! resident sizes would count them once per backend).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PeakMemory {
    peak_kib: Arc<AtomicU64>,
}

impl PeakMemory {
    /// Starts sampling on a thread of its own, until the lab exits.
    pub fn start() -> Self {
        let peak = Self {
            peak_kib: Arc::new(AtomicU64::new(0)),
        };
        let sampler = Arc::clone(&peak.peak_kib);
        std::thread::spawn(move || {
            loop {
                sampler.fetch_max(resident_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        peak
    }

    /// The highest sum seen so far, in MiB.
    pub fn peak_mib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed).max(resident_kib()) / 1024
    }
}

/// Sum of `Pss` over `/proc/<pid>/smaps_rollup` (`VmRSS` from `status` where
/// the kernel has no rollup), in KiB.
fn resident_kib() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| {
            let field = |file: &str, name: &str| -> Option<u64> {
                std::fs::read_to_string(entry.path().join(file))
                    .ok()?
                    .lines()
                    .find_map(|line| line.strip_prefix(name))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            };
            field("smaps_rollup", "Pss:").or_else(|| field("status", "VmRSS:"))
        })
        .sum()
}
