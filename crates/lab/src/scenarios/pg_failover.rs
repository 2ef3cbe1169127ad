//! Scenarios 9–12: CP beyond one machine. The inventory on a 3-node
//! PostgreSQL run by Patroni (leader key in etcd, synchronous replication),
//! behind HAProxy, while buyers reserve: the primary partitioned from the
//! majority, its PostgreSQL killed, its whole node lost, and a planned
//! switchover. Every 201 must exist afterwards, nothing may be oversold, the
//! ledger must replay, and the recorded history must be linearizable.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use tokio::task::JoinHandle;

use super::unique;
use crate::history::History;
use crate::http::Call;
use crate::lab::Lab;
use crate::report::{Report, status_counts};

const BUYERS: u32 = 6;

#[derive(Debug, Clone)]
struct Attempt {
    buyer: u32,
    key: String,
    call: Call,
}

/// Buyers reserving one unit each (with an Idempotency-Key) and reading the
/// product, until stopped; every call recorded.
struct Sale {
    sku: String,
    stock: i64,
    stop: Arc<AtomicBool>,
    buyers: Vec<JoinHandle<Vec<Attempt>>>,
    history: Arc<History>,
}

/// The buyer (token subject) who sends the request with Idempotency-Key `key`.
fn key_buyer(key: &str) -> String {
    format!("buyer-{key}")
}

impl Sale {
    async fn start(lab: &Lab, stock: i64) -> anyhow::Result<Self> {
        let sku = unique("ha");
        let created = lab
            .http
            .as_admin()
            .post(
                &lab.inventory_ha.url("/v1/products"),
                &json!({ "sku": sku, "name": "HA flash sale", "stock": stock }),
                &[],
            )
            .await;
        ensure!(
            created.is(201),
            "create the product: {:?} {}",
            created.status,
            created.body
        );
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(History::new(lab.http.origin()));
        let mut buyers = Vec::new();
        for buyer in 0..BUYERS {
            let (http, stop, history, sku) = (
                lab.http.clone(),
                Arc::clone(&stop),
                Arc::clone(&history),
                sku.clone(),
            );
            let base = lab.inventory_ha.url("");
            buyers.push(tokio::spawn(async move {
                let mut attempts = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if n % 4 == 0 {
                        let call = http
                            .as_admin()
                            .get(&format!("{base}/v1/products/{sku}"))
                            .await;
                        if call.is(200) {
                            history.record(
                                buyer,
                                call.sent,
                                Some(call.answered),
                                json!({ "op": "read", "sku": sku }),
                                json!({ "status": "ok", "available": call.body["available"] }),
                            );
                        }
                        continue;
                    }
                    let key = format!("{sku}-{buyer}-{n}");
                    let body = json!({ "items": [{ "sku": sku, "quantity": 1 }] });
                    // Each request is a buyer of its own (named by its key):
                    // no subject comes near the per-subject write limit.
                    let call = http
                        .as_user(&key_buyer(&key))
                        .post(
                            &format!("{base}/v1/reservations"),
                            &body,
                            &[("Idempotency-Key", &key)],
                        )
                        .await;
                    // A refused buyer waits as told (Retry-After), as a real client does.
                    let pause = call
                        .retry_after
                        .as_deref()
                        .and_then(|s| s.parse().ok())
                        .map_or(Duration::from_millis(5), Duration::from_secs);
                    attempts.push(Attempt { buyer, key, call });
                    tokio::time::sleep(pause).await;
                }
                attempts
            }));
        }
        Ok(Self {
            sku,
            stock,
            stop,
            buyers,
            history,
        })
    }

    async fn stop(self) -> anyhow::Result<(String, i64, Vec<Attempt>, Arc<History>)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut attempts = Vec::new();
        for buyer in self.buyers {
            attempts.extend(buyer.await.context("a buyer task")?);
        }
        Ok((self.sku, self.stock, attempts, self.history))
    }
}

