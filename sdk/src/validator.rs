//! Validators judge the actions of people and workers (world
//! `validator-plugin`, export `sluice:plugin/validator@0.1.0`).

use core::marker::PhantomData;

use crate::{Action, Job, Rejection, State};

/// Generated WIT bindings of the `validator-plugin` world (SDK internals).
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "validator-plugin",
        pub_export_macro: true,
        export_macro_name: "export_validator_bindings",
        default_bindings_module: "::sluice_sdk::validator::bindings",
    });
}

use bindings::exports::sluice::plugin::validator::Guest;
use bindings::sluice::plugin::types as wit;

/// A validator plugin. Export the implementing type with
/// [`export_validator!`](crate::export_validator).
///
/// The host calls [`validate`](Validator::validate) after its state table has
/// allowed the action.
pub trait Validator {
    /// `Ok(())` lets `action` (moving the job `from` -> `to`) happen; `Err`
    /// vetoes it, and the API answers `409 PLUGIN_REJECTED` with the
    /// rejection's code and reason.
    fn validate(job: &Job, action: Action, from: State, to: State) -> Result<(), Rejection>;
}

/// Adapts a [`Validator`] to the generated bindings (used by
/// [`export_validator!`](crate::export_validator)).
#[doc(hidden)]
pub struct Export<T>(PhantomData<T>);

impl<T: Validator> Guest for Export<T> {
    fn validate(job: wit::Job, action: wit::Action, from: wit::State, to: wit::State) -> Result<(), wit::Rejection> {
        T::validate(&Job::from(job), action.into(), from.into(), to.into()).map_err(Into::into)
    }
}

/// Exports a type implementing [`validator::Validator`](crate::validator::Validator)
/// as this component's `sluice:plugin/validator` interface.
///
/// Use it once, at the top level of a `cdylib` crate:
///
/// ```ignore
/// sluice_sdk::export_validator!(MyValidator);
/// ```
#[macro_export]
macro_rules! export_validator {
    ($ty:ty) => {
        const _: () = {
            type __SluiceValidatorExport = $crate::validator::Export<$ty>;
            $crate::validator::bindings::export_validator_bindings!(
                __SluiceValidatorExport with_types_in $crate::validator::bindings
            );
        };
    };
}
