//! The `Caller` extractor: who is asking (a live key) and for which tenant.
//!
//! Every handler asks the caller for a scope with the permission it needs; the
//! role policy lives in `auth.rs`, so a finer matrix plugs in there.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::problem::ApiError;
use crate::auth::{Permission, forbidden};
use crate::error::{Code, Error};
use crate::model::{Actor, ApiKey};

/// Header naming the tenant for keys that span tenants.
pub const TENANT_HEADER: &str = "sluice-tenant";

pub struct Caller {
    pub key: ApiKey,
    state: AppState,
    tenant_header: Option<String>,
}

/// A request's tenant and who acts in it.
pub struct Scope {
    pub tenant: String,
    pub actor: Actor,
    /// For a `user` key: the only user whose objects it may see.
    pub user: Option<String>,
}

impl Scope {
    /// A user key sees its own user only: another user's objects are "not found".
    pub fn check_user(&self, user_id: &str) -> Result<(), ApiError> {
        match &self.user {
            Some(own) if own != user_id => Err(Error::not_found("user").into()),
            _ => Ok(()),
        }
    }

    /// A job a user key may not see is "not found", like another tenant's.
    pub fn check_job(&self, job: &crate::model::Job) -> Result<(), ApiError> {
        match &self.user {
            Some(own) if *own != job.user_id => Err(Error::not_found("job").into()),
            _ => Ok(()),
        }
    }
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Key { key_id: self.key.id.clone(), role: self.key.role.as_str().to_owned() }
    }

    /// A refusal is answered at once and recorded in the audit log behind it.
    fn allow(&self, permission: Permission, what: &str) -> Result<(), ApiError> {
        if self.key.role.allows(permission) {
            return Ok(());
        }
        let store = self.state.store().clone();
        let (actor, tenant) = (self.actor(), self.key.tenant.clone().or_else(|| self.tenant_header.clone()));
        let detail = serde_json::json!({ "permission": format!("{permission:?}") });
        tokio::spawn(async move {
            if let Err(e) = store.audit("denied", actor, tenant, detail).await {
                tracing::warn!(target: "sluice::audit", error = %e, "could not record a denial");
            }
        });
        Err(forbidden(self.key.role, what).into())
    }

    /// The tenant a key acting host-wide is limited to: its own, or the one a key
    /// spanning tenants names with `Sluice-Tenant` (`None`: every tenant).
    pub fn tenant_filter(&self) -> Result<Option<String>, ApiError> {
        match (&self.key.tenant, &self.tenant_header) {
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(named)) if named == own => Ok(Some(own.clone())),
            (Some(_), Some(_)) => Err(Error::not_found("tenant").into()),
            (None, named) => Ok(named.clone()),
        }
    }

    /// For host-wide routes (tenants, keys of every tenant).
    pub fn global(&self, permission: Permission, what: &str) -> Result<Actor, ApiError> {
        self.allow(permission, what)?;
        Ok(self.actor())
    }

    /// For tenant routes: the key's own tenant, or the `Sluice-Tenant` header for keys
    /// that span tenants. Naming another tenant with a tenant key is "not found".
    pub fn tenant(&self, permission: Permission, what: &str) -> Result<Scope, ApiError> {
        self.allow(permission, what)?;
        let Some(tenant) = self.tenant_filter()? else {
            return Err(Error::validation("this key spans tenants: name one with the Sluice-Tenant header").into());
        };
        if self.key.tenant.is_none() && self.state.store().tenant(&tenant)?.is_none() {
            return Err(Error::not_found("tenant").into());
        }
        let user = (self.key.role == crate::model::Role::User).then(|| self.key.user_id.clone().unwrap_or_default());
        Ok(Scope { tenant, actor: self.actor(), user })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Error::new(Code::Unauthenticated, "send an API key as Authorization: Bearer <key>"))?;
        let key = state
            .keyring
            .authenticate(secret.trim())
            .ok_or_else(|| Error::new(Code::Unauthenticated, "unknown or revoked API key"))?;
        let tenant_header = match parts.headers.get(TENANT_HEADER) {
            Some(v) => Some(v.to_str().map_err(|_| Error::validation("Sluice-Tenant: not valid text"))?.to_owned()),
            None => None,
        };
        Ok(Caller { key, state: state.clone(), tenant_header })
    }
}
