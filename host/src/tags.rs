//! How a job's tags are put together (QUEUE-003). Tags come from the tenant's
//! defaults, the user's configuration, tagger plugins and the request. Free-form
//! keys: the request wins, then plugins, then the user's, then the tenant's.
//! Compliance keys merge by the rule in [`RULES`], so that nothing can loosen them.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{TenantConfig, UserConfig};

/// How one compliance key merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A boolean; true from any source wins.
    AnyTrue,
    /// One of the levels, the highest wins.
    Highest(&'static [&'static str]),
    /// A list of strings; the union of all sources.
    Union,
    /// Days: the request chooses within the tenant's bounds (else its default);
    /// a plugin may only shorten it.
    Retention,
    /// Fixed by the tenant when it sets one; a request naming another is refused.
    TenantFixed,
}

/// The compliance keys and their rules (the README has the same table).
pub const RULES: &[(&str, Rule)] = &[
    ("gdpr", Rule::AnyTrue),
    ("pii", Rule::Union),
    ("data_class", Rule::Highest(&["public", "internal", "confidential", "restricted"])),
    ("retention_days", Rule::Retention),
    ("region", Rule::TenantFixed),
];

/// Where each input of the merge comes from.
pub struct Sources<'a> {
    pub tenant: &'a TenantConfig,
    pub user: Option<&'a UserConfig>,
    pub plugins: &'a [Map<String, Value>],
    pub request: &'a Map<String, Value>,
}

fn bad(key: &str, what: &str) -> Error {
    Error::validation(format!("tag {key}: {what}"))
}

