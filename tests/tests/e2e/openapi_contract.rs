//! The OpenAPI documents say what the servers enforce: each constraint the
//! served `/openapi.json` carries comes from the constant the check uses, and
//! the server accepts a value at the edge of it and refuses one just past it.
//! (`make api-check` fuzzes the same documents with schemathesis.)

use e2e::expect_problem;
use e2e::inventory_app::InventoryApp;
use e2e::timeline_app::{TimelineApp, unique_user};
use inventory::domain::{MAX_ITEMS, MAX_LEDGER_PAGE, MAX_QUANTITY, MAX_STOCK, MAX_TTL_SECS};
use serde_json::{Value, json};
use service_kit::idempotency::KEY_PATTERN;
use service_kit::validate::{IDENTIFIER_MAX_CHARS, IDENTIFIER_PATTERN};
use timeline::domain::{MAX_CONTENT_CHARS, MAX_PAGE_LIMIT};

/// The schema a `$ref` names, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The schema of `operation`'s parameter `name`.
fn parameter<'a>(doc: &'a Value, operation: &'a Value, name: &str) -> &'a Value {
    let parameter = operation["parameters"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("parameter {name} is documented"));
    resolve(doc, &parameter["schema"])
}

/// The body schema of `operation`'s `status` answer, resolved.
fn problem_schema<'a>(doc: &'a Value, operation: &'a Value, status: &str) -> &'a Value {
    let response = &operation["responses"][status];
    let content = &response["content"]["application/problem+json"];
    assert!(
        content.is_object(),
        "{status} is a documented problem: {response}"
    );
    resolve(doc, &content["schema"])
}

/// The extension member `name` of a problem schema (`allOf` of Problem and its members).
fn member<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["allOf"]
        .as_array()
        .and_then(|parts| parts.iter().find(|p| p["properties"][name].is_object()))
        .map_or(&Value::Null, |part| &part["properties"][name])
}

#[tokio::test]
async fn the_inventory_document_carries_every_constraint_and_problem() {
    let app = InventoryApp::spawn(&[]).await;
    let doc: Value = app.get_json("/openapi.json", 200).await;
    let schemas = &doc["components"]["schemas"];

    let sku = &schemas["Sku"];
    assert_eq!(sku["pattern"], IDENTIFIER_PATTERN);
    assert_eq!(sku["maxLength"], IDENTIFIER_MAX_CHARS);
    assert_eq!(sku["minLength"], 1);
    let quantity = &schemas["Quantity"];
    assert_eq!(
        (&quantity["minimum"], &quantity["maximum"]),
        (&json!(1), &json!(MAX_QUANTITY))
    );
    assert_eq!(quantity["type"], "integer");
    assert_eq!(quantity["format"], "int64");
    assert_eq!(schemas["StockLevel"]["maximum"], MAX_STOCK);
    assert_eq!(schemas["ProductName"]["maxLength"], 200);
    let request = &schemas["CreateReservation"]["properties"];
    assert_eq!(request["items"]["maxItems"], MAX_ITEMS);
    assert_eq!(request["items"]["minItems"], 1);
    assert_eq!(request["ttl_seconds"]["maximum"], MAX_TTL_SECS);

    let ledger = &doc["paths"]["/v1/products/{sku}/ledger"]["get"];
    assert_eq!(parameter(&doc, ledger, "limit")["maximum"], MAX_LEDGER_PAGE);
    assert_eq!(
        parameter(&doc, ledger, "sku")["pattern"],
        IDENTIFIER_PATTERN
    );
    let patch = &doc["paths"]["/v1/products/{sku}"]["patch"];
    assert!(parameter(&doc, patch, "If-Match")["pattern"].is_string());

    let reserve = &doc["paths"]["/v1/reservations"]["post"];
    assert_eq!(
        parameter(&doc, reserve, "Idempotency-Key")["pattern"],
        KEY_PATTERN
    );
    for status in ["400", "404", "409", "413", "415", "422", "503"] {
        problem_schema(&doc, reserve, status);
    }
    assert!(member(problem_schema(&doc, reserve, "409"), "items").is_object());
    assert!(member(problem_schema(&doc, reserve, "404"), "skus").is_object());
    assert!(member(problem_schema(&doc, reserve, "422"), "field").is_object());
    assert!(member(problem_schema(&doc, reserve, "503"), "attempts").is_object());
    assert!(reserve["responses"]["503"]["headers"]["Retry-After"].is_object());
    assert!(member(problem_schema(&doc, patch, "412"), "current_version").is_object());

    // Links from a created reservation to the operations on it, each an operation that exists.
    let links = reserve["responses"]["201"]["links"]
        .as_object()
        .expect("links");
    let operation_ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("path item").values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    for (name, id) in [
        ("GetReservation", "get_reservation"),
        ("ConfirmReservation", "confirm_reservation"),
        ("CancelReservation", "cancel_reservation"),
    ] {
        assert_eq!(links[name]["operationId"], id);
        assert_eq!(links[name]["parameters"]["id"], "$response.body#/id");
        assert!(operation_ids.contains(&id), "{id}");
    }
}

