//! Alert policies turn a queue's statistics into alerts (world
//! `alert-policy-plugin`, export `sluice:plugin/alert-policy@0.1.0`).

use core::fmt;
use core::marker::PhantomData;

/// Generated WIT bindings of the `alert-policy-plugin` world (SDK internals).
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "alert-policy-plugin",
        pub_export_macro: true,
        export_macro_name: "export_alert_policy_bindings",
        default_bindings_module: "::sluice_sdk::alert_policy::bindings",
        with: {
            "sluice:plugin/host@0.1.0": crate::validator::bindings::sluice::plugin::host,
        },
    });
}

use bindings::exports::sluice::plugin::alert_policy as wit;

/// A queue's statistics, as the host computes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Jobs waiting to be claimed.
    pub pending: u64,
    /// Jobs claimed by a worker.
    pub processing: u64,
    /// Jobs failed with attempts left, waiting out their backoff (or parked).
    pub failed: u64,
    /// Jobs parked.
    pub parked: u64,
    /// Jobs flagged stuck: pending, processing without progress, or parked past the queue's timeout.
    pub stuck: u64,
    /// Age of the oldest ready job, in ms (0 when none).
    pub oldest_pending_ms: u64,
}

/// How serious an [`Alert`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The WIT name of the severity (`info`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert that should be firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable name: the same alert returned again stays one firing alert.
    pub name: String,
    /// How serious it is.
    pub severity: Severity,
    /// What is wrong, for people.
    pub message: String,
}

impl Alert {
    /// An alert with this name, severity and message.
    pub fn new(name: impl Into<String>, severity: Severity, message: impl Into<String>) -> Self {
        Alert { name: name.into(), severity, message: message.into() }
    }
}

/// An alert policy plugin. Export the implementing type with
/// [`export_alert_policy!`](crate::export_alert_policy).
pub trait AlertPolicy {
    /// The alerts that should be firing now; an empty list clears them.
    fn evaluate(stats: &QueueStats) -> Vec<Alert>;
}

/// Adapts an [`AlertPolicy`] to the generated bindings (used by
/// [`export_alert_policy!`](crate::export_alert_policy)).
#[doc(hidden)]
pub struct Export<T>(PhantomData<T>);

impl<T: AlertPolicy> wit::Guest for Export<T> {
    fn evaluate(stats: wit::QueueStats) -> Vec<wit::Alert> {
        let stats = QueueStats {
            queue: stats.queue,
            pending: stats.pending,
            processing: stats.processing,
            failed: stats.failed,
            parked: stats.parked,
            stuck: stats.stuck,
            oldest_pending_ms: stats.oldest_pending_ms,
        };
        T::evaluate(&stats)
            .into_iter()
            .map(|alert| wit::Alert {
                name: alert.name,
                severity: match alert.severity {
                    Severity::Info => wit::Severity::Info,
                    Severity::Warning => wit::Severity::Warning,
                    Severity::Critical => wit::Severity::Critical,
                },
                message: alert.message,
            })
            .collect()
    }
}

/// Exports a type implementing
/// [`alert_policy::AlertPolicy`](crate::alert_policy::AlertPolicy) as this
/// component's `sluice:plugin/alert-policy` interface.
///
/// ```ignore
/// sluice_sdk::export_alert_policy!(MyPolicy);
/// ```
#[macro_export]
macro_rules! export_alert_policy {
    ($ty:ty) => {
        const _: () = {
            type __SluiceAlertPolicyExport = $crate::alert_policy::Export<$ty>;
            $crate::alert_policy::bindings::export_alert_policy_bindings!(
                __SluiceAlertPolicyExport with_types_in $crate::alert_policy::bindings
            );
        };
    };
}
