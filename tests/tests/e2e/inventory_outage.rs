//! The CP side of the trade-off: while PostgreSQL is down the service refuses
//! quickly with `503` rather than guessing or hanging, and it recovers by
//! itself when the database returns.
//!
//! The test runs its own PostgreSQL server so that stopping it leaves the
//! shared one (and every other test) alone.

use std::time::{Duration, Instant};

use e2e::expect_problem;
use e2e::inventory_app::{InventoryApp, Mode, lock_product_from_outside};
use e2e::pg_instance::PgInstance;
use sqlx::{Connection, PgConnection};

/// Far below the 10 s request timeout: a `503` within this comes from the
/// pool's acquire timeout (1 s here), i.e. the service did not hang.
const PROMPT: Duration = Duration::from_secs(5);

async fn requests_get_a_prompt_503_while_the_database_is_down_and_succeed_after(mode: Mode) {
    let (pg, admin) = private_server().await;
    admin.close().await.expect("close");

    let mut args = mode.args().to_vec();
    args.extend(["--database-acquire-timeout-ms", "1000"]);
    let app = InventoryApp::spawn_on(&pg.url("inventory"), &args).await;
    app.create_product("CP", 100).await;
    assert_eq!(app.reserve(&[("CP", 1)], None).await.status(), 201);

    pg.stop();

    let requests = [
        (
            "reserve",
            app.client
                .post(app.url("/v1/reservations"))
                .json(&serde_json::json!({"items": [{"sku": "CP", "quantity": 1}]})),
        ),
        ("read", app.client.get(app.url("/v1/products/CP"))),
        (
            "create",
            app.client
                .post(app.url("/v1/products"))
                .json(&serde_json::json!({"sku": "CP2", "name": "x", "stock": 1})),
        ),
    ];
    for (what, request) in requests {
        let started = Instant::now();
        let response = request.send().await.expect("the service answers");
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{what} while the database is down");
        assert!(
            response.headers().contains_key("retry-after"),
            "{what} says when to retry"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = response.text().await.expect("body");
        assert!(
            !body.to_lowercase().contains("connection refused"),
            "no driver text: {body}"
        );
        assert!(took < PROMPT, "{what} answered in {took:?}, not promptly");
    }
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503, "readiness reports the outage");

    pg.start_again();

    // The same service instance recovers on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = app.reserve(&[("CP", 1)], None).await.status().as_u16();
        if status == 201 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        status, 201,
        "reservations succeed again after the database returns"
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(
        app.counters("CP").await.reserved,
        2,
        "only acknowledged holds count: nothing half-done"
    );
    app.assert_ledger_replays().await;
}

