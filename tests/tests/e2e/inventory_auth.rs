//! Access control of the inventory: bearer tokens, the admin scope, and
//! reservations that belong to their subject. Each forbidden call gets its
//! documented status and changes nothing.

use std::time::Duration;

use e2e::auth::{INVENTORY_ADMIN, bearer, issuer};
use e2e::inventory_app::InventoryApp;
use serde_json::{Value, json};
use service_kit::auth::{Claims, TokenIssuer};

/// `POST` as `authorization` (none when `None`).
async fn post_as(
    app: &InventoryApp,
    authorization: Option<&str>,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    let mut request = e2e::http_client().post(app.url(path)).json(body);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.expect("the service answers")
}

async fn get_as(app: &InventoryApp, authorization: &str, path: &str) -> reqwest::Response {
    e2e::http_client()
        .get(app.url(path))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("the service answers")
}

async fn count(app: &InventoryApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

/// A 401 problem with a Bearer challenge.
async fn assert_unauthenticated(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 401, "{what}");
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"inventory\""),
        "{what}: {challenge}"
    );
    let problem = e2e::expect_problem(response, 401).await;
    assert_eq!(problem["type"], "/problems/unauthenticated", "{what}");
}

#[tokio::test]
async fn creating_and_changing_products_needs_the_admin_scope() {
    let app = InventoryApp::spawn(&[]).await;
    let product = json!({"sku": "GUARDED", "name": "Widget", "stock": 10});

    assert_unauthenticated(
        post_as(&app, None, "/v1/products", &product).await,
        "no token",
    )
    .await;
    let alice = bearer("alice", &[]);
    let forbidden = post_as(&app, Some(&alice), "/v1/products", &product).await;
    let problem = e2e::expect_problem(forbidden, 403).await;
    assert_eq!(problem["type"], "/problems/forbidden");
    assert_eq!(
        count(&app, "products").await,
        0,
        "a refused create creates nothing"
    );

    let admin = bearer("ops", &[INVENTORY_ADMIN]);
    assert_eq!(
        post_as(&app, Some(&admin), "/v1/products", &product)
            .await
            .status(),
        201
    );

    // Reads stay open, without a token.
    let read = e2e::http_client()
        .get(app.url("/v1/products/GUARDED"))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200);
    let etag = read.headers()["etag"].to_str().expect("etag").to_owned();
    let ledger = e2e::http_client()
        .get(app.url("/v1/products/GUARDED/ledger"))
        .send()
        .await
        .expect("ledger");
    assert_eq!(ledger.status(), 200);

    let patch = |authorization: String| {
        e2e::http_client()
            .patch(app.url("/v1/products/GUARDED"))
            .header("Authorization", authorization)
            .header("If-Match", etag.clone())
            .json(&json!({"restock": 5}))
            .send()
    };
    assert_eq!(patch(alice.clone()).await.expect("patch").status(), 403);
    assert_eq!(
        app.counters("GUARDED").await.available,
        10,
        "a refused restock changes nothing"
    );
    assert_eq!(patch(admin).await.expect("patch").status(), 200);
    assert_eq!(app.counters("GUARDED").await.available, 15);
}

#[tokio::test]
async fn a_reservation_belongs_to_its_subject() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("MINE", 10).await;
    let (alice, bob) = (bearer("alice", &[]), bearer("bob", &[]));

    let held = post_as(
        &app,
        Some(&alice),
        "/v1/reservations",
        &json!({"items": [{"sku": "MINE", "quantity": 2}]}),
    )
    .await;
    assert_eq!(held.status(), 201);
    let id = held.json::<Value>().await.expect("reservation")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v1/reservations/{id}");

    // Someone else cannot see it, confirm it or cancel it: it does not exist for them.
    let read = get_as(&app, &bob, &path).await;
    assert_eq!(
        e2e::expect_problem(read, 404).await["type"],
        "/problems/not-found"
    );
    for action in ["confirm", "cancel"] {
        let answer = post_as(&app, Some(&bob), &format!("{path}/{action}"), &json!({})).await;
        assert_eq!(
            answer.status(),
            404,
            "bob cannot {action} alice's reservation"
        );
    }
    let counters = app.counters("MINE").await;
    assert_eq!(
        (counters.available, counters.reserved, counters.sold),
        (8, 2, 0),
        "nothing changed"
    );
    assert_unauthenticated(
        e2e::http_client()
            .get(app.url(&path))
            .send()
            .await
            .expect("read"),
        "a reservation read without a token",
    )
    .await;

    // Its subject can.
    let mine: Value = get_as(&app, &alice, &path)
        .await
        .json()
        .await
        .expect("read");
    assert_eq!(mine["status"], "held");
    let confirmed = post_as(&app, Some(&alice), &format!("{path}/confirm"), &json!({})).await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(app.counters("MINE").await.sold, 2);
    app.assert_ledger_replays().await;
}

