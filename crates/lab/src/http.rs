//! The lab's HTTP client: every call is timed and keeps what a client sees
//! (status, body, `Retry-After`), and a call that gets no answer is a result
//! too, not an error.
//!
//! Every call acts for someone: [`Http::as_user`] is the client of one
//! subject (a buyer, an author, a follower), [`Http::as_admin`] the one that
//! creates products (`inventory:admin`). Their tokens are minted with the
//! lab's development signing key, once per subject.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use service_kit::auth::TokenIssuer;

/// One HTTP call as a client saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `None`: no answer (connection refused, reset, or the client's timeout).
    pub status: Option<u16>,
    pub body: Value,
    pub retry_after: Option<String>,
    pub replayed: bool,
    /// When it was sent and answered, since the lab's origin.
    pub sent: Duration,
    pub answered: Duration,
}

impl Call {
    pub fn latency(&self) -> Duration {
        self.answered.saturating_sub(self.sent)
    }

    pub fn is(&self, status: u16) -> bool {
        self.status == Some(status)
    }

    /// A `503` problem with a `Retry-After`: the refusal the services promise.
    pub fn is_refusal(&self) -> bool {
        self.is(503) && self.retry_after.is_some() && self.body["status"].as_u64() == Some(503)
    }
}

/// The subject products are created and read back as.
pub const ADMIN: &str = "lab-admin";
/// The scope that lets a caller create and change products.
pub const INVENTORY_ADMIN: &str = "inventory:admin";
/// Long enough for every scenario of a lab run.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    origin: Instant,
    tokens: Arc<Tokens>,
    /// `Bearer <token>` of the subject this client acts for.
    authorization: Option<Arc<str>>,
}

/// The lab's tokens, minted once per (subject, admin).
#[derive(Debug)]
struct Tokens {
    issuer: TokenIssuer,
    /// A std mutex: held only to look up or insert, never across an `.await`.
    minted: Mutex<HashMap<(String, bool), Arc<str>>>,
}

impl Http {
    /// `timeout` bounds every call: longer than every server-side timeout, so
    /// a call without an answer means the server did not keep its promise.
    /// Calls go without a token until [`Self::as_user`] or [`Self::as_admin`].
    pub fn new(origin: Instant, timeout: Duration, issuer: TokenIssuer) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            client,
            origin,
            tokens: Arc::new(Tokens {
                issuer,
                minted: Mutex::new(HashMap::new()),
            }),
            authorization: None,
        })
    }

    /// This client acting as `subject` (same connections, same origin).
    pub fn as_user(&self, subject: &str) -> Self {
        self.acting_as(subject, false)
    }

    /// This client acting as the lab's administrator (`inventory:admin`).
    pub fn as_admin(&self) -> Self {
        self.acting_as(ADMIN, true)
    }

    fn acting_as(&self, subject: &str, admin: bool) -> Self {
        let key = (subject.to_owned(), admin);
        let mut minted = self
            .tokens
            .minted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let authorization = minted
            .entry(key)
            .or_insert_with(|| {
                let scopes: &[&str] = if admin { &[INVENTORY_ADMIN] } else { &[] };
                let token = self.tokens.issuer.mint(subject, scopes, TOKEN_TTL);
                format!("Bearer {token}").into()
            })
            .clone();
        Self {
            authorization: Some(authorization),
            ..self.clone()
        }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub async fn get(&self, url: &str) -> Call {
        self.send(Method::GET, url, None, &[]).await
    }

    pub async fn post(&self, url: &str, body: &Value, headers: &[(&str, &str)]) -> Call {
        self.send(Method::POST, url, Some(body), headers).await
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Call {
        let sent = self.origin.elapsed();
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.as_ref());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (status, body, retry_after, replayed) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let retry_after = header("retry-after");
                let replayed = header("idempotent-replayed").as_deref() == Some("true");
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (Some(status), body, retry_after, replayed)
            }
            Err(error) => (None, Value::String(error.to_string()), None, false),
        };
        Call {
            status,
            body,
            retry_after,
            replayed,
            sent,
            answered: self.origin.elapsed(),
        }
    }
}
