//! User pseudonyms for logs: HMAC-SHA256 of the user_id under a per-user secret kept
//! in the database. Deleting the secret (right to delete) makes old log lines
//! unlinkable to the user; the host's log never holds a raw user_id.

use std::sync::Arc;

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::Store;

pub struct Pseudonyms {
    store: Arc<dyn Store>,
    /// Each user's pseudonym once computed (two log lines per job would otherwise
    /// each pay for an HMAC); dropped with the secret by `forget`.
    known: DashMap<(String, String), String>,
}

impl Pseudonyms {
    pub fn new(store: Arc<dyn Store>) -> Pseudonyms {
        Pseudonyms { store, known: DashMap::new() }
    }

    /// 16 hex digits standing for the user in log lines; `-` when the user has no secret.
    pub fn of(&self, tenant: &str, user_id: &str) -> String {
        let key = (tenant.to_owned(), user_id.to_owned());
        if let Some(known) = self.known.get(&key) {
            return known.clone();
        }
        let Ok(Some(secret)) = self.store.user_key(tenant, user_id) else { return "-".into() };
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("any key length works");
        mac.update(user_id.as_bytes());
        let pseudonym = hex::encode(&mac.finalize().into_bytes()[..8]);
        self.known.insert(key, pseudonym.clone());
        pseudonym
    }

    /// Drop a deleted user's pseudonym (the store deletes the secret): its old log
    /// lines become unlinkable, and its new jobs log under a new pseudonym.
    pub fn forget(&self, tenant: &str, user_id: &str) {
        self.known.remove(&(tenant.to_owned(), user_id.to_owned()));
    }
}