#[tokio::test]
async fn idempotency_keys_of_two_subjects_do_not_collide() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("KEYED", 10).await;
    let body = json!({"items": [{"sku": "KEYED", "quantity": 1}]});
    let reserve = |subject: &'static str| {
        let app = &app;
        let body = body.clone();
        async move {
            e2e::http_client()
                .post(app.url("/v1/reservations"))
                .header("Authorization", bearer(subject, &[]))
                .header("Idempotency-Key", "order-42")
                .json(&body)
                .send()
                .await
                .expect("reserve")
        }
    };

    let alices = reserve("alice").await;
    assert_eq!(alices.status(), 201);
    let bobs = reserve("bob").await;
    assert_eq!(bobs.status(), 201);
    assert!(
        !bobs.headers().contains_key("idempotent-replayed"),
        "bob's key is his own: no replay of alice's reservation"
    );
    let alice_id = alices.json::<Value>().await.expect("json")["id"].clone();
    let bob_id = bobs.json::<Value>().await.expect("json")["id"].clone();
    assert_ne!(alice_id, bob_id);

    let again = reserve("alice").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json")["id"], alice_id);
    assert_eq!(app.counters("KEYED").await.reserved, 2);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_change_nothing() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("LOCKED", 10).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |exp: u64, iss: &str, aud: &str| Claims {
        sub: "mallory".into(),
        exp,
        iat: now,
        iss: iss.into(),
        aud: aud.into(),
        scope: INVENTORY_ADMIN.into(),
    };
    let stranger_dir =
        std::env::temp_dir().join(format!("cap-stranger-{}", uuid::Uuid::new_v4().simple()));
    let stranger_keys = service_kit::auth::DevKeys::ensure(&stranger_dir).expect("keys");
    let stranger =
        TokenIssuer::from_pem_file(&stranger_keys.signing_key, "cap-services", "cap-services")
            .expect("issuer");
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = {
        use base64::Engine;
        format!(
            "{}.{}.",
            engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
            engine.encode(
                serde_json::to_vec(&claims(now + 600, "cap-services", "cap-services"))
                    .expect("json")
            )
        )
    };
    let tokens = [
        ("malformed", "Bearer not-a-token".to_owned()),
        ("not a bearer", "Basic YWxpY2U6c2VjcmV0".to_owned()),
        (
            "expired",
            format!(
                "Bearer {}",
                issuer().mint_claims(&claims(now - 120, "cap-services", "cap-services"))
            ),
        ),
        (
            "wrongly signed",
            format!(
                "Bearer {}",
                stranger.mint("mallory", &[INVENTORY_ADMIN], Duration::from_secs(600))
            ),
        ),
        ("alg none", format!("Bearer {unsigned}")),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                issuer().mint_claims(&claims(now + 600, "cap-services", "elsewhere"))
            ),
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                issuer().mint_claims(&claims(now + 600, "elsewhere", "cap-services"))
            ),
        ),
    ];
    for (what, authorization) in &tokens {
        let response = post_as(
            &app,
            Some(authorization),
            "/v1/reservations",
            &json!({"items": [{"sku": "LOCKED", "quantity": 1}]}),
        )
        .await;
        assert_unauthenticated(response, what).await;
        let response = post_as(
            &app,
            Some(authorization),
            "/v1/products",
            &json!({"sku": "NEW", "name": "n", "stock": 1}),
        )
        .await;
        assert_eq!(response.status(), 401, "{what}");
    }
    assert_eq!(count(&app, "reservations").await, 0);
    assert_eq!(count(&app, "products").await, 1);
    assert_eq!(app.counters("LOCKED").await.available, 10);
}

#[tokio::test]
async fn writes_over_a_subjects_rate_get_429_then_recover() {
    let app = InventoryApp::spawn(&[
        "--rate-limit-writes-per-second",
        "1",
        "--rate-limit-burst",
        "3",
    ])
    .await;
    app.create_product("PACED", 100).await;
    let alice = bearer("alice", &[]);
    let body = json!({"items": [{"sku": "PACED", "quantity": 1}]});

    for _ in 0..3 {
        assert_eq!(
            post_as(&app, Some(&alice), "/v1/reservations", &body)
                .await
                .status(),
            201
        );
    }
    let limited = post_as(&app, Some(&alice), "/v1/reservations", &body).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        e2e::expect_problem(limited, 429).await["type"],
        "/problems/rate-limited"
    );
    assert_eq!(
        app.counters("PACED").await.reserved,
        3,
        "a refused write changes nothing"
    );

    // Reads are not limited; another subject has its own budget.
    let reads = get_as(&app, &alice, "/v1/products/PACED").await;
    assert_eq!(reads.status(), 200);
    assert_eq!(
        post_as(&app, Some(&bearer("bob", &[])), "/v1/reservations", &body)
            .await
            .status(),
        201
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        post_as(&app, Some(&alice), "/v1/reservations", &body)
            .await
            .status(),
        201,
        "alice may write again"
    );
}

#[tokio::test]
async fn the_operational_endpoints_stay_open_and_the_document_declares_the_scheme() {
    let app = InventoryApp::spawn(&[]).await;
    let client = e2e::http_client();
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let response = client.get(app.url(path)).send().await.expect("answer");
        assert_eq!(response.status(), 200, "{path} needs no token");
    }
    let document: Value = client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let reserve = &document["paths"]["/v1/reservations"]["post"];
    assert_eq!(reserve["security"][0]["bearer"], json!([]));
    for status in ["401", "429"] {
        assert!(
            reserve["responses"][status].is_object(),
            "{status} documented"
        );
    }
    let create = &document["paths"]["/v1/products"]["post"];
    assert!(create["responses"]["403"].is_object());
    let read = &document["paths"]["/v1/products/{sku}"]["get"];
    assert!(read.get("security").is_none(), "a product read is public");
}
