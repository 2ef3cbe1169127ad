//! Concurrent client histories (call and return times, inputs, outputs) and
//! their check for linearizability by the lab's checker (porcupine, the Go
//! module in `crates/lab/checker`; its `main.go` documents the format).

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, Clone, Serialize)]
struct Operation {
    client: u32,
    call: i64,
    #[serde(rename = "return")]
    returned: Option<i64>,
    input: Value,
    output: Value,
}

/// A history being recorded by concurrent clients.
#[derive(Debug)]
pub struct History {
    origin: Instant,
    operations: Mutex<Vec<Operation>>,
}

/// The checker's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    pub operations: usize,
    pub partitions: usize,
    pub linearizable: bool,
    #[serde(default)]
    pub counterexample: Vec<Value>,
}

impl History {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            operations: Mutex::new(Vec::new()),
        }
    }

    /// Records one operation; `returned: None` is an operation whose outcome
    /// is unknown (it may take effect at any time after its call).
    pub fn record(
        &self,
        client: u32,
        call: Duration,
        returned: Option<Duration>,
        input: Value,
        output: Value,
    ) {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.operations
            .lock()
            .expect("history lock")
            .push(Operation {
                client,
                call: nanos(call),
                returned: returned.map(nanos),
                input,
                output,
            });
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub fn len(&self) -> usize {
        self.operations.lock().expect("history lock").len()
    }

    /// How many operations of each kind had each outcome, e.g.
    /// `("reserve", "unknown") → 80`, in order.
    pub fn outcomes(&self) -> std::collections::BTreeMap<(String, String), usize> {
        let mut counts = std::collections::BTreeMap::new();
        for operation in self.operations.lock().expect("history lock").iter() {
            let op = operation.input["op"].as_str().unwrap_or("?").to_owned();
            let status = operation.output["status"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            *counts.entry((op, status)).or_insert(0) += 1;
        }
        counts
    }

    /// Runs the checker on the history against `model` from `initial`;
    /// writes the history and porcupine's visualisation next to `save_as`.
    pub async fn check(
        &self,
        checker: &Path,
        model: &str,
        initial: Value,
        save_as: &Path,
    ) -> anyhow::Result<Verdict> {
        let document = serde_json::json!({
            "model": model,
            "initial": initial,
            "operations": *self.operations.lock().expect("history lock"),
        });
        let text = serde_json::to_string(&document)?;
        std::fs::write(save_as.with_extension("json"), &text)?;
        let mut child = Command::new(checker)
            .arg("--visualize")
            .arg(save_as.with_extension("html"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run the checker {}", checker.display()))?;
        let mut stdin = child.stdin.take().context("the checker's stdin")?;
        stdin.write_all(text.as_bytes()).await?;
        drop(stdin);
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            bail!(
                "the checker failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).context("the checker's verdict")
    }
}
