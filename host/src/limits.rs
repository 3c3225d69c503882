//! Quotas: what a tenant and each of its users may use. Pure data and checks; the
//! rate buckets and the per-request checks live in `quota.rs`, the counts that
//! must be exact (pending jobs, queues, plugins, bindings) are checked inside the
//! writer, so two concurrent requests cannot both take the last unit.
//!
//! `None` means unlimited. The admin sets a tenant's limits (or the host default
//! from the `--limits` file applies); a tenant-admin may set a user's quota, each
//! value within the tenant's own.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Code, Error, Result};

/// A token bucket: `per_second` tokens added, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Limits that apply to one user (per user, inside a tenant).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserQuota {
    /// Most jobs in `pending` at once.
    #[serde(default)]
    pub max_pending: Option<u64>,
    /// Inserts per second (token bucket).
    #[serde(default)]
    pub insert_rate: Option<Rate>,
    /// Largest payload, in bytes of JSON.
    #[serde(default)]
    pub max_payload_bytes: Option<u64>,
    /// Longest retention a job may have, in days (also the retention of jobs that set none).
    #[serde(default)]
    pub max_retention_days: Option<u64>,
}

/// A tenant's limits: the same four as a user's, for the whole tenant, the
/// tenant's own resources, and the default quota of each of its users.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub max_pending: Option<u64>,
    #[serde(default)]
    pub insert_rate: Option<Rate>,
    #[serde(default)]
    pub max_payload_bytes: Option<u64>,
    #[serde(default)]
    pub max_retention_days: Option<u64>,
    /// Queues (with jobs or configuration).
    #[serde(default)]
    pub max_queues: Option<u64>,
    #[serde(default)]
    pub max_plugins: Option<u64>,
    /// Bytes of all uploaded plugin components together.
    #[serde(default)]
    pub max_plugin_bytes: Option<u64>,
    #[serde(default)]
    pub max_bindings: Option<u64>,
    #[serde(default)]
    pub max_webhooks: Option<u64>,
    /// Every user's quota unless the tenant-admin sets one for the user.
    #[serde(default)]
    pub user: UserQuota,
}

/// Who a limit belongs to, for the error and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    Tenant,
    User,
}

impl Holder {
    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Tenant => "tenant",
            Holder::User => "user",
        }
    }
}

/// A refused request: 429 QUOTA_EXCEEDED naming the limit (`tenant.max_pending` ...).
pub fn exceeded(holder: Holder, limit: &str, detail: String) -> Error {
    Error::new(Code::QuotaExceeded, format!("{} limit {limit} reached: {detail}", holder.as_str()))
        .with_limit(format!("{}.{limit}", holder.as_str()))
}

/// 413 PAYLOAD_TOO_LARGE for a payload over `max_payload_bytes`.
pub fn payload_too_large(holder: Holder, size: usize, max: u64) -> Error {
    Error::new(
        Code::PayloadTooLarge,
        format!("payload is {size} bytes; the {} limit max_payload_bytes is {max}", holder.as_str()),
    )
    .with_limit(format!("{}.max_payload_bytes", holder.as_str()))
}

impl Rate {
    fn check(&self, field: &str) -> Result<()> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) || self.burst == 0 {
            return Err(Error::validation(format!("{field}: per_second above 0 and burst of 1 or more")));
        }
        Ok(())
    }
}

fn within<T: PartialOrd + Copy + std::fmt::Display>(field: &str, value: Option<T>, max: Option<T>) -> Result<()> {
    if let (Some(v), Some(m)) = (value, max)
        && v > m
    {
        return Err(Error::validation(format!("{field}: {v} is above the tenant's limit of {m}")));
    }
    Ok(())
}

impl UserQuota {
    /// A user's quota must sit within its tenant's limits.
    pub fn check_within(&self, tenant: &Limits) -> Result<()> {
        if let Some(rate) = &self.insert_rate {
            rate.check("quota.insert_rate")?;
        }
        within("quota.max_pending", self.max_pending, tenant.max_pending)?;
        within("quota.max_payload_bytes", self.max_payload_bytes, tenant.max_payload_bytes)?;
        within("quota.max_retention_days", self.max_retention_days, tenant.max_retention_days)?;
        within(
            "quota.insert_rate.per_second",
            self.insert_rate.map(|r| r.per_second),
            tenant.insert_rate.map(|r| r.per_second),
        )
    }
}

impl Limits {
    pub fn check(&self) -> Result<()> {
        for rate in [("insert_rate", &self.insert_rate), ("user.insert_rate", &self.user.insert_rate)] {
            if let (field, Some(r)) = rate {
                r.check(field)?;
            }
        }
        self.user.check_within(self).map_err(|e| Error::validation(e.reason.replace("quota.", "user.")))
    }

    /// The quota a user has: its own when set, else the tenant's default.
    pub fn user_quota<'a>(&'a self, own: Option<&'a UserQuota>) -> &'a UserQuota {
        own.unwrap_or(&self.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_quota_must_fit_the_tenant() {
        let tenant = Limits { max_pending: Some(10), ..Limits::default() };
        assert!(UserQuota { max_pending: Some(10), ..UserQuota::default() }.check_within(&tenant).is_ok());
        assert!(UserQuota { max_pending: Some(11), ..UserQuota::default() }.check_within(&tenant).is_err());
        assert!(UserQuota { max_payload_bytes: Some(1 << 30), ..UserQuota::default() }.check_within(&tenant).is_ok());
        let bad_rate = UserQuota { insert_rate: Some(Rate { per_second: 0.0, burst: 1 }), ..UserQuota::default() };
        assert!(bad_rate.check_within(&tenant).is_err());
    }

    #[test]
    fn tenant_limits_check_their_user_default() {
        let limits = Limits {
            max_payload_bytes: Some(100),
            user: UserQuota { max_payload_bytes: Some(200), ..UserQuota::default() },
            ..Limits::default()
        };
        let err = limits.check().unwrap_err();
        assert!(err.reason.starts_with("user.max_payload_bytes"), "{}", err.reason);
    }
}
