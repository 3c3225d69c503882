//! The job state machine: one table, pure functions, no I/O.
//!
//! Every state change in Sluice is decided here. The store calls [`decide`] with the
//! job's current state and the facts it holds (attempts left, breaker open), and
//! applies exactly the [`Move`] it gets back, or refuses with the [`Refusal`].

use crate::model::JobState::{self, *};

/// What someone (a person, a worker or the host) wants to do to one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A worker takes a pending job (the store picks which).
    Claim,
    /// A worker extends its lease, maybe saving progress.
    Heartbeat,
    Complete,
    Fail {
        retryable: bool,
    },
    /// A worker hands a job back without spending an attempt.
    Release,
    /// Manual: failed -> pending with a fresh attempt budget.
    Retry,
    /// Manual: a terminal job back to pending; needs the override.
    Replay {
        override_terminal: bool,
    },
    Cancel,
    /// Host: the lease ran out; a failed attempt with `LEASE_EXPIRED`.
    ExpireLease,
    /// Host: a failed job's backoff has passed.
    Reschedule,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Claim => "claim",
            Action::Heartbeat => "heartbeat",
            Action::Complete => "complete",
            Action::Fail { .. } => "fail",
            Action::Release => "release",
            Action::Retry => "retry",
            Action::Replay { .. } => "replay",
            Action::Cancel => "cancel",
            Action::ExpireLease => "lease_expired",
            Action::Reschedule => "reschedule",
        }
    }
}

/// Facts about the job beyond its state that the table depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The attempt just made was not the last of the budget.
    pub attempts_left: bool,
    /// The failure breaker of the job's (tenant, queue, kind) is open.
    pub breaker_open: bool,
    pub parked: bool,
}

/// The decided move: the state to go to, and whether the job ends up parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub to: JobState,
    pub parked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("illegal transition")]
    Illegal,
    #[error("taking a terminal job back to pending is a replay and needs override: true")]
    NeedsOverride,
}

impl Refusal {
    /// The API's error for this refusal of `action` on a job in `state`.
    pub fn error(self, action: Action, state: JobState) -> crate::error::Error {
        use crate::error::{Code, Error};
        match self {
            Refusal::Illegal => Error::new(
                Code::IllegalTransition,
                format!("{} is not allowed from state {}", action.name(), state.as_str()),
            ),
            Refusal::NeedsOverride => Error::new(
                Code::ReplayNeedsOverride,
                format!(
                    "job is {}; taking it back to pending is a replay and needs \"override\": true",
                    state.as_str()
                ),
            ),
        }
    }
}

fn to(state: JobState) -> Result<Move, Refusal> {
    Ok(Move { to: state, parked: false })
}

/// The transition table (the README's "Jobs and their states").
pub fn decide(action: Action, from: JobState, facts: Facts) -> Result<Move, Refusal> {
    match (action, from) {
        (Action::Claim, Pending) => to(Processing),
        (Action::Heartbeat, Processing) => to(Processing),
        (Action::Complete, Processing) => to(Completed),
        (Action::Release, Processing) => to(Pending),
        (Action::Fail { retryable }, Processing) => after_failed_attempt(retryable, facts),
        (Action::ExpireLease, Processing) => after_failed_attempt(true, facts),
        (Action::Reschedule, Failed) if !facts.parked => to(Pending),
        (Action::Retry, Failed) => to(Pending),
        (Action::Retry, Completed | Abandoned) => Err(Refusal::NeedsOverride),
        (Action::Replay { override_terminal }, Completed | Abandoned) => {
            if override_terminal {
                to(Pending)
            } else {
                Err(Refusal::NeedsOverride)
            }
        }
        (Action::Cancel, Pending | Failed) => to(Abandoned),
        _ => Err(Refusal::Illegal),
    }
}

/// A failed attempt: back to `failed` (parked while the breaker is open) when it may
/// run again, else `abandoned`.
fn after_failed_attempt(retryable: bool, facts: Facts) -> Result<Move, Refusal> {
    if retryable && facts.attempts_left { Ok(Move { to: Failed, parked: facts.breaker_open }) } else { to(Abandoned) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNABLE: Facts = Facts { attempts_left: true, breaker_open: false, parked: false };

    #[test]
    fn failed_attempt_with_budget_waits_in_failed() {
        let m = decide(Action::Fail { retryable: true }, Processing, RUNNABLE).unwrap();
        assert_eq!(m, Move { to: Failed, parked: false });
    }

    #[test]
    fn open_breaker_parks_the_job() {
        let facts = Facts { breaker_open: true, ..RUNNABLE };
        let m = decide(Action::ExpireLease, Processing, facts).unwrap();
        assert_eq!(m, Move { to: Failed, parked: true });
    }

    #[test]
    fn last_attempt_or_not_retryable_abandons() {
        let spent = Facts { attempts_left: false, ..RUNNABLE };
        assert_eq!(decide(Action::ExpireLease, Processing, spent).unwrap().to, Abandoned);
        let m = decide(Action::Fail { retryable: false }, Processing, RUNNABLE).unwrap();
        assert_eq!(m.to, Abandoned);
    }

    #[test]
    fn parked_jobs_are_not_rescheduled() {
        let parked = Facts { parked: true, ..RUNNABLE };
        assert_eq!(decide(Action::Reschedule, Failed, parked), Err(Refusal::Illegal));
        assert_eq!(decide(Action::Reschedule, Failed, RUNNABLE).unwrap().to, Pending);
    }

    #[test]
    fn host_moves_never_leave_other_states() {
        for state in [Pending, Completed, Abandoned, Failed] {
            assert_eq!(decide(Action::ExpireLease, state, RUNNABLE), Err(Refusal::Illegal));
        }
        for state in [Pending, Processing, Completed, Abandoned] {
            assert_eq!(decide(Action::Reschedule, state, RUNNABLE), Err(Refusal::Illegal));
        }
    }
}
