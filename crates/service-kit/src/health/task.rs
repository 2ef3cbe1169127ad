use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{CheckFuture, ReadinessCheck};

/// A background task the service cannot do without (a sweeper, a relay).
///
/// [`TaskCheck::spawn`] runs the task and watches it: if it ends while the
/// service is not shutting down (a panic, or an early return), the end is
/// logged and `/readyz` answers `503` naming the task from then on. A process
/// that quietly stopped doing half its job must not look healthy.
#[derive(Debug, Clone)]
pub struct TaskCheck {
    name: &'static str,
    running: Arc<AtomicBool>,
}

impl TaskCheck {
    /// A check named `name` (as `/readyz` shows it); up until its task ends.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            running: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Spawns `task` and watches it. The returned handle ends when the task does.
    pub fn spawn<F>(&self, task: F, shutdown: CancellationToken) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(task);
        let running = Arc::clone(&self.running);
        let name = self.name;
        tokio::spawn(async move {
            let ended = task.await;
            if ended.is_ok() && shutdown.is_cancelled() {
                return;
            }
            running.store(false, Ordering::Release);
            match ended {
                Err(error) if error.is_panic() => {
                    tracing::error!(
                        task = name,
                        "background task panicked; the service is not ready"
                    );
                }
                Err(_) => tracing::error!(
                    task = name,
                    "background task was cancelled; the service is not ready"
                ),
                Ok(()) => tracing::error!(
                    task = name,
                    "background task stopped before shutdown; the service is not ready"
                ),
            }
        })
    }

    /// Whether the task is still running (or shut down as asked).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

impl ReadinessCheck for TaskCheck {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.is_running() {
                Ok(())
            } else {
                Err(format!("background task '{}' stopped", self.name).into())
            }
        })
    }
}
