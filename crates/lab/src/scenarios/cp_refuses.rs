//! Scenario 1: CP refuses under partition. The inventory is cut off from PostgreSQL
//! (its packets to port 5432 dropped) while clients reserve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;

use super::{poll_until, unique};
use crate::http::Call;
use crate::lab::{INVENTORY_ACQUIRE_TIMEOUT_MS, INVENTORY_REQUEST_TIMEOUT_SECS, Lab, groups};
use crate::report::{Report, latency_summary, status_counts};
use crate::services::PG_PORT;

const CLIENTS: usize = 8;
const PARTITION: Duration = Duration::from_secs(10);

/// The buyer (token subject) who sends the request with Idempotency-Key `key`.
fn buyer(key: &str) -> String {
    format!("buyer-{key}")
}

/// A reservation request and what each attempt got.
#[derive(Debug, Clone)]
struct Attempt {
    key: String,
    call: Call,
}

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let sku = unique("cp");
    let created = lab
        .http
        .as_admin()
        .post(
            &lab.inventory.url("/v1/products"),
            &json!({ "sku": sku, "name": "CP lab product", "stock": 100_000 }),
            &[],
        )
        .await;
    ensure!(created.is(201), "create the product: {:?}", created.status);
    report.step(format!("product {sku} with 100000 units; {CLIENTS} clients reserve 1 unit each, each request with its own Idempotency-Key"));

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (lab_http, url, sku, stop) = (
            lab.http.clone(),
            lab.inventory.url("/v1/reservations"),
            sku.clone(),
            Arc::clone(&stop),
        );
        clients.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("{sku}-{client}-{n}");
                let body = json!({ "items": [{ "sku": sku, "quantity": 1 }] });
                // Each request is a buyer of its own (named by its key): no
                // subject comes near the per-subject write limit, and its
                // retry below goes as the same buyer.
                let call = lab_http
                    .as_user(&buyer(&key))
                    .post(&url, &body, &[("Idempotency-Key", &key)])
                    .await;
                attempts.push(Attempt { key, call });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            attempts
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The partition starts once the rule is in place (nft takes a few ms):
    // a request sent before that may still be served, and counts as in
    // flight at the cut.
    let rule = lab.firewall.cut(groups::INVENTORY, PG_PORT).await?;
    let cut_at = lab.http.origin().elapsed();
    report.step(format!(
        "cut the inventory off from PostgreSQL: `{rule}` for {} s",
        PARTITION.as_secs()
    ));
    let mut readiness = Vec::new();
    let partition_end = tokio::time::Instant::now() + PARTITION;
    while tokio::time::Instant::now() < partition_end {
        readiness.push(lab.http.get(&lab.inventory.url("/readyz")).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    lab.firewall.heal().await?;
    let healed_at = lab.http.origin().elapsed();
    report.step("healed (`nft flush chain inet lab out`)");

    // By itself: the clients keep going; the first 201 sent after the heal is the recovery.
    let recovered = poll_until(Duration::from_secs(60), || async {
        let call = lab.http.get(&lab.inventory.url("/readyz")).await;
        Ok(call.is(200))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut attempts: Vec<Attempt> = Vec::new();
    for client in clients {
        attempts.extend(client.await.context("a client task")?);
    }

    let before: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.call.answered < cut_at)
        .collect();
    let across: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.call.sent < cut_at && a.call.answered >= cut_at)
        .collect();
    let during: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.call.sent >= cut_at && a.call.answered < healed_at)
        .collect();
    let after: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.call.sent >= healed_at)
        .collect();
    let first_201_after = after
        .iter()
        .filter(|a| a.call.is(201))
        .map(|a| a.call.answered.saturating_sub(healed_at))
        .min();
    let row = |name: &str, set: &[&Attempt]| {
        vec![
            name.to_owned(),
            set.len().to_string(),
            status_counts(set.iter().map(|a| &a.call.status)),
            latency_summary(&set.iter().map(|a| a.call.latency()).collect::<Vec<_>>()),
        ]
    };
    report.table(
        &["reservations", "requests", "statuses", "latency"],
        vec![
            row("before the cut", &before),
            row("in flight at the cut", &across),
            row("sent during the partition", &during),
            row("sent after the heal", &after),
        ],
    );
    let ready_after_first_second: Vec<&Call> = readiness
        .iter()
        .filter(|call| call.sent >= cut_at + Duration::from_secs(2))
        .collect();
    report.table(
        &["/readyz during the partition", "statuses"],
        vec![
            vec![
                "all polls".into(),
                status_counts(readiness.iter().map(|c| &c.status)),
            ],
            vec![
                "from 2 s after the cut".into(),
                status_counts(ready_after_first_second.iter().map(|c| &c.status)),
            ],
        ],
    );

    report.check(
        format!("every request sent during the partition ({}) answered 503 + Retry-After (problem+json)", during.len()),
        !during.is_empty() && during.iter().all(|a| a.call.is_refusal()),
    );
    // A request that asks the pool for a connection is refused within the
    // acquire timeout (the connection's health check gets no answer). One
    // that already holds a connection when the network goes silent waits for
    // the request timeout: PostgreSQL never sees its statement, so no
    // server-side timeout can end it.
    let mut latencies: Vec<Duration> = during.iter().map(|a| a.call.latency()).collect();
    latencies.sort();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    let slowest = latencies.last().copied().unwrap_or_default();
    let request_timeout =
        Duration::from_secs(INVENTORY_REQUEST_TIMEOUT_SECS) + Duration::from_millis(500);
    report.check(
        format!(
            "refusals are fast: median {} ms within the pool's acquire timeout ({INVENTORY_ACQUIRE_TIMEOUT_MS} ms + 500 ms slack), slowest {} ms within the request timeout ({INVENTORY_REQUEST_TIMEOUT_SECS} s)",
            median.as_millis(),
            slowest.as_millis()
        ),
        median <= Duration::from_millis(INVENTORY_ACQUIRE_TIMEOUT_MS + 500) && slowest <= request_timeout,
    );
    let slowest_across = across
        .iter()
        .map(|a| a.call.latency())
        .max()
        .unwrap_or_default();
    report.check(
        format!(
            "requests in flight at the cut were answered within the request timeout: slowest {} ms, statuses {}",
            slowest_across.as_millis(),
            status_counts(across.iter().map(|a| &a.call.status))
        ),
        across.iter().all(|a| a.call.status.is_some()) && slowest_across <= request_timeout,
    );
    report.check(
        "/readyz answered 503 from 2 s after the cut until the heal",
        !ready_after_first_second.is_empty() && ready_after_first_second.iter().all(|c| c.is(503)),
    );
    report.check(
        format!(
            "after the heal it answered 201 again by itself: ready {} s, first 201 {} after the heal",
            recovered.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
            first_201_after.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
        ),
        recovered.is_some() && first_201_after.is_some(),
    );

    // Every refused request is retried with its key: each is answered once.
    let refused: Vec<&Attempt> = attempts.iter().filter(|a| !a.call.is(201)).collect();
    let mut retried_ok = 0;
    let mut replays_ok = 0;
    for attempt in &refused {
        let body = json!({ "items": [{ "sku": sku, "quantity": 1 }] });
        let headers = [("Idempotency-Key", attempt.key.as_str())];
        let url = lab.inventory.url("/v1/reservations");
        let http = lab.http.as_user(&buyer(&attempt.key));
        let first = http.post(&url, &body, &headers).await;
        let again = http.post(&url, &body, &headers).await;
        if first.is(201) {
            retried_ok += 1;
        }
        if again.is(201) && again.replayed && again.body["id"] == first.body["id"] {
            replays_ok += 1;
        }
    }
    report.step(format!(
        "retried each of the {} refused requests with its Idempotency-Key, twice",
        refused.len()
    ));
    report.check(
        format!("every retry was answered 201 ({retried_ok}/{}), and its second retry replayed the same reservation ({replays_ok}/{})", refused.len(), refused.len()),
        retried_ok == refused.len() && replays_ok == refused.len(),
    );

    let keys = attempts.len() as i64;
    let (reservations, units, orphans): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT r.id), coalesce(sum(i.quantity), 0)::bigint, \
                (SELECT count(*) FROM reservations r2 WHERE NOT EXISTS \
                   (SELECT 1 FROM reservation_items i2 WHERE i2.reservation_id = r2.id)) \
         FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id WHERE i.sku = $1",
    )
    .bind(&sku)
    .fetch_one(&lab.pg)
    .await?;
    let (available, reserved, sold, received, ledger_available): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT p.available, p.reserved, p.sold, p.received, \
               (SELECT coalesce(sum(CASE WHEN kind IN ('received', 'released', 'expired', 'adjusted') \
                  THEN quantity ELSE 0 END) - sum(CASE WHEN kind = 'reserved' THEN quantity ELSE 0 END), 0)::bigint \
                FROM stock_ledger l WHERE l.sku = p.sku) \
             FROM products p WHERE p.sku = $1",
        )
        .bind(&sku)
        .fetch_one(&lab.pg)
        .await?;
    report.table(
        &["in PostgreSQL afterwards", "value"],
        vec![
            vec!["distinct Idempotency-Keys sent".into(), keys.to_string()],
            vec![
                "reservations of the product".into(),
                reservations.to_string(),
            ],
            vec!["units held by them".into(), units.to_string()],
            vec![
                "reservations without items (partial writes)".into(),
                orphans.to_string(),
            ],
            vec![
                "product counters".into(),
                format!(
                    "available {available}, reserved {reserved}, sold {sold}, received {received}"
                ),
            ],
            vec![
                "available replayed from the ledger".into(),
                ledger_available.to_string(),
            ],
        ],
    );
    report.check(
        "exactly one reservation per Idempotency-Key, one unit each (none lost, none doubled)",
        reservations == keys && units == keys,
    );
    report.check(
        "no partial write: no reservation without items, counters balance, the ledger replays to `available`",
        orphans == 0 && available + reserved + sold == received && ledger_available == available && reserved == units,
    );
    Ok(())
}
