//! The alert evaluator: looks at every queue that has thresholds or an
//! alert-policy plugin, and fires, keeps or resolves its alerts.

use std::sync::Arc;

use crate::alerts::Alerting;
use crate::error::Result;

pub async fn pass(alerting: Arc<Alerting>) -> Result<usize> {
    alerting.evaluate().await
}
