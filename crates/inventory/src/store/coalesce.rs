//! Request coalescing (group commit) of reservations that share a hot product.
//!
//! Version compare-and-set collapses on one hot row when requests race each
//! other: every commit makes every concurrent reader's version stale, and the
//! losers retry. Within one process they need not race. Each reservation
//! joins the lane of its first product (its lines are sorted by sku). A lane
//! with nothing running starts a batch at once, so a request without
//! contention waits for nobody. While a lane's batch runs, new arrivals queue;
//! when it ends, the next batch takes up to `max_size` of them in arrival
//! order (after waiting up to `max_wait` for the batch to fill) and applies
//! them in one transaction: one read, one write per product, one statement
//! for all the holds (see `strategy` and `reservations`).
//!
//! What does not change: every request is still all-or-nothing across its
//! lines and gets its own hold, ledger rows, idempotency record and answer. A
//! batch that fails as a whole (contention past the retry budget, the
//! database gone) answers each of its requests with that failure and commits
//! nothing. Replicas of the service, and baskets whose first product differs,
//! still meet in the database, where the strategy keeps them apart as before.
//!
//! A request whose client gave up (its future dropped, e.g. by the request
//! timeout) before its batch started takes nothing: it is skipped. Once its
//! batch has started, the batch runs to its end whatever the client does, so
//! a batch never commits half of what it decided; a batch still running at
//! the request timeout (a connection the network went silent on) is
//! abandoned and rolls back. When the database cannot serve a batch
//! (unreachable, or a row locked past the lock timeout), the requests queued
//! behind it get the same `503` at once instead of one more timeout each:
//! a refusal while the database is gone stays as prompt as without coalescing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::PgStore;
use super::StoreError;
use super::reservations::{Answer, ReservationRequest, Reserved, no_answer};

/// Gauge: reservations waiting in a lane for their batch to start.
const QUEUED: &str = "inventory_reservations_queued";

/// How reservations are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// The most requests one batch applies.
    pub max_size: usize,
    /// How long a batch that follows another on its lane waits for more
    /// requests to join before it starts (it starts at once when full). A
    /// request that finds its lane idle never waits.
    pub max_wait: Duration,
    /// The longest a batch may run (the HTTP request timeout: its requests
    /// have been answered `503` by then). A batch stuck on a connection the
    /// network has gone silent on is abandoned, and rolled back, rather than
    /// blocking its lane until TCP gives up.
    pub max_time: Duration,
}

/// The lanes, by first sku. A lane exists while a task drains it; the std
/// `Mutex` is held only to move requests in and out, never across an `.await`.
#[derive(Debug)]
pub(super) struct Coalescer {
    settings: BatchSettings,
    lanes: Mutex<HashMap<String, Lane>>,
}

#[derive(Debug, Default)]
struct Lane {
    queue: VecDeque<Queued>,
    /// Wakes a waiting batch when the queue holds a full batch.
    full: Arc<Notify>,
}

#[derive(Debug)]
struct Queued {
    request: ReservationRequest,
    reply: oneshot::Sender<Answer>,
}

