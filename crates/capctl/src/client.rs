//! A small typed client for both services.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// One answer: status, body (JSON when there is one) and the headers we care about.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub etag: Option<String>,
    /// `Retry-After` in seconds, on a `429` or `503`.
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body if the status is a success; otherwise the problem as an error.
    pub fn into_success(self) -> anyhow::Result<Value> {
        if self.is_success() {
            return Ok(self.body);
        }
        let detail = self.body["detail"].as_str().unwrap_or_default();
        let title = self.body["title"].as_str().unwrap_or("request failed");
        let hint = match self.status {
            StatusCode::UNAUTHORIZED => {
                "\n(pass a bearer token: --token \"$(capctl token SUBJECT)\" or CAPCTL_TOKEN)"
            }
            StatusCode::FORBIDDEN => {
                "\n(the token's subject or scopes do not allow this: mint one with `capctl token SUBJECT [--scope SCOPE]`)"
            }
            _ => "",
        };
        bail!(
            "{} {title}: {detail}\n{}{hint}",
            self.status.as_u16(),
            self.body
        )
    }
}

/// HTTP client for one service's base URL, acting as the subject of its
/// bearer token (none: only the open routes answer). Cloning is cheap: the
/// connection pool, the base URL and the token are shared.
#[derive(Clone)]
pub struct ServiceClient {
    name: &'static str,
    base: Arc<str>,
    http: reqwest::Client,
    /// The value of `Authorization`: `Bearer <token>`.
    authorization: Option<Arc<str>>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("authenticated", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

/// Setup requests that get a `429` wait out its `Retry-After` this many times.
const RATE_LIMITED_RETRIES: usize = 20;

impl ServiceClient {
    pub fn new(name: &'static str, base: &str, pool_size: usize) -> anyhow::Result<Self> {
        // One TLS provider (ring) for the whole workspace; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(pool_size)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            name,
            base: base.trim_end_matches('/').into(),
            http,
            authorization: None,
        })
    }

    /// This client acting as the subject of `token` (shares the connections).
    pub fn with_token(&self, token: impl AsRef<str>) -> Self {
        Self {
            authorization: Some(format!("Bearer {}", token.as_ref()).into()),
            ..self.clone()
        }
    }

    /// This client with `token` if there is one, as it is otherwise.
    pub fn with_optional_token(&self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.with_token(token),
            None => self.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.as_ref());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "the {} service is not reachable at {} (is it running? `make run` starts it)",
                self.name, self.base
            )
        })?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response.text().await.context("reading the response")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            body,
            etag,
            retry_after,
        })
    }

    /// [`Self::send`] for the set-up of a run (a follow graph, products):
    /// a `429` (the subject's write rate) waits out its `Retry-After` and
    /// tries again, so that the set-up never fails on the rate limit. The
    /// measured requests never go through here.
    pub async fn send_paced(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut tries = 0;
        loop {
            let answer = self.send(method.clone(), path, body, &[]).await?;
            if answer.status != StatusCode::TOO_MANY_REQUESTS || tries == RATE_LIMITED_RETRIES {
                return Ok(answer);
            }
            tries += 1;
            let wait = answer.retry_after.unwrap_or(1).clamp(1, 10);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let answer = self.get("/metrics").await?;
        match answer.body {
            Value::String(text) => Ok(text),
            other => Ok(other.to_string()),
        }
    }
}

/// The fan-out worker a command reads counters from.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerUrl {
    /// Base URL of the fan-out worker, for its delivery, lag and row metrics.
    #[arg(
        long,
        env = "CAPCTL_WORKER_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub worker_url: String,
}

impl WorkerUrl {
    pub fn client(&self) -> anyhow::Result<ServiceClient> {
        ServiceClient::new("fan-out worker", &self.worker_url, 4)
    }
}

