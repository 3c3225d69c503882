//! Migrators move a payload between schema versions during canary rollouts
//! (world `migrator-plugin`, export `sluice:plugin/migrator@0.1.0`).

use core::marker::PhantomData;

use serde_json::Value;

/// Generated WIT bindings of the `migrator-plugin` world (SDK internals).
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "migrator-plugin",
        pub_export_macro: true,
        export_macro_name: "export_migrator_bindings",
        default_bindings_module: "::sluice_sdk::migrator::bindings",
        with: {
            "sluice:plugin/host@0.1.0": crate::validator::bindings::sluice::plugin::host,
        },
    });
}

use bindings::exports::sluice::plugin::migrator::Guest;

/// A migrator plugin. Export the implementing type with
/// [`export_migrator!`](crate::export_migrator).
///
/// The SDK parses the payload's JSON text before calling the trait and
/// writes the result back as JSON text; a payload that is not JSON is
/// refused with an error before the trait is called.
pub trait Migrator {
    /// The payload one version up: schema version `from` -> `from + 1`.
    fn up(payload: Value, from: u32) -> Result<Value, String>;

    /// The payload one version down: schema version `from` -> `from - 1`.
    fn down(payload: Value, from: u32) -> Result<Value, String>;
}

/// Adapts a [`Migrator`] to the generated bindings (used by
/// [`export_migrator!`](crate::export_migrator)).
#[doc(hidden)]
pub struct Export<T>(PhantomData<T>);

fn parse(payload: &str) -> Result<Value, String> {
    serde_json::from_str(payload).map_err(|e| format!("payload is not valid JSON: {e}"))
}

impl<T: Migrator> Guest for Export<T> {
    fn up(payload: String, from: u32) -> Result<String, String> {
        T::up(parse(&payload)?, from).map(|value| value.to_string())
    }

    fn down(payload: String, from: u32) -> Result<String, String> {
        T::down(parse(&payload)?, from).map(|value| value.to_string())
    }
}

/// Exports a type implementing [`migrator::Migrator`](crate::migrator::Migrator)
/// as this component's `sluice:plugin/migrator` interface.
///
/// ```ignore
/// sluice_sdk::export_migrator!(MyMigrator);
/// ```
#[macro_export]
macro_rules! export_migrator {
    ($ty:ty) => {
        const _: () = {
            type __SluiceMigratorExport = $crate::migrator::Export<$ty>;
            $crate::migrator::bindings::export_migrator_bindings!(
                __SluiceMigratorExport with_types_in $crate::migrator::bindings
            );
        };
    };
}
