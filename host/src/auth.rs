//! API keys and what their roles may do.
//!
//! A key is `sk_` + 32 random bytes (base64url). Only its SHA-256 is stored: a fast
//! hash is enough for a secret of that entropy, and keeps authentication cheap on
//! every request. The keyring caches every live key by hash; revoking a key removes
//! it from the cache in the same call that commits the revocation.

use std::sync::Arc;

use base64::Engine;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Code, Error, Result};
use crate::model::{ApiKey, Role, Tenant, now_ms};
use crate::store::Store;

/// Something a request wants to do; roles are granted sets of these. The table
/// of which role may do what is `Role::allows`; PERMISSIONS.md is the same policy
/// written out per route (a test holds the two together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    ManageTenants,
    /// Create, list and revoke keys (a tenant-admin: its own tenant's).
    ManageKeys,
    /// A queue's configuration and counts.
    ReadQueues,
    /// The tenant's figures: stats, alerts, usage, retention report.
    ReadStats,
    /// Configure, pause and resume queues; reset breakers; acknowledge alerts.
    ManageQueues,
    /// Pause and resume the whole host; checkpoints and restores.
    ManageHost,
    /// Host-wide figures at `/metrics`.
    ReadMetrics,
    InsertJobs,
    ReadJobs,
    /// Claim, heartbeat, complete, fail, release.
    WorkJobs,
    /// Retry, replay, cancel.
    ManageJobs,
    /// Place and lift legal holds.
    ManageHolds,
    /// Upload and delete plugins, bind and unbind them.
    ManagePlugins,
    ReadPlugins,
    /// The tenant's configuration and its users' (tags, quotas within the limits).
    ManageConfig,
    ReadConfig,
    /// A tenant's limits.
    ManageLimits,
    /// One user's usage and quota.
    ReadUserUsage,
    /// The right to delete a user's data.
    DeleteUserData,
    /// Deletion receipts.
    ReadDeletions,
    /// The security audit log.
    ReadAudit,
}

impl Role {
    /// The role policy.
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(
                p,
                ReadQueues
                    | ReadStats
                    | ManageQueues
                    | ManageHost
                    | ReadMetrics
                    | ReadJobs
                    | ManageJobs
                    | ReadPlugins
                    | ReadConfig
                    | ReadUserUsage
            ),
            Role::TenantAdmin => matches!(
                p,
                ManageKeys
                    | ReadQueues
                    | ReadStats
                    | ManageQueues
                    | ReadJobs
                    | ManageJobs
                    | ManageHolds
                    | ManagePlugins
                    | ReadPlugins
                    | ManageConfig
                    | ReadConfig
                    | ReadUserUsage
                    | DeleteUserData
                    | ReadDeletions
            ),
            Role::Producer => matches!(p, InsertJobs | ReadJobs | ReadQueues),
            Role::Worker => matches!(p, WorkJobs | ReadJobs | ReadQueues),
            Role::Auditor => matches!(
                p,
                ReadQueues
                    | ReadStats
                    | ReadJobs
                    | ReadPlugins
                    | ReadConfig
                    | ReadUserUsage
                    | ReadDeletions
                    | ReadAudit
            ),
            // Only ever on its own user's objects (the `Scope` enforces that).
            Role::User => matches!(p, ReadJobs | ReadUserUsage | DeleteUserData),
        }
    }

    /// Roles whose keys must belong to one tenant, and those that must span all.
    pub fn tenant_binding(self) -> Binding {
        match self {
            Role::Admin | Role::Operator => Binding::AllTenants,
            Role::TenantAdmin | Role::Producer | Role::Worker | Role::User => Binding::OneTenant,
            Role::Auditor => Binding::Either,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    OneTenant,
    AllTenants,
    Either,
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("sk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Live keys by hash, loaded at start and kept in step with the store.
pub struct Keyring {
    store: Arc<dyn Store>,
    live: DashMap<[u8; 32], ApiKey>,
}

impl Keyring {
    pub fn load(store: Arc<dyn Store>) -> Result<Keyring> {
        let live = DashMap::new();
        for key in store.keys()? {
            if key.revoked_at.is_none() {
                live.insert(key.hash, key);
            }
        }
        Ok(Keyring { store, live })
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The key a bearer secret names, if it is live.
    pub fn authenticate(&self, secret: &str) -> Option<ApiKey> {
        let hash = hash_secret(secret);
        let key = self.live.get(&hash)?;
        bool::from(key.hash.ct_eq(&hash)).then(|| key.clone())
    }

    /// Create a key; the secret is returned once and never stored. A `user` key
    /// names its user; no other key may.
    pub async fn create(
        &self,
        name: String,
        role: Role,
        tenant: Option<String>,
        user_id: Option<String>,
    ) -> Result<(ApiKey, String)> {
        match (role, &user_id) {
            (Role::User, None) => return Err(Error::validation("a user key needs user_id")),
            (Role::User, Some(u)) if u.is_empty() || u.len() > 256 => {
                return Err(Error::validation("user_id: 1 to 256 bytes"));
            }
            (Role::User, Some(_)) => {}
            (_, Some(_)) => return Err(Error::validation("only a user key names a user_id")),
            (_, None) => {}
        }
        match (role.tenant_binding(), &tenant) {
            (Binding::OneTenant, None) => {
                return Err(Error::validation(format!("a {} key must belong to a tenant", role.as_str())));
            }
            (Binding::AllTenants, Some(_)) => {
                return Err(Error::validation(format!("a {} key spans all tenants; leave tenant out", role.as_str())));
            }
            _ => {}
        }
        let secret = new_secret();
        let key = ApiKey {
            id: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
            name,
            role,
            tenant,
            user_id,
            hash: hash_secret(&secret),
            created_at: now_ms(),
            revoked_at: None,
        };
        let key = self.store.create_key(key).await?;
        self.live.insert(key.hash, key.clone());
        Ok((key, secret))
    }

    /// Revoke a key; `tenant` limits it to that tenant's keys. Effective at once.
    pub async fn revoke(&self, id: &str, tenant: Option<&str>) -> Result<ApiKey> {
        let key = self.store.revoke_key(id, tenant).await?;
        self.live.remove(&key.hash);
        Ok(key)
    }

    /// Forget keys deleted with their user (right to delete): effective at once.
    pub fn forget(&self, hashes: &[[u8; 32]]) {
        for hash in hashes {
            self.live.remove(hash);
        }
    }

    /// On first start: an admin key spanning all tenants, for the operator to begin with.
    pub async fn bootstrap(&self) -> Result<Option<String>> {
        if !self.store.keys()?.is_empty() {
            return Ok(None);
        }
        let (_, secret) = self.create("bootstrap admin".into(), Role::Admin, None, None).await?;
        Ok(Some(secret))
    }
}

/// Tenant ids: lowercase letters, digits and '-', 1 to 64 long (they appear in paths and logs).
pub fn check_tenant_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(Error::validation("tenant id: 1-64 characters of a-z, 0-9 and '-'")) }
}

pub fn new_tenant(id: String) -> Result<Tenant> {
    check_tenant_id(&id)?;
    Ok(Tenant { id, created_at: now_ms() })
}

/// Refusal used when a key may not do something at all.
pub fn forbidden(role: Role, what: &str) -> Error {
    Error::new(Code::Forbidden, format!("a {} key may not {what}", role.as_str()))
}
