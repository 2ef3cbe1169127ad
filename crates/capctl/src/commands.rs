//! Everyday commands: one request each, for demos and by hand.

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::ServiceClient;

/// Inventory and timeline calls that `capctl` offers as commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Everyday {
    /// Create a product with its initial stock.
    CreateProduct {
        sku: String,
        #[arg(long, default_value = "Demo product")]
        name: String,
        #[arg(long)]
        stock: i64,
    },
    /// Show a product's stock.
    Product { sku: String },
    /// Restock a product (reads its ETag first, then updates with If-Match).
    Restock { sku: String, units: i64 },
    /// Hold stock: `capctl reserve SKU:QTY [SKU:QTY…]`.
    Reserve {
        /// `SKU:QUANTITY` items, all held or none.
        #[arg(required = true, value_parser = parse_item)]
        items: Vec<(String, i64)>,
        /// Hold length in seconds (the service's default otherwise).
        #[arg(long)]
        ttl: Option<i64>,
        /// Idempotency-Key, so that the command can be retried safely.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a reservation.
    Reservation { id: String },
    /// Confirm a held reservation (held → sold).
    Confirm { id: String },
    /// Cancel a held reservation (held → available).
    Cancel { id: String },
    /// USER follows TARGET.
    Follow { user: String, target: String },
    /// USER stops following TARGET.
    Unfollow { user: String, target: String },
    /// Publish a post.
    Post { author: String, content: String },
    /// Show USER's home timeline, newest first.
    Timeline {
        user: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// `one`, `quorum` or `all`.
        #[arg(long, default_value = "one")]
        consistency: String,
        /// `next_cursor` of a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
}

fn parse_item(raw: &str) -> Result<(String, i64), String> {
    let (sku, quantity) = raw.rsplit_once(':').ok_or("expected SKU:QUANTITY")?;
    let quantity = quantity
        .parse()
        .map_err(|_| format!("'{quantity}' is not a number"))?;
    Ok((sku.to_owned(), quantity))
}

/// Runs one everyday command and returns the service's answer body.
pub async fn run(
    command: Everyday,
    inventory: &ServiceClient,
    timeline: &ServiceClient,
) -> anyhow::Result<Value> {
    match command {
        Everyday::CreateProduct { sku, name, stock } => inventory
            .post(
                "/v1/products",
                &json!({"sku": sku, "name": name, "stock": stock}),
            )
            .await?
            .into_success(),
        Everyday::Product { sku } => inventory
            .get(&format!("/v1/products/{sku}"))
            .await?
            .into_success(),
        Everyday::Restock { sku, units } => {
            let path = format!("/v1/products/{sku}");
            let current = inventory.get(&path).await?;
            let etag = current
                .etag
                .clone()
                .context("the product answer carried no ETag")?;
            current.into_success()?;
            inventory
                .send(
                    Method::PATCH,
                    &path,
                    Some(&json!({"restock": units})),
                    &[("if-match", &etag)],
                )
                .await?
                .into_success()
        }
        Everyday::Reserve { items, ttl, key } => {
            let items: Vec<Value> = items
                .iter()
                .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
                .collect();
            let mut body = json!({"items": items});
            if let Some(ttl) = ttl {
                body["ttl_seconds"] = json!(ttl);
            }
            let headers: Vec<(&str, &str)> = key
                .as_deref()
                .map(|k| ("idempotency-key", k))
                .into_iter()
                .collect();
            inventory
                .send(Method::POST, "/v1/reservations", Some(&body), &headers)
                .await?
                .into_success()
        }
        Everyday::Reservation { id } => inventory
            .get(&format!("/v1/reservations/{id}"))
            .await?
            .into_success(),
        Everyday::Confirm { id } => inventory
            .post(&format!("/v1/reservations/{id}/confirm"), &json!({}))
            .await?
            .into_success(),
        Everyday::Cancel { id } => inventory
            .post(&format!("/v1/reservations/{id}/cancel"), &json!({}))
            .await?
            .into_success(),
        Everyday::Follow { user, target } => {
            timeline
                .send(
                    Method::PUT,
                    &format!("/v1/users/{user}/following/{target}"),
                    None,
                    &[],
                )
                .await?
                .into_success()?;
            Ok(json!({"user": user, "follows": target}))
        }
        Everyday::Unfollow { user, target } => {
            timeline
                .send(
                    Method::DELETE,
                    &format!("/v1/users/{user}/following/{target}"),
                    None,
                    &[],
                )
                .await?
                .into_success()?;
            Ok(json!({"user": user, "unfollowed": target}))
        }
        Everyday::Post { author, content } => timeline
            .post(
                "/v1/posts",
                &json!({"author_id": author, "content": content}),
            )
            .await?
            .into_success(),
        Everyday::Timeline {
            user,
            limit,
            consistency,
            cursor,
        } => {
            let mut path =
                format!("/v1/users/{user}/timeline?limit={limit}&consistency={consistency}");
            if let Some(cursor) = cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            timeline.get(&path).await?.into_success()
        }
    }
}