impl Coalescer {
    pub(super) fn new(settings: BatchSettings) -> Self {
        Self {
            settings,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `request` on its lane, starting the lane's drain task if it is
    /// idle, and waits for the request's answer.
    pub(super) async fn submit(
        self: &Arc<Self>,
        store: &PgStore,
        request: ReservationRequest,
    ) -> Result<Reserved, StoreError> {
        let lane = request
            .reservation
            .lines
            .iter()
            .next()
            .map(|line| line.sku.to_string())
            .unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        let idle = {
            let mut lanes = self.lanes();
            let idle = !lanes.contains_key(&lane);
            let queued = lanes.entry(lane.clone()).or_default();
            queued.queue.push_back(Queued { request, reply });
            metrics::gauge!(QUEUED).increment(1.0);
            if queued.queue.len() >= self.settings.max_size {
                queued.full.notify_one();
            }
            idle
        };
        if idle {
            tokio::spawn(Arc::clone(self).drain(store.clone(), lane));
        }
        // A dropped sender means the drain task panicked: a bug, answered 500.
        answer.await.unwrap_or_else(|_| Err(no_answer()))
    }

    /// Runs the lane's batches one after another until its queue is empty,
    /// then removes the lane.
    async fn drain(self: Arc<Self>, store: PgStore, lane: String) {
        let _forget = ForgetLaneOnPanic {
            coalescer: &self,
            lane: &lane,
        };
        let mut first = true;
        loop {
            if !first && !self.settings.max_wait.is_zero() {
                self.wait_to_fill(&lane).await;
            }
            first = false;
            let batch = self.take_batch(&lane);
            if batch.is_empty() {
                return;
            }
            let (requests, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|queued| (queued.request, queued.reply))
                .unzip();
            let answers =
                match tokio::time::timeout(self.settings.max_time, store.reserve_batch(&requests))
                    .await
                {
                    Ok(answers) => answers,
                    Err(_) => vec![Err(timed_out()); requests.len()],
                };
            let unreachable = batch_failure(&answers);
            for (reply, answer) in replies.into_iter().zip(answers) {
                // The client may have gone meanwhile; its answer is committed anyway.
                let _ = reply.send(answer);
            }
            // The database could not serve this batch (unreachable, or a row
            // locked past the lock timeout): the requests queued behind it
            // would wait for the same answer, one more timeout each. They get
            // it now.
            if let Some(error) = unreachable {
                for queued in self.take_all(&lane) {
                    let _ = queued.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Everything queued on the lane (the lane itself stays: its drain task goes on).
    fn take_all(&self, lane: &str) -> Vec<Queued> {
        let mut lanes = self.lanes();
        let Some(queued) = lanes.get_mut(lane) else {
            return Vec::new();
        };
        let all: Vec<Queued> = queued.queue.drain(..).collect();
        metrics::gauge!(QUEUED).decrement(all.len() as f64);
        all
    }

    /// Waits up to `max_wait` while the lane holds some requests but not a full batch.
    async fn wait_to_fill(&self, lane: &str) {
        let full = {
            let lanes = self.lanes();
            match lanes.get(lane) {
                Some(queued)
                    if !queued.queue.is_empty() && queued.queue.len() < self.settings.max_size =>
                {
                    Arc::clone(&queued.full)
                }
                _ => return,
            }
        };
        let _ = tokio::time::timeout(self.settings.max_wait, full.notified()).await;
    }

    /// Takes the next batch off the lane: up to `max_size` requests whose
    /// clients still wait, in arrival order. An empty batch removes the lane
    /// (under the same lock, so a request arriving now starts a new drain).
    fn take_batch(&self, lane: &str) -> Vec<Queued> {
        let mut lanes = self.lanes();
        let Some(queued) = lanes.get_mut(lane) else {
            return Vec::new();
        };
        let waiting = queued.queue.len();
        queued.queue.retain(|waiting| !waiting.reply.is_closed());
        let size = queued.queue.len().min(self.settings.max_size);
        let batch: Vec<Queued> = queued.queue.drain(..size).collect();
        metrics::gauge!(QUEUED).decrement((waiting - queued.queue.len()) as f64);
        if batch.is_empty() {
            lanes.remove(lane);
        }
        batch
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        // Nothing that can panic runs under the lock, so poisoning leaves
        // the map consistent.
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error a whole batch failed with, when the database could not serve it.
fn batch_failure(answers: &[super::reservations::Answer]) -> Option<StoreError> {
    let first = answers.first()?.as_ref().err()?;
    let whole = matches!(first, StoreError::Unavailable(_) | StoreError::Busy(_))
        && answers.iter().all(|answer| answer.is_err());
    whole.then(|| first.clone())
}

/// A batch abandoned at its time limit: the database did not answer in time.
fn timed_out() -> StoreError {
    StoreError::Unavailable(Arc::new(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the database did not finish the batch within the request timeout",
    ))))
}

/// If a drain task panics, its lane goes with it: the requests queued there
/// get an error (their senders drop) instead of waiting for ever, and the
/// next request starts a fresh lane.
struct ForgetLaneOnPanic<'a> {
    coalescer: &'a Coalescer,
    lane: &'a str,
}

impl Drop for ForgetLaneOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(lane) = self.coalescer.lanes().remove(self.lane)
        {
            metrics::gauge!(QUEUED).decrement(lane.queue.len() as f64);
        }
    }
}
