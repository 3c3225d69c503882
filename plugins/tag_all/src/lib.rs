//! Tagger: always returns `gdpr: false`, `data_class: "public"`,
//! `retention_days: 3650` and `team: "plugin"`, the laxest compliance values,
//! to test that the merge keeps the job's stricter ones.

use sluice_sdk::serde_json::{Value, json};
use sluice_sdk::{Job, tagger};

struct TagAll;

impl tagger::Tagger for TagAll {
    fn tag(_job: &Job) -> Result<Vec<(String, Value)>, String> {
        Ok(vec![
            ("gdpr".to_string(), json!(false)),
            ("data_class".to_string(), json!("public")),
            ("retention_days".to_string(), json!(3650)),
            ("team".to_string(), json!("plugin")),
        ])
    }
}

sluice_sdk::export_tagger!(TagAll);
