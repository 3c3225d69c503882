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
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Key { key_id: self.key.id.clone(), role: self.key.role.as_str().to_owned() }
    }

    fn allow(&self, permission: Permission, what: &str) -> Result<(), ApiError> {
        if self.key.role.allows(permission) { Ok(()) } else { Err(forbidden(self.key.role, what).into()) }
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
        let tenant = match (&self.key.tenant, &self.tenant_header) {
            (Some(own), None) => own.clone(),
            (Some(own), Some(named)) if named == own => own.clone(),
            (Some(_), Some(_)) => return Err(Error::not_found("tenant").into()),
            (None, Some(named)) => {
                if self.state.store().tenant(named)?.is_none() {
                    return Err(Error::not_found("tenant").into());
                }
                named.clone()
            }
            (None, None) => {
                return Err(Error::validation("this key spans tenants: name one with the Sluice-Tenant header").into());
            }
        };
        Ok(Scope { tenant, actor: self.actor() })
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
