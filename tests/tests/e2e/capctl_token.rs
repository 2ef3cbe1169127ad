//! `capctl token` and `capctl --token`, the real binary, against real
//! services: a printed token is accepted for its subject, its scope grants
//! what it says, and `--token` / `CAPCTL_TOKEN` make every one-request
//! command act as that subject.

use base64::Engine;
use e2e::auth::{INVENTORY_ADMIN, dev_keys};
use e2e::inventory_app::InventoryApp;
use e2e::timeline_app::{TimelineApp, unique_user};
use e2e::workspace_binary;
use serde_json::Value;

/// `capctl ARGS…` with the development signing key; its output, whatever the status.
async fn capctl(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(workspace_binary("capctl"))
        .env("CAPCTL_SIGNING_KEY", &dev_keys().signing_key)
        .env_remove("CAPCTL_TOKEN")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("run capctl")
}

/// stdout of a capctl run that must succeed.
async fn capctl_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = capctl(args, env).await;
    assert!(
        output.status.success(),
        "capctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// A token printed by `capctl token ARGS…`.
async fn token(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    capctl_ok(&all, &[]).await.trim().to_owned()
}

/// A token's claims (its payload, not verified: the services do that).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("header.payload.signature");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn inventory_url(app: &InventoryApp) -> String {
    format!("http://{}", app.addr)
}

#[tokio::test]
async fn a_printed_token_acts_for_its_subject_and_its_scope_creates_products() {
    let app = InventoryApp::spawn(&[]).await;
    let url = inventory_url(&app);
    let buyer = unique_user("buyer");
    let admin = token(&[
        "capctl-test-admin",
        "--scope",
        INVENTORY_ADMIN,
        "--ttl",
        "10m",
    ])
    .await;
    let plain = token(&[&buyer]).await;
    let other = token(&[&unique_user("other")]).await;

    let admin_claims = claims(&admin);
    assert_eq!(admin_claims["sub"], "capctl-test-admin");
    assert_eq!(admin_claims["scope"], INVENTORY_ADMIN);
    assert_eq!(admin_claims["iss"], "cap-services");
    assert_eq!(admin_claims["aud"], "cap-services");
    assert_eq!(
        admin_claims["exp"].as_u64().expect("exp") - admin_claims["iat"].as_u64().expect("iat"),
        600,
        "--ttl 10m"
    );
    assert_eq!(
        claims(&plain)["exp"].as_u64().expect("exp") - claims(&plain)["iat"].as_u64().expect("iat"),
        3600,
        "an hour by default"
    );

    // The scope creates a product (--token); a token without it is refused.
    let sku = format!("TOK-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]).to_uppercase();
    let created = capctl_ok(
        &[
            "--inventory-url",
            &url,
            "--token",
            &admin,
            "--json",
            "create-product",
            &sku,
            "--stock",
            "5",
        ],
        &[],
    )
    .await;
    let created: Value = serde_json::from_str(&created).expect("JSON");
    assert_eq!(created["sku"], sku.as_str(), "{created}");
    let refused = capctl(
        &[
            "--inventory-url",
            &url,
            "--token",
            &plain,
            "create-product",
            "OTHER-1",
            "--stock",
            "5",
        ],
        &[],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    // No token at all: 401, and capctl says how to get one.
    let anonymous = capctl(
        &[
            "--inventory-url",
            &url,
            "create-product",
            "OTHER-2",
            "--stock",
            "5",
        ],
        &[],
    )
    .await;
    assert!(!anonymous.status.success());
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("capctl token"),
        "{stderr}"
    );

    // A reservation made with the buyer's token (CAPCTL_TOKEN) is the buyer's:
    // visible with that token, not found with another subject's.
    let held = capctl_ok(
        &[
            "--inventory-url",
            &url,
            "--json",
            "reserve",
            &format!("{sku}:2"),
        ],
        &[("CAPCTL_TOKEN", &plain)],
    )
    .await;
    let held: Value = serde_json::from_str(&held).expect("JSON");
    let id = held["id"].as_str().expect("reservation id");
    let mine = capctl_ok(
        &[
            "--inventory-url",
            &url,
            "--token",
            &plain,
            "--json",
            "reservation",
            id,
        ],
        &[],
    )
    .await;
    assert!(mine.contains(id), "{mine}");
    let theirs = capctl(
        &[
            "--inventory-url",
            &url,
            "--token",
            &other,
            "reservation",
            id,
        ],
        &[],
    )
    .await;
    assert!(!theirs.status.success());
    assert!(
        String::from_utf8_lossy(&theirs.stderr).contains("404"),
        "another subject's reservation is not found"
    );
    let counters = app.counters(&sku).await;
    assert_eq!(counters.reserved, 2);
}

#[tokio::test]
async fn the_token_subject_posts_as_itself_and_not_as_anyone_else() {
    let app = TimelineApp::spawn(&[]).await;
    let url = format!("http://{}", app.addr);
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let alices = token(&[&alice]).await;

    let posted = capctl_ok(
        &[
            "--timeline-url",
            &url,
            "--token",
            &alices,
            "--json",
            "post",
            &alice,
            "hello",
        ],
        &[],
    )
    .await;
    assert!(posted.contains("hello"), "{posted}");
    let as_bob = capctl(
        &[
            "--timeline-url",
            &url,
            "--token",
            &alices,
            "post",
            &bob,
            "not mine",
        ],
        &[],
    )
    .await;
    assert!(!as_bob.status.success());
    assert!(
        String::from_utf8_lossy(&as_bob.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&as_bob.stderr)
    );
    capctl_ok(
        &[
            "--timeline-url",
            &url,
            "--token",
            &alices,
            "follow",
            &alice,
            &bob,
        ],
        &[],
    )
    .await;
    assert_eq!(app.graph(&alice, "following", 10).await, vec![bob.clone()]);
    let timeline = capctl_ok(
        &[
            "--timeline-url",
            &url,
            "--token",
            &alices,
            "--json",
            "timeline",
            &alice,
        ],
        &[],
    )
    .await;
    assert!(timeline.contains("hello"), "{timeline}");
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn without_a_signing_key_token_says_how_to_make_one() {
    let dir = std::env::temp_dir().join(format!("capctl-keys-{}", uuid::Uuid::new_v4()));
    let missing = dir.join("signing-key.pem");
    let output = capctl(
        &["token", "alice"],
        &[("CAPCTL_SIGNING_KEY", &missing.to_string_lossy())],
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("capctl dev-keys"), "{stderr}");

    // `capctl dev-keys` makes the pair, and keeps it on a second run.
    let dir_arg = dir.to_string_lossy().into_owned();
    capctl_ok(&["dev-keys", "--dir", &dir_arg], &[]).await;
    let first = std::fs::read(&missing).expect("signing key written");
    capctl_ok(&["dev-keys", "--dir", &dir_arg], &[]).await;
    assert_eq!(
        std::fs::read(&missing).expect("still there"),
        first,
        "never overwritten"
    );
    let minted = capctl_ok(
        &["token", "alice"],
        &[("CAPCTL_SIGNING_KEY", &missing.to_string_lossy())],
    )
    .await;
    assert_eq!(claims(minted.trim())["sub"], "alice");
    std::fs::remove_dir_all(&dir).ok();
}
