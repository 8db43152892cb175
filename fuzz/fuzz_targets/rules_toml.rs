//! Rule files: the health rules (`HealthRules::from_toml`, the format of
//! `crates/detect/rules/health.toml`, and `HealthRules::with_overrides`, the config's
//! `[health]` table), the XID catalog (`XidCatalog::from_toml`, `catalog/xid.toml`), and
//! the security rule pack (`Catalog::from_files`, `crates/security/rules/*.toml`, then
//! `with_overrides`, the config's `[security.rules]`).
//!
//! The first byte picks the parser; the rest is the file.

#![no_main]

use gpuwarden_detect::{HealthRules, XidCatalog};
use gpuwarden_security::catalog::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(rules) = HealthRules::from_toml(text) {
                let _ = rules.metas();
            }
        }
        1 => {
            let Ok(table) = toml::from_str::<toml::Table>(text) else {
                return;
            };
            if let Ok(rules) = HealthRules::with_overrides(table) {
                let _ = rules.metas();
            }
        }
        2 => {
            if let Ok(catalog) = XidCatalog::from_toml(text) {
                for code in [0, 13, 31, 43, 48, 63, 64, 74, 79, 94, 95, 119, 154, u32::MAX] {
                    let _ = catalog.lookup_or_default(code);
                }
            }
        }
        3 => {
            // One user rule file on its own.
            if let Ok(c) = Catalog::from_files(&[("fuzz.toml", text)]) {
                assert_eq!(c.rules().len(), 1);
            }
        }
        _ => {
            let Ok(table) = toml::from_str::<toml::Table>(text) else {
                return;
            };
            if let Ok(c) = Catalog::builtin().with_overrides(&table) {
                for r in c.rules() {
                    assert!(r.params.values().all(|v| v.is_finite()));
                }
            }
        }
    }
});
