//! Quota enforcement at the edge of the queue service: payload size and insert
//! rate are checked here before any plugin runs, retention once the taggers have
//! had their say (a plugin may shorten it); the counts that must be exact
//! (pending jobs, queues) go to the writer as [`InsertCaps`].
//!
//! Insert rates are token buckets kept in memory per tenant and per user. A
//! restart refills them, which only ever allows a burst; the limits themselves are
//! in the database. (A keyed limiter crate would need one limiter per quota value;
//! a bucket is a few lines and lets each key carry its own rate.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use serde_json::Value;

use crate::error::{Code, Error, Result};
use crate::limits::{self, Holder, Limits, Rate, UserQuota};
use crate::model::UserConfig;
use crate::store::{InsertCaps, NewJob, Store};

/// The configuration of each user of a request, read once for the quotas and the tags.
pub type UserConfigs = HashMap<String, Option<UserConfig>>;

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: &Rate, now: Instant) {
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst as f64);
        self.at = now;
    }
}

pub struct Quotas {
    store: Arc<dyn Store>,
    /// Limits of tenants the admin has not set any for (the `--limits` file).
    default: Limits,
    /// (tenant, None) for the tenant's bucket, (tenant, Some(user)) for a user's.
    buckets: DashMap<(String, Option<String>), Bucket>,
}

impl Quotas {
    pub fn new(store: Arc<dyn Store>, default: Limits) -> Quotas {
        Quotas { store, default, buckets: DashMap::new() }
    }

    /// The tenant's limits: set by an admin, else the host default.
    pub fn limits(&self, tenant: &str) -> Result<Limits> {
        Ok(self.store.limits(tenant)?.unwrap_or_else(|| self.default.clone()))
    }

    /// A user's quota: its own when a tenant-admin set one, else the tenant's default.
    pub fn user_quota(&self, tenant: &str, user_id: &str, limits: &Limits) -> Result<UserQuota> {
        let own = self.store.user_config(tenant, user_id)?.and_then(|c| c.quota);
        Ok(limits.user_quota(own.as_ref()).clone())
    }

    /// Check what can be checked before tagging: payload sizes and insert rates.
    /// A payload over a limit refuses that job; a rate over its bucket refuses the
    /// whole request (429 RATE_LIMITED with the seconds to wait).
    /// `configs` holds the configuration of every user of `jobs`.
    pub fn admit(&self, tenant: &str, jobs: &[&NewJob], configs: &UserConfigs) -> Result<Admission> {
        let limits = self.limits(tenant)?;
        let users: HashMap<String, UserQuota> = configs
            .iter()
            .map(|(user, config)| {
                let own = config.as_ref().and_then(|c| c.quota.as_ref());
                (user.clone(), limits.user_quota(own).clone())
            })
            .collect();
        let mut wanted: Vec<(Option<String>, Rate, f64)> = Vec::new();
        if let Some(rate) = limits.insert_rate {
            wanted.push((None, rate, jobs.len() as f64));
        }
        for (user, quota) in &users {
            if let Some(rate) = quota.insert_rate {
                let n = jobs.iter().filter(|j| &j.user_id == user).count();
                wanted.push((Some(user.clone()), rate, n as f64));
            }
        }
        self.take_tokens(tenant, &wanted)?;
        Ok(Admission { limits, users })
    }

    /// Take `n` tokens from each bucket, or none at all when one is short.
    fn take_tokens(&self, tenant: &str, wanted: &[(Option<String>, Rate, f64)]) -> Result<()> {
        let now = Instant::now();
        for (user, rate, n) in wanted {
            let mut bucket = self
                .buckets
                .entry((tenant.to_owned(), user.clone()))
                .or_insert_with(|| Bucket { tokens: rate.burst as f64, at: now });
            bucket.refill(rate, now);
            if bucket.tokens < *n {
                let holder = if user.is_some() { Holder::User } else { Holder::Tenant };
                let wait = if *n > rate.burst as f64 { None } else { Some((n - bucket.tokens) / rate.per_second) };
                return Err(rate_limited(holder, rate, *n, wait));
            }
        }
        for (user, _, n) in wanted {
            if let Some(mut bucket) = self.buckets.get_mut(&(tenant.to_owned(), user.clone())) {
                bucket.tokens -= n;
            }
        }
        Ok(())
    }

    /// A deleted user's counters go with it.
    pub fn forget_user(&self, tenant: &str, user_id: &str) {
        self.buckets.remove(&(tenant.to_owned(), Some(user_id.to_owned())));
    }
}

fn rate_limited(holder: Holder, rate: &Rate, n: f64, wait: Option<f64>) -> Error {
    let limit = format!("{}.insert_rate", holder.as_str());
    let mut error = match wait {
        Some(seconds) => Error::new(
            Code::RateLimited,
            format!(
                "{} insert rate of {}/s (burst {}) reached; retry in {seconds:.1} s",
                holder.as_str(),
                rate.per_second,
                rate.burst
            ),
        ),
        None => Error::new(
            Code::RateLimited,
            format!("{n} jobs in one request is more than the {} burst of {}", holder.as_str(), rate.burst),
        ),
    }
    .with_limit(limit);
    error.retry_after = Some(wait.map_or(1, |s| s.ceil().max(1.0) as u64));
    error
}

/// What an admitted request is held to after tagging.
pub struct Admission {
    limits: Limits,
    users: HashMap<String, UserQuota>,
}

impl Admission {
    /// Refuse a payload over the tenant's or the user's `max_payload_bytes`.
    pub fn check_payload(&self, job: &NewJob) -> Result<()> {
        let size = job.payload.get().len();
        let user = &self.users[&job.user_id];
        for (holder, max) in [(Holder::Tenant, self.limits.max_payload_bytes), (Holder::User, user.max_payload_bytes)] {
            if let Some(max) = max
                && size as u64 > max
            {
                return Err(limits::payload_too_large(holder, size, max));
            }
        }
        Ok(())
    }

    /// Hold the tagged job's retention to the longest allowed; a job that sets none
    /// gets the longest allowed, so no job outlives its quota.
    pub fn check_retention(&self, job: &mut NewJob) -> Result<()> {
        let user = &self.users[&job.user_id];
        let bounds = [(Holder::Tenant, self.limits.max_retention_days), (Holder::User, user.max_retention_days)];
        let days = job.tags.get("retention_days").and_then(Value::as_u64);
        for (holder, max) in bounds {
            if let (Some(max), Some(days)) = (max, days)
                && days > max
            {
                let detail = format!("retention_days {days} is above {max}");
                return Err(limits::exceeded(holder, "max_retention_days", detail));
            }
        }
        if days.is_none()
            && let Some(max) = bounds.iter().filter_map(|(_, m)| *m).min()
        {
            job.tags.insert("retention_days".into(), Value::from(max));
        }
        Ok(())
    }

    /// The counts the writer holds the insert to.
    pub fn caps(&self) -> InsertCaps {
        InsertCaps {
            tenant_pending: self.limits.max_pending,
            user_pending: self.users.iter().map(|(u, q)| (u.clone(), q.max_pending)).collect(),
            queues: self.limits.max_queues,
        }
    }
}
