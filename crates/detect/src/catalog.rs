//! The XID catalog as data: what each NVIDIA XID code means, how bad it is, what most
//! likely caused it, and the first action to take.
//!
//! The catalog lives in `catalog/xid.toml` (embedded at build time) so that people can
//! read and review it, and it is usable on its own: the health engine uses it for XID
//! events from dcgm-exporter, and a kernel-log reader can use it for `NVRM: Xid` lines.
//!
//! Repeats and node-wide patterns change the action; that logic is in [`crate::xid`],
//! not here: an entry says what one occurrence on one GPU calls for.

use crate::error::DetectError;
use gpuwarden_model::{Action, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The built-in catalog file.
const BUILTIN: &str = include_str!("../catalog/xid.toml");

/// What most likely caused an XID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The application running on the GPU (illegal address, bad command stream).
    Application,
    /// The driver or the GPU's firmware.
    Driver,
    /// The board: memory, links, power, the GPU itself.
    Hardware,
    /// Not known (reserved codes, codes NVIDIA does not document).
    Unknown,
}

impl Cause {
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Application => "application",
            Cause::Driver => "driver",
            Cause::Hardware => "hardware",
            Cause::Unknown => "unknown",
        }
    }
}

/// One XID code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XidEntry {
    pub code: u32,
    /// Short name, as NVIDIA names the code.
    pub name: String,
    /// What it means, in a sentence or two.
    pub description: String,
    pub severity: Severity,
    pub cause: Cause,
    /// First action to take for one occurrence on one GPU.
    pub action: Action,
    /// What to do beyond the action (e.g. when it recurs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    xid: Vec<XidEntry>,
}

/// XID code → entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XidCatalog {
    entries: BTreeMap<u32, XidEntry>,
    #[serde(skip)]
    unknown_template: XidEntry,
}

impl XidCatalog {
    /// The catalog shipped with gpuwarden.
    pub fn builtin() -> Self {
        // The built-in file is checked by a test, so this cannot fail in a released
        // build; if it ever did, an empty catalog still works (every code gets the
        // unknown-code default) where a panic would take the daemon down.
        Self::from_toml(BUILTIN).unwrap_or_else(|e| {
            tracing::error!(error = %e, "built-in XID catalog is invalid; using an empty catalog");
            XidCatalog {
                entries: BTreeMap::new(),
                unknown_template: unknown_entry(0),
            }
        })
    }

    /// Parses a catalog in the format of `catalog/xid.toml`.
    pub fn from_toml(text: &str) -> Result<Self, DetectError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| DetectError::Catalog(e.to_string()))?;
        Self::from_entries(file.xid)
    }

    /// Builds a catalog from entries; a code listed twice is an error.
    pub fn from_entries(entries: Vec<XidEntry>) -> Result<Self, DetectError> {
        let mut map = BTreeMap::new();
        for e in entries {
            let code = e.code;
            if map.insert(code, e).is_some() {
                return Err(DetectError::DuplicateXid(code));
            }
        }
        Ok(XidCatalog {
            entries: map,
            unknown_template: unknown_entry(0),
        })
    }

    /// The entry for `code`, if the catalog knows it.
    pub fn lookup(&self, code: u32) -> Option<&XidEntry> {
        self.entries.get(&code)
    }

    /// The entry for `code`, or the default for codes the catalog does not know
    /// (see [`unknown_entry`]).
    pub fn lookup_or_default(&self, code: u32) -> std::borrow::Cow<'_, XidEntry> {
        match self.entries.get(&code) {
            Some(e) => std::borrow::Cow::Borrowed(e),
            None => {
                let mut e = self.unknown_template.clone();
                e.code = code;
                std::borrow::Cow::Owned(e)
            }
        }
    }

    /// Every entry, by code.
    pub fn entries(&self) -> impl Iterator<Item = &XidEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Default for XidCatalog {
    fn default() -> Self {
        Self::builtin()
    }
}

/// The entry used for a code the catalog does not list: a warning of unknown cause whose
/// action is a GPU reset.
///
/// Why a reset: an unlisted code is most likely new in a driver we have not catalogued,
/// and NVIDIA's generic advice for an unexplained XID is to clear the GPU's state and
/// see whether it returns. A reset is the least disruptive action that does that (a
/// reboot takes the whole node); if the code keeps coming back, the repeat escalation
/// still takes it to hardware inspection.
pub fn unknown_entry(code: u32) -> XidEntry {
    XidEntry {
        code,
        name: "Unknown XID".to_string(),
        description: "An XID code not in gpuwarden's catalog.".to_string(),
        severity: Severity::Warning,
        cause: Cause::Unknown,
        action: Action::ResetGpu,
        note: Some("Look the code up in NVIDIA's XID documentation for your driver version.".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses() {
        let c = XidCatalog::from_toml(BUILTIN).unwrap();
        assert!(c.len() > 150);
    }

    #[test]
    fn key_codes_have_the_documented_actions() {
        let c = XidCatalog::builtin();
        let a = |code| c.lookup(code).unwrap().action;
        for code in [13, 31, 43] {
            assert_eq!(a(code), Action::RestartApp, "xid {code}");
            assert_eq!(c.lookup(code).unwrap().cause, Cause::Application);
        }
        assert_eq!(a(45), Action::None);
        assert_eq!(a(48), Action::ResetGpu);
        assert_eq!(a(63), Action::ResetGpu);
        assert_eq!(a(64), Action::HardwareInspection);
        assert_eq!(a(74), Action::ResetGpu);
        assert_eq!(a(79), Action::Reboot);
        assert_eq!(c.lookup(79).unwrap().severity, Severity::Fatal);
        assert_eq!(a(94), Action::RestartApp);
        assert_eq!(a(95), Action::ResetGpu);
        assert_eq!(a(119), Action::Reboot);
        assert_eq!(a(120), Action::Reboot);
    }

    #[test]
    fn unknown_code_gets_the_documented_default() {
        let c = XidCatalog::builtin();
        assert!(c.lookup(9999).is_none());
        let e = c.lookup_or_default(9999);
        assert_eq!(e.code, 9999);
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.cause, Cause::Unknown);
        assert_eq!(e.action, Action::ResetGpu);
    }

    #[test]
    fn duplicate_code_is_an_error() {
        let text = "[[xid]]\ncode = 1\nname = \"a\"\ndescription = \"a\"\nseverity = \"info\"\ncause = \"unknown\"\naction = \"none\"\n";
        let twice = format!("{text}{text}");
        assert!(matches!(
            XidCatalog::from_toml(&twice),
            Err(DetectError::DuplicateXid(1))
        ));
    }

    #[test]
    fn malformed_catalog_is_an_error_not_a_panic() {
        assert!(XidCatalog::from_toml("[[xid]]\ncode = \"x\"").is_err());
        assert!(XidCatalog::from_toml("not toml at all [").is_err());
    }
}
