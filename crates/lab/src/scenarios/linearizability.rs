//! Scenario 8: C in CAP, checked rather than asserted: concurrent client histories,
//! recorded with call and return times, checked by porcupine.
//!
//! - Inventory: reserve, confirm, cancel and read on one product, before,
//!   during and after a partition from PostgreSQL. A refusal (503, or no
//!   answer) is an operation of unknown outcome: it may have happened at any
//!   time after its call. Expected: linearizable.
//! - A register in Cassandra: written at ONE through node 1 and read at ONE
//!   through node 2 while node 1 is cut off. Expected: not linearizable, and
//!   the checker names the smallest stale read it found.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use rand::Rng;
use rand::seq::IndexedRandom;
use scylla::statement::Consistency;
use serde_json::{Value, json};

use super::{heal_nodes, partition_nodes, unique};
use crate::history::{History, Verdict};
use crate::http::Call;
use crate::lab::{Lab, groups};
use crate::report::Report;
use crate::services::PG_PORT;

const CLIENTS: u32 = 6;
const STOCK: i64 = 20;
const PHASE: Duration = Duration::from_secs(6);

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    inventory(lab, report).await?;
    register(lab, report).await
}

async fn inventory(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let sku = unique("lin");
    let created = lab
        .http
        .as_admin()
        .post(
            &lab.inventory.url("/v1/products"),
            &json!({ "sku": sku, "name": "linearizability", "stock": STOCK }),
            &[],
        )
        .await;
    ensure!(created.is(201), "create the product: {:?}", created.status);
    let history = Arc::new(History::new(lab.http.origin()));
    let deadline = tokio::time::Instant::now() + PHASE * 3;
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (http, history, sku) = (lab.http.clone(), Arc::clone(&history), sku.clone());
        let base = lab.inventory.url("");
        clients.push(tokio::spawn(async move {
            // The reservations this client made, each with the buyer who
            // holds it: a subject per reservation, so that no subject comes
            // near the per-subject write limit, and a confirm or cancel goes
            // as the reservation's owner.
            let mut mine: Vec<(String, String)> = Vec::new();
            let mut made = 0_u64;
            while tokio::time::Instant::now() < deadline {
                let roll = rand::rng().random_range(0..10);
                let target = mine.choose(&mut rand::rng()).cloned();
                match (roll, target) {
                    (0..=3, _) | (4..=7, None) => {
                        let quantity = rand::rng().random_range(1..=3);
                        let input = json!({ "op": "reserve", "sku": sku, "quantity": quantity });
                        let body = json!({ "items": [{ "sku": sku, "quantity": quantity }] });
                        made += 1;
                        let buyer = format!("{sku}-buyer-{client}-{made}");
                        let call = http
                            .as_user(&buyer)
                            .post(&format!("{base}/v1/reservations"), &body, &[])
                            .await;
                        let output = match call.status {
                            Some(201) => {
                                let id = call.body["id"].as_str().unwrap_or_default().to_owned();
                                mine.push((id.clone(), buyer));
                                json!({ "status": "created", "reservation": id })
                            }
                            Some(409) => json!({ "status": "insufficient" }),
                            _ => json!({ "status": "unknown" }),
                        };
                        record(&history, client, &call, input, output);
                    }
                    (4..=5, Some((id, buyer))) | (6..=7, Some((id, buyer))) => {
                        let op = if roll <= 5 { "confirm" } else { "cancel" };
                        let input = json!({ "op": op, "sku": sku, "reservation": id });
                        let call = http
                            .as_user(&buyer)
                            .post(&format!("{base}/v1/reservations/{id}/{op}"), &json!({}), &[])
                            .await;
                        let output = match call.status {
                            Some(200) => json!({ "status": if op == "confirm" { "confirmed" } else { "cancelled" } }),
                            Some(409) => json!({ "status": "conflict" }),
                            _ => json!({ "status": "unknown" }),
                        };
                        record(&history, client, &call, input, output);
                    }
                    _ => {
                        let call = http
                            .as_admin()
                            .get(&format!("{base}/v1/products/{sku}"))
                            .await;
                        if call.is(200) {
                            let input = json!({ "op": "read", "sku": sku });
                            let output = json!({ "status": "ok", "available": call.body["available"] });
                            record(&history, client, &call, input, output);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(PHASE).await;
    let rule = lab.firewall.cut(groups::INVENTORY, PG_PORT).await?;
    report.step(format!(
        "{CLIENTS} clients reserve (1-3 units of {STOCK}), confirm, cancel and read for {} s; at +{} s: `{rule}`",
        (PHASE * 3).as_secs(),
        PHASE.as_secs()
    ));
    tokio::time::sleep(PHASE).await;
    lab.firewall.heal().await?;
    report.step(format!(
        "healed at +{} s; clients go on",
        (PHASE * 2).as_secs()
    ));
    for client in clients {
        client.await.context("a client task")?;
    }
    let rows = history
        .outcomes()
        .into_iter()
        .map(|((op, status), count)| vec![op, status, count.to_string()])
        .collect();
    report.table(
        &["operation", "outcome (unknown: 503 or no answer)", "count"],
        rows,
    );
    let verdict = history
        .check(
            &lab.paths.checker,
            "inventory",
            json!({ sku.clone(): STOCK }),
            &lab.file("history-inventory"),
        )
        .await?;
    print_verdict(
        report,
        "inventory (reserve/confirm/cancel/read, across a partition from PostgreSQL)",
        &verdict,
        lab,
        "history-inventory",
    );
    report.check(
        format!(
            "the inventory history ({} operations) is linearizable",
            verdict.operations
        ),
        verdict.linearizable && verdict.operations > 50,
    );
    Ok(())
}

fn record(history: &History, client: u32, call: &Call, input: Value, output: Value) {
    let known = output["status"] != "unknown";
    history.record(
        client,
        call.sent,
        known.then_some(call.answered),
        input,
        output,
    );
}

async fn register(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let cluster = &lab.cluster;
    let key = unique("register");
    cluster.write(2, Consistency::All, &key, "v0").await?;
    partition_nodes(lab, report, &[1]).await?;
    let history = History::new(lab.http.origin());
    let origin = history.origin();
    let writer = async {
        for n in 1..=5 {
            let value = format!("a{n}");
            let call = origin.elapsed();
            let result = cluster.write(1, Consistency::One, &key, &value).await;
            let returned = result.is_ok().then(|| origin.elapsed());
            let output = if result.is_ok() {
                json!({ "status": "ok" })
            } else {
                json!({ "status": "unknown" })
            };
            history.record(
                1,
                call,
                returned,
                json!({ "op": "write", "value": value }),
                output,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let reader = async {
        for _ in 0..12 {
            let call = origin.elapsed();
            if let Ok(value) = cluster.read(2, Consistency::One, &key).await {
                let returned = origin.elapsed();
                history.record(
                    2,
                    call,
                    Some(returned),
                    json!({ "op": "read" }),
                    json!({ "status": "ok", "value": value }),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(writer, reader);
    report.step(format!(
        "client 1 writes a1..a5 at ONE through node 1 (cut off) while client 2 reads at ONE through node 2: {} operations",
        history.len()
    ));
    heal_nodes(lab, report).await?;
    let verdict = history
        .check(
            &lab.paths.checker,
            "register",
            json!({ "value": "v0" }),
            &lab.file("history-register"),
        )
        .await?;
    print_verdict(
        report,
        "register at ONE across a node partition",
        &verdict,
        lab,
        "history-register",
    );
    let stale_read_named = verdict
        .counterexample
        .iter()
        .any(|op| op["input"]["op"] == "read");
    report.check(
        "the register history is NOT linearizable, and the checker names a stale read",
        !verdict.linearizable && stale_read_named,
    );
    Ok(())
}

fn print_verdict(report: &mut Report, what: &str, verdict: &Verdict, lab: &Lab, file: &str) {
    report.step(format!(
        "checker (porcupine): {what}: {} operations in {} partition(s): {}; history and visualisation in {}",
        verdict.operations,
        verdict.partitions,
        if verdict.linearizable { "linearizable" } else { "NOT linearizable" },
        lab.file(&format!("{file}.{{json,html}}")).display()
    ));
    if !verdict.counterexample.is_empty() {
        let rows = verdict
            .counterexample
            .iter()
            .map(|op| {
                vec![
                    op["client"].to_string(),
                    format!("{:.1}", op["call_ms"].as_f64().unwrap_or_default()),
                    op["return_ms"]
                        .as_f64()
                        .map_or("unknown".into(), |ms| format!("{ms:.1}")),
                    op["input"].to_string(),
                    op["output"].to_string(),
                ]
            })
            .collect();
        report.step("the smallest non-linearizable sub-history the checker found:");
        report.table(
            &["client", "call (ms)", "return (ms)", "input", "output"],
            rows,
        );
    }
}