#[tokio::test]
async fn the_inventory_refuses_exactly_outside_its_document() {
    let app = InventoryApp::spawn(&[]).await;
    let longest = "S".repeat(IDENTIFIER_MAX_CHARS);
    let create = |sku: &str, stock: Value| json!({"sku": sku, "name": "Edge", "stock": stock});

    let created = app
        .post_json("/v1/products", &create(&longest, json!(MAX_STOCK)))
        .await;
    assert_eq!(created.status(), 201, "the longest sku and the most stock");
    let too_long = app
        .post_json("/v1/products", &create(&format!("{longest}S"), json!(1)))
        .await;
    assert_eq!(expect_problem(too_long, 422).await["field"], "sku");
    let too_much = app
        .post_json("/v1/products", &create("more", json!(MAX_STOCK + 1)))
        .await;
    assert_eq!(expect_problem(too_much, 422).await["field"], "stock");
    // JSON Schema's integer: 5.0 is one, 5.5 is not.
    let whole = app
        .post_json("/v1/products", &create("whole", json!(5.0)))
        .await;
    assert_eq!(whole.status(), 201);
    let fraction = app
        .post_json("/v1/products", &create("fraction", json!(5.5)))
        .await;
    expect_problem(fraction, 422).await;

    let reserve = |quantity: i64| json!({"items": [{"sku": longest, "quantity": quantity}]});
    let most = app
        .post_json("/v1/reservations", &reserve(MAX_QUANTITY))
        .await;
    assert_eq!(most.status(), 201, "the largest quantity");
    let over = app
        .post_json("/v1/reservations", &reserve(MAX_QUANTITY + 1))
        .await;
    assert_eq!(expect_problem(over, 422).await["field"], "quantity");

    let page = |limit: i64| format!("/v1/products/{longest}/ledger?limit={limit}");
    assert_eq!(app.get(&page(MAX_LEDGER_PAGE)).await.status(), 200);
    expect_problem(app.get(&page(MAX_LEDGER_PAGE + 1)).await, 400).await;
    let cursor = format!("/v1/products/{longest}/ledger?cursor=-1");
    expect_problem(app.get(&cursor).await, 400).await;

    let patch = |if_match: &str| {
        app.client
            .patch(app.url("/v1/products/whole"))
            .header("if-match", if_match)
            .json(&json!({"restock": 1}))
            .send()
    };
    assert_eq!(patch("\"1\"").await.expect("reaches").status(), 200);
    let stale = patch("\"1\"").await.expect("reaches");
    assert_eq!(expect_problem(stale, 412).await["current_version"], 2);
    expect_problem(patch("1").await.expect("reaches"), 400).await;
    let null = app
        .client
        .patch(app.url("/v1/products/whole"))
        .header("if-match", "*")
        .json(&json!({"name": null}))
        .send()
        .await
        .expect("reaches");
    expect_problem(null, 422).await;
}

#[tokio::test]
async fn the_timeline_document_carries_every_constraint_and_the_post_links() {
    let app = TimelineApp::spawn(&[]).await;
    let doc: Value = app.get_json("/openapi.json", 200).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["UserId"]["pattern"], IDENTIFIER_PATTERN);
    assert_eq!(schemas["UserId"]["maxLength"], IDENTIFIER_MAX_CHARS);
    assert_eq!(schemas["Content"]["maxLength"], MAX_CONTENT_CHARS);
    assert!(schemas["PostId"]["pattern"].is_string());

    let timeline = &doc["paths"]["/v1/users/{id}/timeline"]["get"];
    assert_eq!(
        parameter(&doc, timeline, "limit")["maximum"],
        MAX_PAGE_LIMIT
    );
    assert_eq!(
        parameter(&doc, timeline, "id")["pattern"],
        IDENTIFIER_PATTERN
    );
    let post = &doc["paths"]["/v1/posts"]["post"];
    assert_eq!(
        parameter(&doc, post, "Idempotency-Key")["pattern"],
        KEY_PATTERN
    );
    for status in ["400", "413", "415", "422", "503"] {
        problem_schema(&doc, post, status);
    }
    assert!(member(problem_schema(&doc, post, "422"), "field").is_object());
    let link = &post["responses"]["202"]["links"]["GetPost"];
    assert_eq!(link["operationId"], "get_post");
    assert_eq!(link["parameters"]["id"], "$response.body#/id");

    // The edges: the longest content and author are taken, one more character is not.
    let author = "a".repeat(IDENTIFIER_MAX_CHARS);
    let send = |author: &str, content: String| {
        app.post_as(author, &json!({"author_id": author, "content": content}))
            .send()
    };
    let longest = send(&author, "é".repeat(MAX_CONTENT_CHARS))
        .await
        .expect("reaches");
    assert_eq!(longest.status(), 202);
    let over = send(&author, "é".repeat(MAX_CONTENT_CHARS + 1))
        .await
        .expect("reaches");
    assert_eq!(expect_problem(over, 422).await["field"], "content");
    let blank = send(&unique_user("b"), " \u{3000}\t".into())
        .await
        .expect("reaches");
    assert_eq!(expect_problem(blank, 422).await["field"], "content");
    let bad_author = send(&format!("{author}a"), "hi".into())
        .await
        .expect("reaches");
    expect_problem(bad_author, 422).await;
    let page = |limit: u32| format!("/v1/users/{author}/posts?limit={limit}");
    assert_eq!(app.get(&page(MAX_PAGE_LIMIT)).await.status(), 200);
    expect_problem(app.get(&page(MAX_PAGE_LIMIT + 1)).await, 400).await;
    app.deployment.delete_stream().await;
}
