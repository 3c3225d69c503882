//! Tagger: tags `gdpr: true` and `pii: ["email"]`, `["phone"]` or
//! `["email", "phone"]` when any string anywhere in the payload holds an
//! e-mail address or a phone number. Adds no tag when it finds neither.

use sluice_sdk::serde_json::{Value, json};
use sluice_sdk::{Job, tagger};

struct PiiTagger;

impl tagger::Tagger for PiiTagger {
    fn tag(job: &Job) -> Result<Vec<(String, Value)>, String> {
        let mut found = Found::default();
        scan(&job.payload_value(), &mut found);
        let mut pii = Vec::new();
        if found.email {
            pii.push("email");
        }
        if found.phone {
            pii.push("phone");
        }
        if pii.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![("gdpr".to_string(), json!(true)), ("pii".to_string(), json!(pii))])
    }
}

sluice_sdk::export_tagger!(PiiTagger);

#[derive(Default)]
struct Found {
    email: bool,
    phone: bool,
}

/// Visits every string in `value` (object keys too), recursively.
fn scan(value: &Value, found: &mut Found) {
    match value {
        Value::String(s) => check(s, found),
        Value::Array(items) => items.iter().for_each(|item| scan(item, found)),
        Value::Object(map) => {
            for (key, item) in map {
                check(key, found);
                scan(item, found);
            }
        }
        _ => {}
    }
}

fn check(text: &str, found: &mut Found) {
    found.email |= has_email(text);
    found.phone |= has_phone(text);
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

/// `something@something.tld`: a non-empty local part, then a domain with a
/// dot, a non-empty label before it and a top-level label of 2+ letters.
fn has_email(text: &str) -> bool {
    text.match_indices('@').any(|(at, _)| {
        let local = text[..at].chars().rev().take_while(|&c| is_local_char(c)).count();
        let domain: String = text[at + 1..].chars().take_while(|&c| is_domain_char(c)).collect();
        let domain = domain.trim_end_matches(['.', '-']);
        let Some((host, tld)) = domain.rsplit_once('.') else {
            return false;
        };
        local > 0
            && !host.is_empty()
            && !host.starts_with('.')
            && tld.len() >= 2
            && tld.chars().all(|c| c.is_ascii_alphabetic())
    })
}

/// A run of 9 or more digits, which may contain spaces, dashes and
/// parentheses between them and may start with `+`.
fn has_phone(text: &str) -> bool {
    let mut digits = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits += 1;
            if digits >= 9 {
                return true;
            }
        } else if !matches!(c, ' ' | '-' | '(' | ')') {
            // Anything else (a `+` too, which only leads a number) ends the run.
            digits = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(has_email("write to ada@example.org please"));
        assert!(has_email("a.b+c@mail.example.co.uk"));
        assert!(!has_email("no at sign"));
        assert!(!has_email("@example.org"));
        assert!(!has_email("ada@localhost"));
        assert!(!has_email("ada@example.1"));
    }

    #[test]
    fn phones() {
        assert!(has_phone("+44 (20) 7946-0958"));
        assert!(has_phone("call 0612345678"));
        assert!(!has_phone("order 12345678"));
        assert!(!has_phone("1234 5678, 9"));
    }
}