impl ServiceClient {
    /// Every post id in a user's home timeline, newest first, across all pages.
    pub async fn timeline_ids(&self, user: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/users/{user}/timeline?limit=100");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self
                .get(&path)
                .await?
                .into_success()
                .context("reading a timeline")?;
            let items = page["items"].as_array().context("timeline items")?;
            ids.extend(
                items
                    .iter()
                    .filter_map(|item| item["id"].as_str().map(str::to_owned)),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(ids),
            }
        }
    }
}

/// The samples of a Prometheus text exposition (the `prometheus-parse` crate
/// reads it; a page it cannot read has no samples).
fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .map(|scrape| scrape.samples)
        .unwrap_or_default()
}

/// Sums every sample of the counter or gauge `name` (any labels); 0 (never
/// -0, which reads like a flag on a command line) when there is none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    use prometheus_parse::Value;
    let sum: f64 = samples(text)
        .iter()
        .filter(|sample| sample.metric == name)
        .filter_map(|sample| match sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => Some(value),
            _ => None,
        })
        .sum();
    sum + 0.0
}

/// Sums the samples of the counter or gauge `name` per value of its label
/// `label` (samples without it count under `""`).
pub fn metric_sum_by(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    use prometheus_parse::Value;
    let mut sums = BTreeMap::new();
    for sample in samples(text).iter().filter(|sample| sample.metric == name) {
        if let Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) = sample.value {
            let key = sample.labels.get(label).unwrap_or_default().to_owned();
            *sums.entry(key).or_insert(0.0) += value;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_by_groups_by_one_label() {
        let text = "# TYPE x counter\nx{operation=\"r\",cause=\"version\"} 3\nx{operation=\"c\",cause=\"version\"} 4\nx{operation=\"r\",cause=\"serialization\"} 1\n";
        let sums = metric_sum_by(text, "x", "cause");
        assert_eq!(sums.get("version"), Some(&7.0));
        assert_eq!(sums.get("serialization"), Some(&1.0));
        assert!(metric_sum_by(text, "missing", "cause").is_empty());
    }

    #[test]
    fn metric_sum_adds_every_label_set() {
        let text = "# TYPE x counter\nx{strategy=\"a\"} 3\nx{strategy=\"b\"} 4\nx_other 9\nx 1\n";
        assert_eq!(metric_sum(text, "x"), 8.0);
        assert_eq!(metric_sum(text, "missing"), 0.0);
        assert!(metric_sum(text, "missing").is_sign_positive());
    }
}

/// Cumulative bucket counts `(le, count)` of a Prometheus histogram, summed
/// over every label set, sorted by `le` (`+Inf` last).
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for sample in samples(text).iter().filter(|sample| sample.metric == name) {
        let prometheus_parse::Value::Histogram(buckets) = &sample.value else {
            continue;
        };
        for bucket in buckets {
            match sums.iter_mut().find(|(le, _)| *le == bucket.less_than) {
                Some((_, sum)) => *sum += bucket.count,
                None => sums.push((bucket.less_than, bucket.count)),
            }
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// The `q` quantile of the observations made between two scrapes of a
/// histogram, as the upper bound of the bucket it falls in (`None` without
/// observations). Bucket bounds limit the resolution.
pub fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, count - earlier)
        })
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    deltas
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_bucket_deltas() {
        let before = "# TYPE lag histogram\nlag_bucket{le=\"0.1\"} 1\nlag_bucket{le=\"1\"} 1\nlag_bucket{le=\"+Inf\"} 1\n";
        let after = "# TYPE lag histogram\nlag_bucket{le=\"0.1\"} 51\nlag_bucket{le=\"1\"} 100\nlag_bucket{le=\"+Inf\"} 101\n";
        let (b, a) = (
            histogram_buckets(before, "lag"),
            histogram_buckets(after, "lag"),
        );
        assert_eq!(histogram_quantile(&b, &a, 0.5), Some(0.1));
        assert_eq!(histogram_quantile(&b, &a, 0.99), Some(1.0));
        assert_eq!(histogram_quantile(&b, &a, 1.0), Some(f64::INFINITY));
        assert_eq!(histogram_quantile(&a, &a, 0.5), None);
    }
}
