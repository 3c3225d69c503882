//! Misbehaving validator: `validate` scans all of its own linear memory for
//! the marker `SLUICE-SECRET-7f3a9c` that `secret_writer` leaks, and refuses
//! with code `SECRET_FOUND` if it sees it (so a fresh instance must never
//! see it). The needle is built at run time from reversed bytes, so the
//! marker is not in this module's data segment; its own copy is skipped.

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct SecretReader;

impl validator::Validator for SecretReader {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        match find_marker() {
            Some(address) => Err(Rejection::new("SECRET_FOUND", format!("found the marker at address {address:#x}"))),
            None => Ok(()),
        }
    }
}

sluice_sdk::export_validator!(SecretReader);

#[cfg(target_family = "wasm")]
fn find_marker() -> Option<usize> {
    use core::ptr::{read_volatile, with_exposed_provenance};
    use std::hint::black_box;

    let reversed: &[u8] = black_box(b"c9a3f7-TERCES-ECIULS");
    let needle: Vec<u8> = reversed.iter().rev().copied().collect();
    let own = needle.as_ptr() as usize;
    let end = core::arch::wasm32::memory_size(0) * 65536;
    let byte = |address: usize| -> u8 {
        // SAFETY: every address below memory_size * 64 KiB is in bounds of
        // the linear memory; the read is volatile so it is really done.
        unsafe { read_volatile(with_exposed_provenance::<u8>(address)) }
    };
    // Address 0 is the null pointer, which Rust may not read; nothing is ever
    // placed there, so the scan starts at 1.
    (1..end.saturating_sub(needle.len()))
        .filter(|&start| start != own)
        .find(|&start| needle.iter().enumerate().all(|(i, &b)| byte(start + i) == b))
}

#[cfg(not(target_family = "wasm"))]
fn find_marker() -> Option<usize> {
    None
}
