//! The reference plugins, built from `plugins/` and run in the real host engine
//! through the SDK's harness, under the production limits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};
use sluice_host::model::{JobState, PluginKind};
use sluice_host::plugins::{Action, QueueStats, Verdict};
use sluice_sdk::testing::{Harness, build_components, job, job_with_tags};

fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT
        .get_or_init(|| build_components(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.toml")));
    built.get(name).unwrap_or_else(|| panic!("plugin {name} was not built")).clone()
}

fn tags(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn require_fields_refuses_completing_without_the_field() {
    let h = Harness::load(plugin("require_fields"), PluginKind::Validator);
    let required = tags(json!({ "required_fields": ["invoice_id"] }));
    let missing = job_with_tags("billing", json!({ "amount": 3 }), required.clone());
    let outcome = h.validate(&missing, Action::Complete, JobState::Processing, JobState::Completed);
    match outcome.result {
        Ok(Verdict::Reject { code, reason }) => {
            assert_eq!(code, "MISSING_FIELD");
            assert!(reason.contains("invoice_id"), "{reason}");
        }
        _ => panic!("expected a rejection"),
    }
    assert!(outcome.output.contains("require_fields"), "its log line is captured: {}", outcome.output);
    let present = job_with_tags("billing", json!({ "invoice_id": 7 }), required.clone());
    let ok = h.validate(&present, Action::Complete, JobState::Processing, JobState::Completed);
    assert!(matches!(ok.result, Ok(Verdict::Allow)));
    let claim = h.validate(&missing, Action::Claim, JobState::Pending, JobState::Processing);
    assert!(matches!(claim.result, Ok(Verdict::Allow)), "only complete is judged");
    println!("require_fields: {} fuel per judged complete, {} µs", ok.fuel, ok.duration.as_micros());
    assert!(ok.fuel > 0, "fuel is reported");
}

#[test]
fn pii_tagger_finds_emails_and_phone_numbers() {
    let h = Harness::load(plugin("pii_tagger"), PluginKind::Tagger);
    let outcome =
        h.tag(&job("signup", json!({ "contact": { "mail": "ada@example.org" }, "notes": ["call +44 20 7946 0958"] })));
    let added: HashMap<String, Value> = outcome.result.expect("no trap").expect("no refusal").into_iter().collect();
    assert_eq!(added["gdpr"], json!(true));
    let mut pii: Vec<String> = serde_json::from_value(added["pii"].clone()).unwrap();
    pii.sort();
    assert_eq!(pii, vec!["email", "phone"]);
    let none = h.tag(&job("signup", json!({ "count": 12, "word": "hello" }))).result.unwrap().unwrap();
    assert!(none.is_empty(), "no tags without personal data: {none:?}");
}

#[test]
fn payload_migrator_goes_up_and_back_down() {
    let h = Harness::load(plugin("payload_migrator"), PluginKind::Migrator);
    let v1 = json!({ "name": "Ada King Lovelace", "id": 1 });
    let v2: Value = serde_json::from_str(&h.up(&v1, 1).result.unwrap().unwrap()).unwrap();
    assert_eq!(v2, json!({ "first_name": "Ada King", "last_name": "Lovelace", "id": 1 }));
    let back: Value = serde_json::from_str(&h.down(&v2, 2).result.unwrap().unwrap()).unwrap();
    assert_eq!(back, v1);
    assert!(h.up(&v1, 5).result.unwrap().is_err(), "other versions are refused");
}

#[test]
fn depth_alert_fires_over_the_threshold() {
    let h = Harness::load(plugin("depth_alert"), PluginKind::AlertPolicy);
    let quiet = QueueStats { queue: "q".into(), pending: 10, ..QueueStats::default() };
    assert!(h.evaluate(&quiet).result.unwrap().is_empty());
    let deep = QueueStats { queue: "q".into(), pending: 500, ..QueueStats::default() };
    let alerts = h.evaluate(&deep).result.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].name.as_str(), alerts[0].severity), ("queue-depth", "warning"));
    let flooded = QueueStats { queue: "q".into(), pending: 5000, ..QueueStats::default() };
    assert_eq!(h.evaluate(&flooded).result.unwrap()[0].severity, "critical");
}

#[test]
fn a_plugin_of_another_kind_is_refused_at_load() {
    let Err(refused) = std::panic::catch_unwind(|| Harness::load(plugin("pii_tagger"), PluginKind::Validator)) else {
        panic!("a tagger does not export the validator interface, yet it loaded as a validator");
    };
    // Refused by the upload checks for the reason, not by any other failure on the way.
    let message = refused.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("the upload checks refused it") && message.contains("missing export"), "{message}");
}