/// What the buyers saw around a fault at `fault_at`, and the checks every
/// failover scenario makes afterwards on the new primary.
async fn verify(
    lab: &Lab,
    report: &mut Report,
    fault_at: Duration,
    (sku, stock, attempts, history): (String, i64, Vec<Attempt>, Arc<History>),
    file: &str,
) -> anyhow::Result<Option<Duration>> {
    let before: Vec<&Attempt> = attempts.iter().filter(|a| a.call.sent < fault_at).collect();
    let after: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.call.sent >= fault_at)
        .collect();
    // The unavailability window: the longest time without a decided answer
    // (201 or 409) that ends after the fault.
    let mut decided: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.call.is(201) || a.call.is(409))
        .map(|a| a.call.answered)
        .collect();
    decided.sort();
    let window = decided
        .windows(2)
        .filter(|pair| pair[1] >= fault_at)
        .map(|pair| pair[1] - pair[0])
        .max();
    report.table(
        &["reservations", "requests", "statuses"],
        vec![
            vec![
                "sent before the fault".into(),
                before.len().to_string(),
                status_counts(before.iter().map(|a| &a.call.status)),
            ],
            vec![
                "sent after the fault".into(),
                after.len().to_string(),
                status_counts(after.iter().map(|a| &a.call.status)),
            ],
        ],
    );
    let bad: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| !(a.call.is(201) || a.call.is(409) || a.call.is_refusal()))
        .collect();
    report.check(
        format!(
            "every answer was 201, 409 or 503 + Retry-After: never a 500, never silence ({} others: {})",
            bad.len(),
            status_counts(bad.iter().map(|a| &a.call.status))
        ),
        bad.is_empty(),
    );
    // Reported, not judged against the 15 s target: Patroni's leader key
    // lives at least 20 s (its minimum ttl), and a crashed leader's key must
    // expire before another node may take over.
    report.check(
        format!(
            "writes were answered again without intervention: unavailability window {} (the longest time without a 201 or 409)",
            window.map_or("—".into(), |w| format!("{:.1} s", w.as_secs_f64()))
        ),
        window.is_some_and(|w| w < Duration::from_secs(60)),
    );

    let acked: Vec<uuid::Uuid> = attempts
        .iter()
        .filter(|a| a.call.is(201))
        .filter_map(|a| a.call.body["id"].as_str()?.parse().ok())
        .collect();
    let mut conn = lab.pg_cluster.connect_primary("inventory").await?;
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE id = ANY($1)")
        .bind(&acked)
        .fetch_one(&mut conn)
        .await?;
    let (received, available, reserved, sold, holds, ledger_available): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT p.received, p.available, p.reserved, p.sold, \
           (SELECT coalesce(sum(i.quantity), 0)::bigint FROM reservation_items i WHERE i.sku = p.sku), \
           (SELECT coalesce(sum(CASE WHEN kind IN ('received', 'released', 'expired') THEN quantity ELSE 0 END) \
                 - sum(CASE WHEN kind = 'reserved' THEN quantity ELSE 0 END), 0)::bigint \
            FROM stock_ledger l WHERE l.sku = p.sku) \
         FROM products p WHERE p.sku = $1",
    )
    .bind(&sku)
    .fetch_one(&mut conn)
    .await?;
    report.table(
        &["on the primary afterwards", "value"],
        vec![
            vec![
                "reservations acknowledged with 201".into(),
                acked.len().to_string(),
            ],
            vec!["of them found".into(), found.to_string()],
            vec![
                "units held by all reservations of the product".into(),
                holds.to_string(),
            ],
            vec![
                "product".into(),
                format!(
                    "received {received}, available {available}, reserved {reserved}, sold {sold}"
                ),
            ],
            vec![
                "available replayed from the ledger".into(),
                ledger_available.to_string(),
            ],
        ],
    );
    report.check(
        format!(
            "0 acknowledged reservations lost: all {} found on the new primary",
            acked.len()
        ),
        found == acked.len() as i64,
    );
    report.check(
        format!(
            "nothing oversold: {holds} units held of {stock}, counters balance, the ledger replays"
        ),
        holds <= stock
            && holds == reserved
            && available + reserved + sold == received
            && ledger_available == available,
    );

    // Refused requests retried with their keys: each answered once. The
    // retry also tells what became of the refused request: a replayed answer
    // means it took effect (at some time between its call and the replay), a
    // fresh one that it did not (and the retry is an operation of its own).
    let reserve = json!({ "op": "reserve", "sku": sku, "quantity": 1 });
    let outcome = |call: &Call| match call.status {
        Some(201) => Some(json!({ "status": "created", "reservation": call.body["id"] })),
        Some(409) => Some(json!({ "status": "insufficient" })),
        _ => None,
    };
    let mut once = 0;
    let mut refused = 0;
    for attempt in &attempts {
        if let Some(output) = outcome(&attempt.call) {
            history.record(
                attempt.buyer,
                attempt.call.sent,
                Some(attempt.call.answered),
                reserve.clone(),
                output,
            );
            continue;
        }
        refused += 1;
        let body = json!({ "items": [{ "sku": sku, "quantity": 1 }] });
        let headers = [("Idempotency-Key", attempt.key.as_str())];
        let url = lab.inventory_ha.url("/v1/reservations");
        let http = lab.http.as_user(&key_buyer(&attempt.key));
        let first = http.post(&url, &body, &headers).await;
        let again = http.post(&url, &body, &headers).await;
        if outcome(&first).is_some()
            && again.status == first.status
            && again.body["id"] == first.body["id"]
        {
            once += 1;
        }
        match outcome(&first) {
            Some(output) if first.replayed => {
                history.record(
                    attempt.buyer,
                    attempt.call.sent,
                    Some(first.answered),
                    reserve.clone(),
                    output,
                );
            }
            Some(output) => {
                history.record(
                    1000,
                    first.sent,
                    Some(first.answered),
                    reserve.clone(),
                    output,
                );
            }
            None => {
                history.record(
                    attempt.buyer,
                    attempt.call.sent,
                    None,
                    reserve.clone(),
                    json!({ "status": "unknown" }),
                );
            }
        }
    }
    report.check(
        format!("each of the {refused} refused requests, retried with its Idempotency-Key, was answered once ({once})"),
        once == refused,
    );

    let verdict = history
        .check(
            &lab.paths.checker,
            "inventory",
            json!({ sku.clone(): stock }),
            &lab.file(file),
        )
        .await?;
    report.check(
        format!(
            "the recorded history ({} reserves and reads across the fault) is linearizable (porcupine; {})",
            verdict.operations,
            lab.file(&format!("{file}.html")).display()
        ),
        verdict.linearizable,
    );
    Ok(window)
}

