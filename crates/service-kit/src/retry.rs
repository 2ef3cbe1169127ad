//! Retrying a start-up step (connect, create a stream, wait for a store)
//! until it works or the service is asked to stop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first wait after a failure; it doubles up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, waiting a doubling delay between
/// failures (from [`FIRST_DELAY`] up to [`MAX_DELAY`]), each logged as a
/// warning that names `what`. `None` when `shutdown` is cancelled first.
pub async fn until_cancelled<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            outcome = attempt() => match outcome {
                Ok(value) => return Some(value),
                Err(error) => tracing::warn!(%error, ?delay, "{what} not ready; retrying"),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_it_works_or_is_cancelled() {
        let calls = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let value = until_cancelled("the thing", &shutdown, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..3 => Err("not yet"),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(value, Some(3));

        shutdown.cancel();
        let never = until_cancelled("the other thing", &shutdown, || async {
            Err::<(), _>("never")
        })
        .await;
        assert_eq!(never, None);
    }
}