/// A batch whose transaction fails half-way answers `503` to each of its
/// requests and commits nothing of it. Outside transactions hold the product's
/// row so that the service's second batch (every buyer queued behind the
/// first) is inside its transaction, waiting for the row, when the server
/// stops. Afterwards each of those buyers' idempotency keys is still free: a
/// retry makes a new hold, not a replay.
async fn a_batch_cut_off_by_the_database_answers_503_to_each_request_and_commits_nothing(
    mode: Mode,
) {
    const BUYERS: usize = 20;
    let (pg, admin) = private_server().await;
    admin.close().await.expect("close");
    let mut args = mode.args().to_vec();
    args.extend([
        "--database-acquire-timeout-ms",
        "1000",
        "--database-lock-timeout-ms",
        "8000",
        "--database-statement-timeout-ms",
        "9000",
    ]);
    // A process of its own: its metrics count only this test's batches.
    let app = InventoryApp::spawn_process_on(&pg.url("inventory"), &args).await;
    app.create_product("ROW", 100).await;

    let mut holder = lock_product_from_outside(&pg.url("inventory"), "ROW").await;
    let lock_waiters = || async {
        let mut conn = PgConnection::connect(&pg.url("inventory"))
            .await
            .expect("connect");
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count lock waiters");
        waiting
    };
    let wait_for_waiters = |n: i64| async move {
        e2e::eventually("lock waiters", Duration::from_secs(20), || async {
            (lock_waiters().await >= n).then_some(())
        })
        .await
    };

    // Coalesced, the buyers must queue behind a running batch to share one:
    // a first buyer's batch waits for the row, and a second outside
    // transaction queues for the row behind it. One by one, each buyer's own
    // transaction waits for the row.
    let first = mode.coalescing.then(|| {
        tokio::spawn({
            let client = app.client.clone();
            let url = app.url("/v1/reservations");
            async move {
                client
                    .post(url)
                    .header("Idempotency-Key", "first")
                    .json(&serde_json::json!({"items": [{"sku": "ROW", "quantity": 1}]}))
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
            }
        })
    });
    let mut second_holder = None;
    if mode.coalescing {
        wait_for_waiters(1).await;
        second_holder = Some(tokio::spawn({
            let url = pg.url("inventory");
            async move {
                let mut conn = lock_product_from_outside(&url, "ROW").await;
                // Keep the lock until the server goes away.
                let _ = sqlx::query("SELECT pg_sleep(60)").execute(&mut conn).await;
            }
        }));
        wait_for_waiters(2).await;
    }
    let buyers: Vec<_> = (0..BUYERS)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/v1/reservations");
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("Idempotency-Key", format!("buyer-{n}"))
                    .json(&serde_json::json!({"items": [{"sku": "ROW", "quantity": 1}]}))
                    .send()
                    .await
                    .expect("the service answers");
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                (status, retry_after)
            })
        })
        .collect();
    let committed = if let Some(first) = first {
        e2e::eventually("buyers queued", Duration::from_secs(20), || async {
            (app.queued_reservations().await >= BUYERS as f64).then_some(())
        })
        .await;
        // The first batch commits; the second outside transaction takes the
        // row; the buyers' batch waits for it, mid-transaction.
        sqlx::query("COMMIT")
            .execute(&mut holder)
            .await
            .expect("commit");
        assert_eq!(first.await.expect("first buyer").expect("answer"), 201);
        wait_for_waiters(1).await;
        let (batches, requests) = app.batches().await;
        assert_eq!(
            (batches, requests),
            (2.0, (BUYERS + 1) as f64),
            "every buyer is in the second batch, running"
        );
        1
    } else {
        wait_for_waiters(BUYERS as i64).await;
        0
    };

    pg.stop();
    for buyer in buyers {
        let (status, retry_after) = buyer.await.expect("buyer");
        assert_eq!(status, 503, "a request of the failed batch");
        assert!(retry_after, "a 503 says when to retry");
    }
    if let Some(second_holder) = second_holder {
        let _ = second_holder.await;
    }
    pg.start_again();

    e2e::eventually("the service recovers", Duration::from_secs(30), || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    let counters = app.counters("ROW").await;
    assert_eq!(
        (counters.available, counters.reserved),
        (100 - committed, committed),
        "nothing of the failed batch was committed"
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .expect("count keys");
    assert_eq!(keys, committed, "no key of the failed batch was recorded");
    for n in 0..BUYERS {
        let retry = app
            .reserve(&[("ROW", 1)], Some(&format!("buyer-{n}")))
            .await;
        assert_eq!(retry.status(), 201);
        assert!(
            !retry.headers().contains_key("idempotent-replayed"),
            "a retry after the failure is a new request"
        );
    }
    assert_eq!(
        app.counters("ROW").await.reserved,
        committed + BUYERS as i64
    );
    app.assert_ledger_replays().await;
}

e2e::per_strategy!(
    requests_get_a_prompt_503_while_the_database_is_down_and_succeed_after,
    a_batch_cut_off_by_the_database_answers_503_to_each_request_and_commits_nothing
);

/// With synchronous replication a commit waits until a standby confirms it.
/// Here the server waits for a standby that never comes
/// (`synchronous_standby_names` names nobody who exists), as a primary cut
/// off from its standbys does: the service must not answer 201 — the commit
/// exists on one server only — but a 503 once its request times out.
/// (PostgreSQL ends `statement_timeout` before a commit starts waiting, so
/// the wait is bounded by the request timeout, and no timeout turns it into
/// a success; only a cancel request would, and the service sends none.)
#[tokio::test]
async fn a_commit_no_standby_confirmed_is_never_acknowledged() {
    let (pg, mut admin) = private_server().await;
    let app = InventoryApp::spawn_on(
        &pg.url("inventory"),
        &[
            "--database-statement-timeout-ms",
            "300",
            "--database-lock-timeout-ms",
            "300",
            "--request-timeout-secs",
            "2",
        ],
    )
    .await;
    app.create_product("SYNC", 10).await;

    sqlx::raw_sql("ALTER SYSTEM SET synchronous_standby_names = 'a_standby_that_never_comes'")
        .execute(&mut admin)
        .await
        .expect("require a standby");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .expect("reload");
    let response = app.reserve(&[("SYNC", 1)], Some("sync-1")).await;
    assert!(
        response.headers().contains_key("retry-after"),
        "a refusal says when to retry"
    );
    expect_problem(response, 503).await;

    sqlx::raw_sql("ALTER SYSTEM RESET synchronous_standby_names")
        .execute(&mut admin)
        .await
        .expect("no standby required");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .expect("reload");
    admin.close().await.expect("close");
}

/// A PostgreSQL server of the test's own with an empty `inventory` database,
/// and an admin connection to it.
async fn private_server() -> (PgInstance, PgConnection) {
    let pg = PgInstance::start().await;
    let mut admin = PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    sqlx::query("CREATE DATABASE inventory")
        .execute(&mut admin)
        .await
        .expect("create database");
    (pg, admin)
}
