//! How the CLI prints answers: a readable table by default, JSON with `--json`.

use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

/// A cell's text: strings bare, null as "-", anything else as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Output {
    /// A list of objects as rows, showing `columns` (paths like `lease.token`).
    pub fn rows(&self, value: &Value, items: &[Value], columns: &[&str]) {
        if self.json {
            return println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        }
        let mut table = Table::new();
        table.load_style(NOTHING).set_header(columns.iter().map(|c| c.to_uppercase()));
        for item in items {
            table.add_row(columns.iter().map(|c| cell(lookup(item, c))));
        }
        println!("{table}");
    }

    /// One object as field/value lines.
    pub fn record(&self, value: &Value) {
        if self.json {
            return println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        }
        let mut table = Table::new();
        table.load_style(NOTHING);
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                table.add_row(vec![k.clone(), cell(v)]);
            }
        }
        println!("{table}");
    }

    /// A short confirmation for people; the whole answer for scripts.
    pub fn done(&self, value: &Value, message: &str) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            println!("{message}");
        }
    }
}

fn lookup<'v>(v: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(v, |v, part| &v[part])
}
