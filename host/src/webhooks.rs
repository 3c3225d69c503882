//! Alert webhooks: destinations must match the operator's allow-list (so a
//! tenant cannot make the host call internal addresses; loopback only when
//! listed), and deliveries are retried with backoff in the background, never
//! blocking the queue.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// Attempts per delivery, and the first and largest wait between them.
const ATTEMPTS: u32 = 8;
const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(10);

pub struct Webhooks {
    /// `host` (any port) or `host:port` entries.
    allow: Vec<String>,
    client: reqwest::Client,
}

impl Webhooks {
    pub fn new(allow: Vec<String>) -> Webhooks {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        Webhooks { allow, client }
    }

    /// Refuse a destination the allow-list does not name.
    pub fn check(&self, url: &str) -> Result<()> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Error::validation(format!("webhook {url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::validation(format!("webhook {url}: http or https only")));
        }
        let host = parsed.host_str().unwrap_or_default();
        let port = parsed.port_or_known_default().unwrap_or(0);
        let allowed = self.allow.iter().any(|a| *a == host || *a == format!("{host}:{port}"));
        if allowed {
            Ok(())
        } else {
            Err(Error::validation(format!("webhook {url}: {host}:{port} is not on the host's webhook allow-list")))
        }
    }

    /// Deliver `body` to each URL in the background, retrying failures with backoff.
    pub fn send(&self, urls: &[String], body: Value) {
        for url in urls {
            if self.check(url).is_err() {
                tracing::warn!(target: "sluice::alerts", url = %url, "webhook no longer allowed; skipped");
                continue;
            }
            let (client, url, body) = (self.client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut wait = FIRST_WAIT;
                for attempt in 1..=ATTEMPTS {
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) => {
                            tracing::warn!(target: "sluice::alerts", url = %url, attempt, status = r.status().as_u16(), "webhook refused")
                        }
                        Err(e) => {
                            tracing::warn!(target: "sluice::alerts", url = %url, attempt, error = %e, "webhook failed")
                        }
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                tracing::error!(target: "sluice::alerts", url = %url, "webhook given up after {ATTEMPTS} attempts");
            });
        }
    }
}