/// Polls the cluster every 250 ms until `done` or `timeout`; returns the
/// time (since the lab's origin) each node was first seen in each role.
async fn watch_until(
    lab: &Lab,
    timeout: Duration,
    mut done: impl FnMut(&[Option<String>]) -> bool,
) -> Vec<(Duration, usize, String)> {
    let started = Instant::now();
    let mut seen: HashSet<(usize, String)> = HashSet::new();
    let mut events = Vec::new();
    while started.elapsed() < timeout {
        let mut roles = Vec::new();
        for index in 1..=3 {
            let role = lab.pg_cluster.status(index).await.map(|s| {
                format!(
                    "{} {}",
                    s["role"].as_str().unwrap_or("?"),
                    s["state"].as_str().unwrap_or("?")
                )
            });
            let label = role.clone().unwrap_or_else(|| "no answer".into());
            if seen.insert((index, label.clone())) {
                events.push((lab.http.origin().elapsed(), index, label));
            }
            roles.push(role);
        }
        if done(&roles) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    events
}

fn is_primary(role: &Option<String>) -> bool {
    role.as_deref()
        .is_some_and(|r| r.starts_with("primary running") || r.starts_with("master running"))
}

fn event_rows(events: &[(Duration, usize, String)], fault_at: Duration) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|(at, index, role)| {
            let since = at.as_secs_f64() - fault_at.as_secs_f64();
            vec![format!("{since:+.1} s"), format!("pg{index}"), role.clone()]
        })
        .collect()
}