pub fn merge(s: &Sources<'_>) -> Result<Map<String, Value>> {
    let empty = Map::new();
    let user = s.user.map_or(&empty, |u| &u.tags);
    // Lowest precedence first.
    let mut layers: Vec<&Map<String, Value>> = vec![&s.tenant.default_tags, user];
    layers.extend(s.plugins.iter());
    layers.push(s.request);

    let mut merged = Map::new();
    for layer in &layers {
        for (k, v) in layer.iter() {
            if !RULES.iter().any(|(key, _)| key == k) {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    for &(key, rule) in RULES {
        let values: Vec<&Value> = layers.iter().filter_map(|l| l.get(key)).collect();
        let value = match rule {
            Rule::AnyTrue => any_true(key, &values)?,
            Rule::Union => union(key, &values)?,
            Rule::Highest(levels) => highest(key, levels, &values)?,
            Rule::Retention => retention(s, user)?,
            Rule::TenantFixed => tenant_fixed(key, s, user)?,
        };
        if let Some(v) = value {
            merged.insert(key.to_owned(), v);
        }
    }
    Ok(merged)
}

fn any_true(key: &str, values: &[&Value]) -> Result<Option<Value>> {
    let mut out = None;
    for v in values {
        let b = v.as_bool().ok_or_else(|| bad(key, "must be true or false"))?;
        out = Some(out.unwrap_or(false) || b);
    }
    Ok(out.map(Value::Bool))
}

fn union(key: &str, values: &[&Value]) -> Result<Option<Value>> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut all: Vec<String> = Vec::new();
    for v in values {
        for item in v.as_array().ok_or_else(|| bad(key, "must be a list of strings"))? {
            let item = item.as_str().ok_or_else(|| bad(key, "must be a list of strings"))?;
            if !all.iter().any(|a| a == item) {
                all.push(item.to_owned());
            }
        }
    }
    all.sort();
    Ok(Some(Value::from(all)))
}

fn highest(key: &str, levels: &[&str], values: &[&Value]) -> Result<Option<Value>> {
    let mut best: Option<usize> = None;
    for v in values {
        let level = v.as_str().and_then(|t| levels.iter().position(|l| *l == t));
        let level = level.ok_or_else(|| bad(key, &format!("must be one of {}", levels.join(", "))))?;
        best = Some(best.map_or(level, |b| b.max(level)));
    }
    Ok(best.map(|i| Value::from(levels[i])))
}

/// Longest retention a job may name: a hundred years.
const MAX_RETENTION_DAYS: u64 = 36_500;

fn days(v: &Value) -> Result<u64> {
    v.as_u64()
        .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
        .ok_or_else(|| bad("retention_days", "must be a whole number of days from 1 to 36500"))
}

fn retention(s: &Sources<'_>, user: &Map<String, Value>) -> Result<Option<Value>> {
    let chosen = match s.request.get("retention_days") {
        Some(v) => {
            let d = days(v)?;
            let (min, max) = (s.tenant.min_retention_days, s.tenant.max_retention_days);
            if min.is_some_and(|m| d < m) || max.is_some_and(|m| d > m) {
                return Err(bad(
                    "retention_days",
                    &format!("{d} is outside the tenant's bounds ({} to {})", show(min), show(max)),
                ));
            }
            Some(d)
        }
        None => match user.get("retention_days").or_else(|| s.tenant.default_tags.get("retention_days")) {
            Some(v) => Some(days(v)?),
            None => None,
        },
    };
    let mut result = chosen;
    for plugin in s.plugins {
        if let Some(v) = plugin.get("retention_days") {
            let d = days(v)?;
            result = Some(result.map_or(d, |r| r.min(d)));
        }
    }
    Ok(result.map(Value::from))
}

fn show(bound: Option<u64>) -> String {
    bound.map_or("any".into(), |b| b.to_string())
}

fn tenant_fixed(key: &str, s: &Sources<'_>, user: &Map<String, Value>) -> Result<Option<Value>> {
    if let Some(fixed) = s.tenant.default_tags.get(key) {
        if s.request.get(key).is_some_and(|v| v != fixed) {
            return Err(bad(key, &format!("the tenant fixes it to {fixed}")));
        }
        return Ok(Some(fixed.clone()));
    }
    Ok(s.request.get(key).or_else(|| user.get(key)).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn run(
        tenant: Value,
        bounds: (Option<u64>, Option<u64>),
        user: Value,
        plugins: Vec<Value>,
        request: Value,
    ) -> Result<Value> {
        let tenant = TenantConfig {
            default_tags: obj(tenant),
            min_retention_days: bounds.0,
            max_retention_days: bounds.1,
            ..Default::default()
        };
        let user = UserConfig { tags: obj(user), quota: None };
        let plugins: Vec<_> = plugins.into_iter().map(obj).collect();
        let request = obj(request);
        merge(&Sources { tenant: &tenant, user: Some(&user), plugins: &plugins, request: &request }).map(Value::Object)
    }

    #[test]
    fn stricter_compliance_values_win() {
        let out = run(
            json!({ "gdpr": true, "data_class": "internal", "team": "a" }),
            (None, None),
            json!({ "data_class": "confidential" }),
            vec![json!({ "gdpr": false, "data_class": "public", "pii": ["email"], "team": "plugin" })],
            json!({ "gdpr": false, "data_class": "public", "pii": ["phone"], "team": "req" }),
        )
        .unwrap();
        assert_eq!(out["gdpr"], true, "a request cannot loosen gdpr");
        assert_eq!(out["data_class"], "confidential", "the highest level wins");
        assert_eq!(out["pii"], json!(["email", "phone"]));
        assert_eq!(out["team"], "req", "free-form: the request wins");
    }

    #[test]
    fn retention_is_chosen_within_bounds_and_plugins_only_shorten() {
        let ok = run(
            json!({ "retention_days": 30 }),
            (Some(7), Some(90)),
            json!({}),
            vec![json!({ "retention_days": 10 })],
            json!({ "retention_days": 60 }),
        );
        assert_eq!(ok.unwrap()["retention_days"], 10);
        let longer = run(
            json!({}),
            (None, None),
            json!({}),
            vec![json!({ "retention_days": 999 })],
            json!({ "retention_days": 5 }),
        );
        assert_eq!(longer.unwrap()["retention_days"], 5, "a plugin cannot lengthen it");
        let default = run(json!({ "retention_days": 30 }), (None, None), json!({}), vec![], json!({}));
        assert_eq!(default.unwrap()["retention_days"], 30);
        let outside = run(json!({}), (Some(7), Some(90)), json!({}), vec![], json!({ "retention_days": 365 }));
        assert!(outside.unwrap_err().reason.contains("outside the tenant's bounds"));
    }

    #[test]
    fn region_is_fixed_by_the_tenant() {
        let same = run(json!({ "region": "eu" }), (None, None), json!({}), vec![], json!({ "region": "eu" }));
        assert_eq!(same.unwrap()["region"], "eu");
        assert!(run(json!({ "region": "eu" }), (None, None), json!({}), vec![], json!({ "region": "us" })).is_err());
        let free = run(json!({}), (None, None), json!({}), vec![], json!({ "region": "us" }));
        assert_eq!(free.unwrap()["region"], "us");
    }

    #[test]
    fn malformed_compliance_values_are_refused() {
        assert!(run(json!({}), (None, None), json!({}), vec![], json!({ "gdpr": "yes" })).is_err());
        assert!(run(json!({}), (None, None), json!({}), vec![], json!({ "data_class": "secret" })).is_err());
        assert!(run(json!({}), (None, None), json!({}), vec![], json!({ "retention_days": -1 })).is_err());
    }
}
