//! Taggers add tags to a job on insert (world `tagger-plugin`, export
//! `sluice:plugin/tagger@0.1.0`).

use core::marker::PhantomData;

use serde_json::Value;

use crate::Job;

/// Generated WIT bindings of the `tagger-plugin` world (SDK internals).
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "tagger-plugin",
        pub_export_macro: true,
        export_macro_name: "export_tagger_bindings",
        default_bindings_module: "::sluice_sdk::tagger::bindings",
        with: {
            "sluice:plugin/types@0.1.0": crate::validator::bindings::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::validator::bindings::sluice::plugin::host,
        },
    });
}

use crate::validator::bindings::sluice::plugin::types as wit;
use bindings::exports::sluice::plugin::tagger::{Guest, TagEntry};

/// A tagger plugin. Export the implementing type with
/// [`export_tagger!`](crate::export_tagger).
pub trait Tagger {
    /// Tags to merge into the job's, as `(key, value)` pairs; the SDK sends
    /// each value as JSON text. Compliance keys are merged by their rule
    /// (the stricter value wins: the README's "Tags"). `Err` refuses the insert.
    fn tag(job: &Job) -> Result<Vec<(String, Value)>, String>;
}

/// Adapts a [`Tagger`] to the generated bindings (used by
/// [`export_tagger!`](crate::export_tagger)).
#[doc(hidden)]
pub struct Export<T>(PhantomData<T>);

impl<T: Tagger> Guest for Export<T> {
    fn tag(job: wit::Job) -> Result<Vec<TagEntry>, String> {
        let tags = T::tag(&Job::from(job))?;
        Ok(tags.into_iter().map(|(key, value)| TagEntry { key, value: value.to_string() }).collect())
    }
}

/// Exports a type implementing [`tagger::Tagger`](crate::tagger::Tagger) as
/// this component's `sluice:plugin/tagger` interface.
///
/// ```ignore
/// sluice_sdk::export_tagger!(MyTagger);
/// ```
#[macro_export]
macro_rules! export_tagger {
    ($ty:ty) => {
        const _: () = {
            type __SluiceTaggerExport = $crate::tagger::Export<$ty>;
            $crate::tagger::bindings::export_tagger_bindings!(
                __SluiceTaggerExport with_types_in $crate::tagger::bindings
            );
        };
    };
}
