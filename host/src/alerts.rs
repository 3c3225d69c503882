//! Alerts (QUEUE-019): per-queue thresholds with a minimum duration before firing
//! and a separate clear level, and tenant alert-policy plugins that turn a queue's
//! statistics into alerts. An alert fires once, stays firing while its condition
//! holds, resolves when it clears, and can be acknowledged. Each change is stored
//! with its history, logged, exported in metrics and sent to the tenant's webhooks.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{Actor, Alert, AlertEvent, AlertState, JobState, PluginKind, Stage, now_ms};
use crate::plugins::QueueStats;
use crate::queue::QueueService;
use crate::webhooks::Webhooks;

pub struct Alerting {
    queue: Arc<QueueService>,
    pub webhooks: Webhooks,
    /// When a threshold's value first went above it, while not yet firing.
    above_since: DashMap<(String, String), Instant>,
}

/// A queue's figures that thresholds and policies look at.
struct Figures {
    stats: QueueStats,
    values: Vec<(&'static str, f64)>,
}

/// Parked jobs of a queue: a walk over the tenant's failed jobs (the state index),
/// never over all of its jobs.
fn count_parked(store: &dyn crate::store::Store, tenant: &str, queue: &str) -> Result<u64> {
    let filter = crate::store::JobFilter {
        queue: Some(queue.into()),
        state: Some(JobState::Failed),
        parked: Some(true),
        ..Default::default()
    };
    let (mut parked, mut cursor) = (0, None);
    loop {
        let page = store.jobs(tenant, &filter, cursor, 500)?;
        parked += page.jobs.len() as u64;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(parked),
        }
    }
}

impl Alerting {
    pub fn new(queue: Arc<QueueService>, webhooks: Webhooks) -> Alerting {
        Alerting { queue, webhooks, above_since: DashMap::new() }
    }

    fn figures(&self, tenant: &str, name: &str) -> Result<Figures> {
        let store = self.queue.store();
        let now = now_ms();
        let view = store.queue(tenant, name)?.ok_or_else(|| Error::not_found("queue"))?;
        let count = |s: JobState| view.counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
        let oldest = store.oldest_ready(tenant, name)?.map_or(0, |t| (now - t).num_milliseconds().max(0) as u64);
        let processing =
            store.oldest_processing(tenant, name)?.map_or(0, |t| (now - t).num_milliseconds().max(0) as u64);
        let parked = count_parked(store.as_ref(), tenant, name)?;
        let stats = QueueStats {
            queue: name.to_owned(),
            pending: count(JobState::Pending),
            processing: count(JobState::Processing),
            failed: count(JobState::Failed),
            parked,
            stuck: view.stuck,
            oldest_pending_ms: oldest,
        };
        let rate = |kind| self.queue.rate_per_minute(tenant, name, kind);
        let values = vec![
            ("depth", stats.pending as f64),
            ("oldest_pending_seconds", oldest as f64 / 1000.0),
            ("processing_seconds", processing as f64 / 1000.0),
            ("failures_per_minute", rate("failure")),
            ("stuck", stats.stuck as f64),
            ("illegal_transitions_per_minute", rate("ILLEGAL_TRANSITION")),
            ("lease_lost_per_minute", rate("LEASE_LOST")),
            ("breaker_trips", view.breakers.iter().filter(|b| b.is_open()).count() as f64),
        ];
        Ok(Figures { stats, values })
    }

