//! Migrator between payload schema v1 `{"name": "Ada Lovelace", ...}` and
//! v2 `{"first_name": "Ada", "last_name": "Lovelace", ...}`. Up splits the
//! name on its last space, down joins the parts; other fields are kept.
//! Any other version is refused.

use sluice_sdk::serde_json::{Map, Value};
use sluice_sdk::{migrator, serde_json};

struct PayloadMigrator;

impl migrator::Migrator for PayloadMigrator {
    fn up(payload: Value, from: u32) -> Result<Value, String> {
        if from != 1 {
            return Err(format!("payload_migrator only migrates up from v1 to v2, not from v{from}"));
        }
        let mut object = into_object(payload, 1)?;
        let name = match object.remove("name") {
            Some(Value::String(name)) => name,
            _ => return Err("v1 payload has no string field \"name\"".to_string()),
        };
        let (first, last) = match name.rsplit_once(' ') {
            Some((first, last)) => (first.to_string(), last.to_string()),
            None => (name, String::new()),
        };
        object.insert("first_name".to_string(), Value::String(first));
        object.insert("last_name".to_string(), Value::String(last));
        Ok(Value::Object(object))
    }

    fn down(payload: Value, from: u32) -> Result<Value, String> {
        if from != 2 {
            return Err(format!("payload_migrator only migrates down from v2 to v1, not from v{from}"));
        }
        let mut object = into_object(payload, 2)?;
        let mut part = |key: &str| match object.remove(key) {
            Some(Value::String(text)) => Ok(text),
            _ => Err(format!("v2 payload has no string field \"{key}\"")),
        };
        let first = part("first_name")?;
        let last = part("last_name")?;
        let name = if last.is_empty() { first } else { format!("{first} {last}") };
        object.insert("name".to_string(), Value::String(name));
        Ok(Value::Object(object))
    }
}

sluice_sdk::export_migrator!(PayloadMigrator);

fn into_object(payload: Value, version: u32) -> Result<Map<String, Value>, String> {
    match payload {
        Value::Object(object) => Ok(object),
        other => Err(format!(
            "a v{version} payload is a JSON object, not {}",
            serde_json::to_string(&other).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::migrator::Migrator;
    use sluice_sdk::serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({"name": "Ada King Lovelace", "id": 7});
        let v2 = PayloadMigrator::up(v1.clone(), 1).unwrap();
        assert_eq!(v2, json!({"first_name": "Ada King", "last_name": "Lovelace", "id": 7}));
        assert_eq!(PayloadMigrator::down(v2, 2).unwrap(), v1);
        assert!(PayloadMigrator::up(v1, 2).is_err());
    }
}
