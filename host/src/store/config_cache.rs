//! The configuration every insert reads, cached: tenant configuration, user
//! configuration and limits. Reading them took three read transactions per insert,
//! about 5 % of the server's CPU with a tagger bound.
//!
//! An entry holds the configuration generation it was read under; the writer bumps
//! the generation after committing any batch that changed one of these tables, so
//! an entry is used only while nothing has changed since it was read.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::error::Result;
use crate::limits::Limits;
use crate::model::{TenantConfig, UserConfig};

/// Entries per map before it is emptied: one entry per user keeps it bounded.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct ConfigCache {
    generation: Arc<AtomicU64>,
    tenants: DashMap<String, (u64, TenantConfig)>,
    users: DashMap<(String, String), (u64, Option<UserConfig>)>,
    limits: DashMap<String, (u64, Option<Limits>)>,
}

impl ConfigCache {
    /// The generation the writer bumps.
    pub fn generation(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    pub fn tenant_config(&self, tenant: &str, load: impl FnOnce() -> Result<TenantConfig>) -> Result<TenantConfig> {
        self.get(&self.tenants, tenant.to_owned(), load)
    }

    pub fn user_config(
        &self,
        tenant: &str,
        user_id: &str,
        load: impl FnOnce() -> Result<Option<UserConfig>>,
    ) -> Result<Option<UserConfig>> {
        self.get(&self.users, (tenant.to_owned(), user_id.to_owned()), load)
    }

    pub fn limits(&self, tenant: &str, load: impl FnOnce() -> Result<Option<Limits>>) -> Result<Option<Limits>> {
        self.get(&self.limits, tenant.to_owned(), load)
    }

    fn get<K: Hash + Eq, T: Clone>(
        &self,
        map: &DashMap<K, (u64, T)>,
        key: K,
        load: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        // Read the generation before the value: a value loaded after a change but
        // filed under the older generation is only reloaded once more.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(entry) = map.get(&key).filter(|e| e.0 == generation) {
            return Ok(entry.1.clone());
        }
        let value = load()?;
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (generation, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_until_the_generation_moves() {
        let cache = ConfigCache::default();
        let loads = std::cell::Cell::new(0);
        let load = |v: u64| {
            loads.set(loads.get() + 1);
            Ok(Some(Limits { max_queues: Some(v), ..Limits::default() }))
        };
        assert_eq!(cache.limits("t", || load(1)).unwrap().unwrap().max_queues, Some(1));
        assert_eq!(cache.limits("t", || load(2)).unwrap().unwrap().max_queues, Some(1), "cached");
        assert_eq!(loads.get(), 1);
        cache.generation().fetch_add(1, Ordering::Release);
        assert_eq!(cache.limits("t", || load(3)).unwrap().unwrap().max_queues, Some(3), "reloaded");
        assert_eq!(cache.limits("u", || load(4)).unwrap().unwrap().max_queues, Some(4), "per tenant");
        assert_eq!(loads.get(), 3);
    }
}
