//! The lab's peak memory: the resident memory of every process in its pid
//! namespace (its `/proc` shows only those), summed every half second.

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

/// Sum of `VmRSS` over `/proc/<pid>/status`, in KiB.
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
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .sum()
}
