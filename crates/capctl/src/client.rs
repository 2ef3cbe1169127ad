//! A small typed client for both services.

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
        bail!("{} {title}: {detail}\n{}", self.status.as_u16(), self.body)
    }
}

/// HTTP client for one service's base URL.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    name: &'static str,
    base: String,
    http: reqwest::Client,
}

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
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
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
        let text = response.text().await.context("reading the response")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body, etag })
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

/// Sums every sample of `name` (any labels) in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_every_label_set() {
        let text = "# TYPE x counter\nx{strategy=\"a\"} 3\nx{strategy=\"b\"} 4\nx_other 9\nx 1\n";
        assert_eq!(metric_sum(text, "x"), 8.0);
        assert_eq!(metric_sum(text, "missing"), 0.0);
    }
}
