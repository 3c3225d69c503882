//! Host bindings of the plugin contract (`wit/plugin.wit`), one module per world.
//! The validator world generates the shared `types` and `host` interfaces; the
//! other worlds reuse them, so the host implements `host.log` once.

pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "validator-plugin",
        exports: { default: async },
    });
}

pub mod tagger {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tagger-plugin",
        exports: { default: async },
        with: {
            "sluice:plugin/types": super::validator::sluice::plugin::types,
            "sluice:plugin/host": super::validator::sluice::plugin::host,
        },
    });
}

pub mod migrator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "migrator-plugin",
        exports: { default: async },
        with: {
                        "sluice:plugin/host": super::validator::sluice::plugin::host,
        },
    });
}

pub mod alert_policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert-policy-plugin",
        exports: { default: async },
        with: {
                        "sluice:plugin/host": super::validator::sluice::plugin::host,
        },
    });
}

pub use validator::sluice::plugin::host;
pub use validator::sluice::plugin::types;
