//! The CLI's HTTP client: one server, one key, and errors a person can act on.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why a CLI request failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the server at {url}: {reason} (is `sluice serve` running? set --url or SLUICE_URL)")]
    Unreachable { url: String, reason: String },
    #[error("the server refused the API key ({detail}); set --key or SLUICE_KEY")]
    KeyRefused { detail: String },
    #[error("{code}: {detail}")]
    Problem { status: u16, code: String, detail: String },
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// Exit status: 2 usage, 3 unreachable, 4 key refused, 1 any other refusal.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::KeyRefused { .. } => 4,
            CliError::Problem { .. } => 1,
        }
    }

    /// The problem's stable code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CliError::Problem { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, CliError::Unreachable { .. })
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    tenant: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(url: &str, key: Option<String>, tenant: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(90))
            .build()
            .expect("http client");
        Client { base: url.trim_end_matches('/').to_owned(), key, tenant, http }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, path, None).await
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let mut request = self.request(method, path)?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// POST raw bytes with a content type (plugin uploads).
    pub async fn post_bytes(&self, path: &str, content_type: &str, bytes: Vec<u8>) -> Result<Value, CliError> {
        let request = self.request(Method::POST, path)?.header("content-type", content_type).body(bytes);
        self.send(request).await
    }

    fn request(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, CliError> {
        let key =
            self.key.as_deref().ok_or_else(|| CliError::Usage("no API key: pass --key or set SLUICE_KEY".into()))?;
        let mut request = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(key);
        if let Some(tenant) = &self.tenant {
            request = request.header("Sluice-Tenant", tenant);
        }
        Ok(request)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = request
            .send()
            .await
            .map_err(|e| CliError::Unreachable { url: self.base.clone(), reason: root_cause(&e) })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::Unreachable { url: self.base.clone(), reason: root_cause(&e) })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let detail = value["detail"].as_str().unwrap_or("no detail").to_owned();
        if status == StatusCode::UNAUTHORIZED {
            return Err(CliError::KeyRefused { detail });
        }
        let code = value["code"].as_str().unwrap_or("HTTP_ERROR").to_owned();
        Err(CliError::Problem { status: status.as_u16(), code, detail })
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}