/// Scenario 9: the primary cut off from both standbys and from the etcd majority.
pub async fn partition(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let old = lab.pg_cluster.primary().await.context("no primary")?;
    let rewinds_before = lab.pg_cluster.rewinds(old);
    let sale = Sale::start(lab, 100_000).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fault_at = lab.http.origin().elapsed();
    let rules = lab.firewall.isolate_pg_node(&lab.pg_cluster, old).await?;
    report.step(format!("{BUYERS} buyers reserve through HAProxy; cut the primary pg{old} off from the other nodes (clients still reach it): `{}`", rules.join("`, `")));
    let events = watch_until(lab, Duration::from_secs(60), |roles| {
        let others = roles
            .iter()
            .enumerate()
            .any(|(i, r)| i + 1 != old && is_primary(r));
        others && !is_primary(&roles[old - 1])
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deposed_in_recovery = lab.pg_cluster.in_recovery(old).await;
    report.table(
        &["since the cut", "node", "role and state (its REST API)"],
        event_rows(&events, fault_at),
    );
    let new = lab.pg_cluster.primary().await;
    report.check(
        format!(
            "the majority elected a new primary ({}) and the old one stepped down (pg{old} in recovery: {deposed_in_recovery:?})",
            new.map_or("none".into(), |n| format!("pg{n}"))
        ),
        new.is_some_and(|n| n != old) && deposed_in_recovery != Some(false),
    );
    lab.firewall.heal().await?;
    let whole = lab.pg_cluster.wait_whole(Duration::from_secs(120)).await?;
    report.step(format!(
        "healed; pg{old} rejoined as a streaming standby {:.1} s later{}",
        whole.as_secs_f64(),
        if lab.pg_cluster.rewinds(old) > rewinds_before {
            " (Patroni ran pg_rewind on it)"
        } else {
            ""
        }
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    verify(
        lab,
        report,
        fault_at,
        sale.stop().await?,
        "history-pg-partition",
    )
    .await
    .map(|_| ())
}

/// Scenario 10: the primary's PostgreSQL killed (SIGKILL to the postmaster) in
/// the middle of a flash sale. Patroni, alive on the node, gives up the leader
/// key at once (`primary_start_timeout: 0`), the synchronous standby takes
/// over, and the old primary comes back as a standby by itself.
pub async fn primary_kill(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let old = lab.pg_cluster.primary().await.context("no primary")?;
    let rewinds_before = lab.pg_cluster.rewinds(old);
    let sale = Sale::start(lab, 3_000).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fault_at = lab.http.origin().elapsed();
    let pid = lab.pg_cluster.kill_postgres(old).await?;
    report.step(format!(
        "{BUYERS} buyers in a flash sale of 3000 units; SIGKILLed the primary pg{old}'s PostgreSQL (postmaster, pid {pid})"
    ));
    let events = watch_until(lab, Duration::from_secs(60), |roles| {
        roles
            .iter()
            .enumerate()
            .any(|(i, r)| i + 1 != old && is_primary(r))
    })
    .await;
    let whole = lab.pg_cluster.wait_whole(Duration::from_secs(120)).await?;
    report.table(
        &["since the kill", "node", "role and state (its REST API)"],
        event_rows(&events, fault_at),
    );
    report.step(format!(
        "pg{old} came back as a streaming standby by itself, {:.1} s after the new primary{}",
        whole.as_secs_f64(),
        if lab.pg_cluster.rewinds(old) > rewinds_before {
            " (Patroni ran pg_rewind on it)"
        } else {
            ""
        }
    ));
    report.check(
        format!("a standby took over from pg{old}, and pg{old} rejoined as a standby: the cluster is whole again"),
        lab.pg_cluster.primary().await.is_some_and(|new| new != old),
    );
    let window = verify(
        lab,
        report,
        fault_at,
        sale.stop().await?,
        "history-pg-primary-kill",
    )
    .await?;
    report.check(
        format!(
            "unavailability window on a primary kill within the 15 s target: {}",
            window.map_or("—".into(), |w| format!("{:.1} s", w.as_secs_f64()))
        ),
        window.is_some_and(|w| w <= Duration::from_secs(15)),
    );
    Ok(())
}

/// Scenario 11: the primary's whole node crashed (SIGKILL to its etcd member,
/// Patroni and PostgreSQL: a machine lost) in the middle of a flash sale; its
/// leader key must expire (ttl) before a standby may take over. Then the node
/// starts again and returns as a standby.
pub async fn node_crash(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let old = lab.pg_cluster.primary().await.context("no primary")?;
    let rewinds_before = lab.pg_cluster.rewinds(old);
    let sale = Sale::start(lab, 3_000).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fault_at = lab.http.origin().elapsed();
    lab.pg_cluster.kill_node(old).await?;
    report.step(format!("{BUYERS} buyers in a flash sale of 3000 units; SIGKILLed every process of the primary pg{old} (`pkill -KILL -G {}`)", 7310 + old));
    let events = watch_until(lab, Duration::from_secs(60), |roles| {
        roles
            .iter()
            .enumerate()
            .any(|(i, r)| i + 1 != old && is_primary(r))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.table(
        &["since the kill", "node", "role and state (its REST API)"],
        event_rows(&events, fault_at),
    );
    lab.pg_cluster.start_node(old).await?;
    let whole = lab.pg_cluster.wait_whole(Duration::from_secs(120)).await?;
    report.step(format!(
        "started pg{old} again on its data: it rejoined as a streaming standby after {:.1} s{}",
        whole.as_secs_f64(),
        if lab.pg_cluster.rewinds(old) > rewinds_before {
            " (Patroni ran pg_rewind on it)"
        } else {
            ""
        }
    ));
    let members = lab.pg_cluster.members().await.unwrap_or_default();
    let returned = members["members"].as_array().is_some_and(|list| {
        list.iter().any(|m| {
            m["name"] == format!("pg{old}") && m["role"] != "leader" && m["state"] == "streaming"
        })
    });
    report.check(
        format!(
            "the old primary pg{old} returned as a streaming standby; the cluster is whole again"
        ),
        returned,
    );
    verify(
        lab,
        report,
        fault_at,
        sale.stop().await?,
        "history-pg-node-crash",
    )
    .await
    .map(|_| ())
}

/// Scenario 12: a planned switchover (to the synchronous standby) while buyers reserve.
pub async fn switchover(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let old = lab.pg_cluster.primary().await.context("no primary")?;
    // In synchronous mode only the synchronous standby may take over.
    let candidate = lab
        .pg_cluster
        .sync_standby()
        .await
        .context("no synchronous standby")?;
    let sale = Sale::start(lab, 100_000).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fault_at = lab.http.origin().elapsed();
    let answer = lab.pg_cluster.switchover(old, candidate).await?;
    report.step(format!("{BUYERS} buyers reserve; planned switchover pg{old} → pg{candidate} (`POST /switchover`): {}", answer.trim()));
    let events = watch_until(lab, Duration::from_secs(60), |roles| {
        is_primary(&roles[candidate - 1])
    })
    .await;
    let whole = lab.pg_cluster.wait_whole(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.table(
        &[
            "since the switchover",
            "node",
            "role and state (its REST API)",
        ],
        event_rows(&events, fault_at),
    );
    report.check(
        format!("pg{candidate} is the primary and pg{old} a streaming standby ({:.1} s after the request the cluster was whole)", whole.as_secs_f64()),
        lab.pg_cluster.primary().await == Some(candidate),
    );
    verify(
        lab,
        report,
        fault_at,
        sale.stop().await?,
        "history-pg-switchover",
    )
    .await
    .map(|_| ())
}
