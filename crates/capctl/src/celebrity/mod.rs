//! `capctl follower-load` and `capctl celebrity-reads`: an author with a
//! million followers, for `make bench`.
//!
//! `follower-load` writes the follow graph straight to Cassandra (through the
//! API each follow is a logged batch, a published message and a backfill, far
//! slower): for each follower its `following` row and the author's
//! `followers` row, with prepared statements in unlogged batches, a bounded
//! number in flight; then it waits for the compactions the load set off, so
//! that what is measured next reads a settled store. `celebrity-reads` then
//! posts from the author through the API and times how soon each of a sample
//! of followers reads the post on their first timeline page. The author is a
//! celebrity (the worker marks it on its first post, which pages the followers
//! up to `FANOUT_CELEBRITY_THRESHOLD`), so no timeline row is written for it:
//! followers see its posts because every timeline read merges the posts of the
//! celebrities the reader follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use serde_json::json;

use crate::auth::Minter;
use crate::client::{ServiceClient, metric_sum};
use crate::latency::{Latencies, LatencySummary};
use crate::timeline_load::wait_for;

mod load;
mod reads;

pub use load::{FollowerLoadArgs, FollowerLoadReport, load_followers};
pub use reads::{CelebrityReadsArgs, CelebrityReadsReport, celebrity_reads};
