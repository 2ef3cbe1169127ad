//! What a scenario prints: the steps it took, the tables of what clients saw,
//! and the checks that make its verdict. Everything is printed as it happens
//! (Markdown, so a run can be pasted into `docs/cap-lab.md`) and kept for the
//! report file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::ASCII_MARKDOWN};

/// The evidence of one scenario.
#[derive(Debug)]
pub struct Report {
    started: Instant,
    text: String,
    checks: Vec<(String, bool)>,
}

impl Report {
    pub fn new(name: &str, claim: &str) -> Self {
        let mut report = Self {
            started: Instant::now(),
            text: String::new(),
            checks: Vec::new(),
        };
        report.emit(&format!("\n## {name}\n\n_Claim: {claim}_\n"));
        report
    }

    /// A step taken (a fault made, a wait, a load started), with its time
    /// since the scenario began.
    pub fn step(&mut self, what: impl AsRef<str>) {
        let at = self.started.elapsed().as_secs_f64();
        self.emit(&format!("- `+{at:6.1}s` {}", what.as_ref()));
    }

    /// A table of what clients saw.
    pub fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        let mut table = Table::new();
        table.load_style(ASCII_MARKDOWN).set_header(header.to_vec());
        for row in rows {
            table.add_row(row);
        }
        self.emit(&format!("\n{table}\n"));
    }

    /// One condition of the verdict; the scenario passes when all hold.
    pub fn check(&mut self, what: impl AsRef<str>, holds: bool) -> bool {
        let mark = if holds { "PASS" } else { "FAIL" };
        self.emit(&format!("- **{mark}** {}", what.as_ref()));
        self.checks.push((what.as_ref().to_owned(), holds));
        holds
    }

    /// The scenario stopped on an error (a fault it could not make, a store it
    /// could not reach): a failed check naming it.
    pub fn error(&mut self, error: &anyhow::Error) {
        self.check(
            format!("the scenario ran to its end (stopped by: {error:#})"),
            false,
        );
    }

    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(_, holds)| *holds)
    }

    /// Prints and records the verdict; returns the report's text.
    pub fn finish(mut self) -> (bool, String) {
        let passed = self.passed();
        let failed = self.checks.iter().filter(|(_, holds)| !holds).count();
        let verdict = if passed {
            format!("**Verdict: passed** ({} checks)", self.checks.len())
        } else {
            format!(
                "**Verdict: FAILED** ({failed} of {} checks)",
                self.checks.len()
            )
        };
        let took = self.started.elapsed().as_secs_f64();
        self.emit(&format!("\n{verdict}, {took:.0} s\n"));
        (passed, self.text)
    }

    fn emit(&mut self, line: &str) {
        println!("{line}");
        self.text.push_str(line);
        self.text.push('\n');
    }
}

/// `200×12, 503×3` (statuses in order; `error` for a call with no answer).
pub fn status_counts<'a>(statuses: impl IntoIterator<Item = &'a Option<u16>>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for status in statuses {
        let key = status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        *counts.entry(key).or_default() += 1;
    }
    if counts.is_empty() {
        return "—".to_owned();
    }
    let mut out = String::new();
    for (status, count) in counts {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{status}×{count}");
    }
    out
}

/// Milliseconds, rounded: `12 ms`.
pub fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// `p50 12 ms, max 40 ms` of some latencies.
pub fn latency_summary(latencies: &[Duration]) -> String {
    if latencies.is_empty() {
        return "—".to_owned();
    }
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    format!("p50 {}, max {}", ms(p50), ms(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_are_ordered_and_name_missing_answers() {
        let statuses = [Some(503), Some(200), None, Some(503)];
        assert_eq!(status_counts(&statuses), "200×1, 503×2, no answer×1");
        assert_eq!(status_counts(&[]), "—");
    }

    #[test]
    fn a_report_passes_only_when_every_check_holds() {
        let mut report = Report::new("t", "c");
        assert!(!report.passed(), "no check is no verdict");
        report.check("a", true);
        assert!(report.passed());
        report.check("b", false);
        assert!(!report.passed());
    }

    #[test]
    fn latency_summary_takes_the_median_and_the_maximum() {
        let latencies = [10, 30, 20].map(Duration::from_millis);
        assert_eq!(latency_summary(&latencies), "p50 20 ms, max 30 ms");
    }
}