    /// One evaluation of every queue; returns how many alerts changed.
    pub async fn evaluate(&self) -> Result<usize> {
        let store = self.queue.store();
        let current: Vec<Alert> = store.alerts(None)?;
        let mut changed = 0;
        for (tenant, name, config) in store.queue_configs()? {
            let policy = self.queue.plugins().bound(&tenant, &name, PluginKind::AlertPolicy, Stage::Stable);
            let rules = config.alerts.set();
            if rules.is_empty() && policy.is_none() {
                continue;
            }
            let figures = self.figures(&tenant, &name)?;
            let firing = |alert_name: &str| {
                current.iter().find(|a| {
                    a.tenant == tenant && a.queue == name && a.name == alert_name && a.state == AlertState::Firing
                })
            };
            for (rule, threshold) in rules {
                let value = figures.values.iter().find(|(n, _)| *n == rule).map_or(0.0, |(_, v)| *v);
                let key = (tenant.clone(), format!("{name}:{rule}"));
                match firing(rule) {
                    Some(alert) if value <= threshold.clear_below => {
                        self.resolve(alert.clone(), value).await?;
                        changed += 1;
                    }
                    Some(_) => {}
                    None if value > threshold.fire_above => {
                        let since = *self.above_since.entry(key.clone()).or_insert_with(Instant::now);
                        if since.elapsed().as_millis() as u64 >= threshold.for_ms {
                            self.above_since.remove(&key);
                            let message = format!(
                                "{rule} is {value} (fires above {}, clears at {})",
                                threshold.fire_above, threshold.clear_below
                            );
                            self.fire(&tenant, &name, rule, "threshold", "warning", message, value).await?;
                            changed += 1;
                        }
                    }
                    None => {
                        self.above_since.remove(&key);
                    }
                }
            }
            if let Some(binding) = policy {
                let report = self.queue.plugins().evaluate(&binding.plugin, &figures.stats).await;
                let source = format!("plugin:{}", binding.plugin.plugin.digest);
                let Ok(wanted) = report.result else {
                    tracing::warn!(target: "sluice::alerts", tenant = %tenant, queue = %name, "alert policy failed");
                    continue;
                };
                for alert in &wanted {
                    if firing(&alert.name).is_none() {
                        let value = figures.stats.pending as f64;
                        self.fire(&tenant, &name, &alert.name, &source, alert.severity, alert.message.clone(), value)
                            .await?;
                        changed += 1;
                    }
                }
                for old in current.iter().filter(|a| {
                    a.tenant == tenant && a.queue == name && a.source == source && a.state == AlertState::Firing
                }) {
                    if !wanted.iter().any(|w| w.name == old.name) {
                        self.resolve(old.clone(), figures.stats.pending as f64).await?;
                        changed += 1;
                    }
                }
            }
        }
        Ok(changed)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fire(
        &self,
        tenant: &str,
        queue: &str,
        name: &str,
        source: &str,
        severity: &str,
        message: String,
        value: f64,
    ) -> Result<()> {
        let now = now_ms();
        let alert = Alert {
            id: format!("{queue}:{name}"),
            tenant: tenant.to_owned(),
            queue: queue.to_owned(),
            name: name.to_owned(),
            source: source.to_owned(),
            severity: severity.to_owned(),
            message: message.clone(),
            state: AlertState::Firing,
            value,
            fired_at: now,
            resolved_at: None,
            acknowledged_by: None,
            acknowledged_at: None,
        };
        self.record(alert, "fired", value, message).await
    }

    async fn resolve(&self, mut alert: Alert, value: f64) -> Result<()> {
        alert.state = AlertState::Resolved;
        alert.resolved_at = Some(now_ms());
        alert.value = value;
        let message = format!("{} cleared at {value}", alert.name);
        self.record(alert, "resolved", value, message).await
    }

    /// Acknowledge a firing alert: it keeps firing, with who saw it.
    pub async fn acknowledge(&self, tenant: &str, id: &str, actor: &Actor) -> Result<Alert> {
        let mut alert = self
            .queue
            .store()
            .alerts(Some(tenant))?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| Error::not_found("alert"))?;
        alert.acknowledged_by = Some(actor.to_string());
        alert.acknowledged_at = Some(now_ms());
        let value = alert.value;
        self.record(alert.clone(), "acknowledged", value, format!("acknowledged by {actor}")).await?;
        Ok(alert)
    }

    async fn record(&self, alert: Alert, event: &str, value: f64, message: String) -> Result<()> {
        let store = self.queue.store();
        let entry = AlertEvent { at: now_ms(), alert: alert.id.clone(), event: event.to_owned(), value, message };
        store.put_alert(alert.clone(), entry).await?;
        let firing = if alert.state == AlertState::Firing { 1.0 } else { 0.0 };
        metrics::gauge!("sluice_alerts_firing", "tenant" => alert.tenant.clone(), "queue" => alert.queue.clone(), "alert" => alert.name.clone()).set(firing);
        tracing::info!(target: "sluice::alerts", tenant = %alert.tenant, queue = %alert.queue, alert = %alert.name, event, value, "alert {event}");
        let hooks = store.tenant_config(&alert.tenant)?.webhooks;
        if !hooks.is_empty() {
            self.webhooks.send(&hooks, json!({ "event": event, "alert": alert }));
        }
        Ok(())
    }
}
