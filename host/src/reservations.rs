//! Ready jobs a validator is judging before they are claimed. A judged claim
//! reserves the jobs it read, so concurrent claimers of one queue judge different
//! jobs instead of all judging its head. A reservation is only a hint: the writer
//! claims a judged job only if it is still ready at the revision the plugin saw.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::error::Result;

/// The seqs being judged, per (tenant, queue).
#[derive(Default)]
pub struct Reservations(Mutex<HashMap<(String, String), HashSet<u64>>>);

/// Jobs reserved until this is dropped (also when the claim is abandoned midway).
pub struct Reserved<'r> {
    reservations: &'r Reservations,
    queue: (String, String),
    seqs: Vec<u64>,
}

impl Reservations {
    /// Reserve the jobs `read` returns (`seq` names each); `read` is given the
    /// seqs already reserved in the queue, to skip them, and runs under the lock,
    /// so two claimers never reserve the same job.
    pub fn reserve<T>(
        &self,
        tenant: &str,
        queue: &str,
        read: impl FnOnce(&HashSet<u64>) -> Result<Vec<T>>,
        seq: impl Fn(&T) -> u64,
    ) -> Result<(Reserved<'_>, Vec<T>)> {
        let key = (tenant.to_owned(), queue.to_owned());
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let taken = all.entry(key.clone()).or_default();
        let jobs = match read(taken) {
            Ok(jobs) => jobs,
            Err(e) => {
                if taken.is_empty() {
                    all.remove(&key);
                }
                return Err(e);
            }
        };
        let seqs: Vec<u64> = jobs.iter().map(seq).collect();
        taken.extend(&seqs);
        if taken.is_empty() {
            all.remove(&key);
        }
        Ok((Reserved { reservations: self, queue: key, seqs }, jobs))
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut all = self.reservations.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(taken) = all.get_mut(&self.queue) {
            for seq in &self.seqs {
                taken.remove(seq);
            }
            if taken.is_empty() {
                all.remove(&self.queue);
            }
        }
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
        assert!(!r.0.lock().unwrap().contains_key(&("acme".into(), "q".into())), "an idle queue leaves no entry");
    }
}
