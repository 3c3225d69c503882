//! Misbehaving validator: each call first scans all of its linear memory for
//! the marker `SLUICE-SECRET-7f3a9c` and refuses with `SECRET_FOUND` if an
//! earlier call left it there; then it leaks a heap buffer holding the marker
//! and scans again, refusing with `SCAN_BLIND` if it does not see it, so every
//! allowed call also proves the scan works. With a fresh instance per call it
//! allows every time, whichever tenant's copy ran before it.
//!
//! The marker is built at run time from reversed bytes, so the module's data
//! segment never holds it.

use std::hint::black_box;

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct SecretKeeper;

impl validator::Validator for SecretKeeper {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        let marker: Vec<u8> = black_box(b"c9a3f7-TERCES-ECIULS").iter().rev().copied().collect();
        if let Some(address) = find(&marker) {
            return Err(Rejection::new("SECRET_FOUND", format!("an earlier call's marker is at {address:#x}")));
        }
        let leaked: &'static mut [u8] = Box::leak(marker.clone().into_boxed_slice());
        black_box(&leaked);
        if find(&marker).is_none() {
            return Err(Rejection::new("SCAN_BLIND", "the scan missed the marker this call leaked"));
        }
        Ok(())
    }
}

sluice_sdk::export_validator!(SecretKeeper);

/// The address of a copy of `needle` anywhere in linear memory, other than
/// `needle` itself.
#[cfg(target_family = "wasm")]
fn find(needle: &[u8]) -> Option<usize> {
    use core::ptr::{read_volatile, with_exposed_provenance};

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
fn find(_needle: &[u8]) -> Option<usize> {
    None
}
