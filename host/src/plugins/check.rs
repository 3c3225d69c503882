//! Upload checks, before anything is compiled: size, validity, that it is a
//! component exporting the kind's interface of a supported contract version, and
//! that it imports nothing beyond what the host grants.

use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use crate::error::{Code, Error, Result};
use crate::model::PluginKind;

/// The contract this host implements; any 0.1.x component fits.
pub const CONTRACT: &str = "0.1.0";

/// WASI interfaces a plugin may import (written down in wit/README.md).
const GRANTED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// What the checks learned about an acceptable component.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// The contract version named by its export.
    pub contract: String,
    pub imports: Vec<String>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::new(Code::PluginInvalid, reason)
}

/// Split `ns:pkg/iface@1.2.3` into (`ns:pkg/iface`, `1.2.3`).
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    }
}

fn supported(name: &str, version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let mut parts = v.split('.');
    match name.split_once(':').map(|(ns, _)| ns) {
        Some("wasi") => parts.next() == Some("0") && parts.next() == Some("2"),
        Some("sluice") => parts.next() == Some("0") && parts.next() == Some("1"),
        _ => false,
    }
}

pub fn check(bytes: &[u8], kind: PluginKind, max_bytes: usize) -> Result<Checked> {
    if bytes.is_empty() {
        return Err(invalid("the upload is empty"));
    }
    if bytes.len() > max_bytes {
        return Err(invalid(format!("the component is {} bytes; the limit is {max_bytes}", bytes.len())));
    }
    if !Parser::is_component(bytes) {
        let what = if Parser::is_core_wasm(bytes) { "a core WebAssembly module" } else { "not WebAssembly" };
        return Err(invalid(format!("this is {what}, not a component; build with --target wasm32-wasip2")));
    }
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| invalid(format!("the component is not valid: {e}")))?;

    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| invalid(format!("cannot read the component: {e}")))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    imports.push(import.map_err(|e| invalid(e.to_string()))?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    exports.push(export.map_err(|e| invalid(e.to_string()))?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    for import in &imports {
        let (name, version) = split_version(import);
        let granted = GRANTED_WASI.contains(&name) || name == "sluice:plugin/host" || name == "sluice:plugin/types";
        if !granted {
            return Err(invalid(format!("the component imports {import}, which the host does not grant")));
        }
        if !supported(name, version) {
            return Err(invalid(format!("the component imports {import}: an unsupported version")));
        }
    }
    let wanted = format!("sluice:plugin/{}", kind.as_str());
    let export = exports.iter().find(|e| split_version(e).0 == wanted).ok_or_else(|| {
        invalid(format!(
            "missing export {wanted}@{CONTRACT} for a {} plugin (it exports: {})",
            kind.as_str(),
            list(&exports)
        ))
    })?;
    let (_, version) = split_version(export);
    if !supported(&wanted, version) {
        return Err(invalid(format!("it exports {export}; this host supports sluice:plugin 0.1.x")));
    }
    Ok(Checked { contract: version.unwrap_or_default().to_owned(), imports })
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "nothing".into() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_component() {
        let e = check(b"\0asm\x01\0\0\0", PluginKind::Validator, 1 << 20).unwrap_err();
        assert!(e.reason.contains("core WebAssembly module"), "{}", e.reason);
        let e = check(b"hello", PluginKind::Validator, 1 << 20).unwrap_err();
        assert!(e.reason.contains("not WebAssembly"));
        let e = check(&[0; 100], PluginKind::Validator, 10).unwrap_err();
        assert!(e.reason.contains("limit is 10"));
    }

    #[test]
    fn versions() {
        assert!(supported("wasi:io/streams", Some("0.2.6")));
        assert!(!supported("wasi:io/streams", Some("0.3.0")));
        assert!(supported("sluice:plugin/validator", Some("0.1.4")));
        assert!(!supported("sluice:plugin/validator", Some("0.2.0")));
        assert!(!supported("sluice:plugin/validator", None));
    }
}
