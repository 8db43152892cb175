//! The configuration file of `gpuwarden run`: TOML into `FileConfig` (unknown keys
//! refused), then `config::build`, which validates every section into a `RunConfig`:
//! durations, admission limits, `[health]` rule overrides, `[security]` (rules, hours,
//! patterns, driver floor), `[notify]` (sinks, routes), `[incidents]`, `[predict]`.
//!
//! `crates/gpuwarden` is a binary crate without a library, so its `config.rs` is
//! compiled into this target as a module (it only uses public APIs of the other crates).

#![no_main]

#[allow(dead_code)]
#[path = "../../crates/gpuwarden/src/config.rs"]
mod config;

use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<config::FileConfig>(text) else {
        return;
    };
    let Ok(run) = config::build(file, None, None, None) else {
        return;
    };
    // What build promises.
    assert!(run.listen.ip().is_loopback(), "{}", run.listen);
    assert!(run.scrape_interval >= Duration::from_millis(100));
    let l = run.ingest_limits;
    assert!(l.max_gpus_per_target >= 1 && l.max_new_gpus_per_page >= 1 && l.max_series_per_gpu >= 1);
    // The validated sections build what `run` builds from them.
    gpuwarden_security::SecurityEngine::from_config(&run.security).expect("a validated [security] builds");
    run.notify.settings().expect("a validated [notify] builds");
});
