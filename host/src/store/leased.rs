//! The writer's memo of where the jobs it leased are stored. A lease action
//! (heartbeat, complete, fail, release) names its job by job_uuid, and the
//! job_uuid index has random keys: with a million jobs stored, its leaves are
//! mostly out of the page cache, so the lookup costs a read from the file. The
//! claim that handed the job out knew its seq; the action that follows asks here
//! first.
//!
//! An entry is a hint, not the truth: whoever uses it checks that the record at
//! that seq is the job asked for (a job deleted since, or a seq handed out again
//! after a batch rolled back, fails the check) and falls back to the index.

use std::collections::HashMap;

use uuid::Uuid;

/// Jobs remembered at most; past that the memo starts afresh. Leases in flight
/// rarely reach it, and jobs whose leases ended are forgotten as they end.
const CAPACITY: usize = 65_536;

#[derive(Default)]
pub struct LeasedSeqs {
    /// job_uuid -> (tenant, seq): two tenants may use the same job_uuid, and the
    /// later claim's entry replaces the earlier's.
    seqs: HashMap<u128, (String, u64)>,
}

impl LeasedSeqs {
    pub fn remember(&mut self, tenant: &str, job_uuid: Uuid, seq: u64) {
        if self.seqs.len() >= CAPACITY {
            self.seqs.clear();
        }
        self.seqs.insert(job_uuid.as_u128(), (tenant.to_owned(), seq));
    }

    /// Where the job may be stored.
    pub fn seq(&self, tenant: &str, job_uuid: Uuid) -> Option<u64> {
        self.seqs.get(&job_uuid.as_u128()).filter(|(t, _)| t == tenant).map(|&(_, seq)| seq)
    }

    pub fn forget(&mut self, job_uuid: Uuid) {
        self.seqs.remove(&job_uuid.as_u128());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_job_is_found_for_its_own_tenant_only_until_forgotten() {
        let mut leased = LeasedSeqs::default();
        let id = Uuid::new_v4();
        leased.remember("a", id, 7);
        assert_eq!(leased.seq("a", id), Some(7));
        assert_eq!(leased.seq("b", id), None, "another tenant's job with the same job_uuid");
        leased.forget(id);
        assert_eq!(leased.seq("a", id), None);
    }

    #[test]
    fn the_memo_never_holds_more_than_its_capacity() {
        let mut leased = LeasedSeqs::default();
        for seq in 0..(CAPACITY as u64 + 10) {
            leased.remember("a", Uuid::new_v4(), seq);
        }
        assert!(leased.seqs.len() <= CAPACITY);
    }
}
