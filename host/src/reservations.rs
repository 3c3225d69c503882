//! Ready jobs a validator is judging before they are claimed. A judged claim
//! reserves the jobs it read, so concurrent claimers of one queue judge different
//! jobs instead of all judging its head. A reservation is only a hint: the writer
//! claims a judged job only if it is still ready at the revision the plugin saw.

use std::collections::HashSet;

use dashmap::DashMap;

use crate::error::Result;

/// The seqs being judged, per (tenant, queue). A map shard is locked only while
/// one claimer of its queues reads, so claims of other queues go on meanwhile.
#[derive(Default)]
pub struct Reservations(DashMap<(String, String), HashSet<u64>>);

/// Jobs reserved until this is dropped (also when the claim is abandoned midway).
pub struct Reserved<'r> {
    reservations: &'r Reservations,
    queue: (String, String),
    seqs: Vec<u64>,
}

impl Reservations {
    /// Reserve the jobs `read` returns (`seq` names each); `read` is given the
    /// seqs already reserved in the queue, to skip them, and runs under the
    /// queue's lock, so two claimers never reserve the same job.
    pub fn reserve<T>(
        &self,
        tenant: &str,
        queue: &str,
        read: impl FnOnce(&HashSet<u64>) -> Result<Vec<T>>,
        seq: impl Fn(&T) -> u64,
    ) -> Result<(Reserved<'_>, Vec<T>)> {
        let key = (tenant.to_owned(), queue.to_owned());
        let mut taken = self.0.entry(key.clone()).or_default();
        let jobs = read(&taken);
        let seqs: Vec<u64> = jobs.iter().flatten().map(seq).collect();
        taken.extend(&seqs);
        drop(taken);
        let reserved = Reserved { reservations: self, queue: key, seqs };
        // On a failed read the guard drops here and leaves no empty entry behind.
        Ok((reserved, jobs?))
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(mut taken) = self.reservations.0.get_mut(&self.queue) {
            for seq in &self.seqs {
                taken.remove(seq);
            }
        }
        self.reservations.0.remove_if(&self.queue, |_, taken| taken.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reserves the first `n` of seqs 1..=10 not reserved yet.
    fn next<'r>(r: &'r Reservations, queue: &str, n: usize) -> (Reserved<'r>, Vec<u64>) {
        let read = |taken: &HashSet<u64>| Ok((1..=10).filter(|s| !taken.contains(s)).take(n).collect());
        r.reserve("acme", queue, read, |&seq| seq).unwrap()
    }

    #[test]
    fn claimers_reserve_different_jobs_until_they_let_go() {
        let r = Reservations::default();
        let (first, a) = next(&r, "q", 3);
        let (second, b) = next(&r, "q", 3);
        assert_eq!((a, b), (vec![1, 2, 3], vec![4, 5, 6]));
        let (_other, c) = next(&r, "other", 2);
        assert_eq!(c, [1, 2], "queues reserve on their own");
        drop(first);
        let (third, d) = next(&r, "q", 4);
        assert_eq!(d, [1, 2, 3, 7], "a dropped reservation frees its jobs");
        drop((second, third));
        let failed = r.reserve("acme", "q", |_| Err(crate::error::Error::internal("read failed")), |&s: &u64| s);
        assert!(failed.is_err());
        assert!(!r.0.contains_key(&("acme".into(), "q".into())), "an idle queue leaves no entry");
    }
}
