//! `<data_dir>/auth/tokens.json`: reading it strictly and changing it safely.
//!
//! The CLI (`gpuwarden auth token …`) and a running server both change the file (the
//! server: tokens created through the API, and last-use times). Every change takes an
//! exclusive lock on `tokens.lock` beside it, reads the current file, applies the change
//! and writes a temporary file that is fsynced and renamed over the old one (then the
//! directory is fsynced): readers see the old or the new file, never half of one, and
//! two writers cannot lose each other's change.
//!
//! A file that does not parse is an error, never "no tokens": with authentication on,
//! an unreadable token file must not open the door.

use super::token::{self, NewToken, Secret, TokenRecord};
use super::AuthError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub version: u32,
    pub tokens: Vec<TokenRecord>,
}

pub const VERSION: u32 = 1;

/// The directory holding the token file, `<data_dir>/auth`.
pub fn auth_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("auth")
}

/// The token file in `dir` (an [`auth_dir`]).
pub fn tokens_path(dir: &Path) -> PathBuf {
    dir.join("tokens.json")
}

/// Reads the token file in `dir`. A missing file is an empty set (a fresh data
/// directory); anything unreadable or malformed is [`AuthError::Corrupt`].
pub fn load(dir: &Path) -> Result<TokenFile, AuthError> {
    let path = tokens_path(dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(TokenFile {
                version: VERSION,
                tokens: Vec::new(),
            })
        }
        Err(e) => return Err(AuthError::io(&path, e)),
    };
    parse(&text).map_err(|why| AuthError::Corrupt { path, why })
}

/// Parses and checks the file's bytes: the version, unique ids, well-formed hashes.
pub fn parse(bytes: &[u8]) -> Result<TokenFile, String> {
    let file: TokenFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "version {} is not one this gpuwarden reads ({VERSION})",
            file.version
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for t in &file.tokens {
        if !t.id.starts_with("tok-") {
            return Err(format!("token id {:?} does not start with tok-", t.id));
        }
        if !ids.insert(t.id.as_str()) {
            return Err(format!("token id {} appears twice", t.id));
        }
        if token::unhex32(&t.sha256).is_none() {
            return Err(format!("token {}: sha256 is not 64 hex digits", t.id));
        }
    }
    Ok(file)
}

/// Applies `change` to the token file in `dir` under the lock, and writes the result
/// atomically (only when `change` succeeds).
pub fn update<T>(dir: &Path, change: impl FnOnce(&mut TokenFile) -> Result<T, AuthError>) -> Result<T, AuthError> {
    create_dir_private(dir)?;
    let lock_path = dir.join("tokens.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| AuthError::io(&lock_path, e))?;
    lock.lock().map_err(|e| AuthError::io(&lock_path, e))?;
    let mut file = load(dir)?;
    let out = change(&mut file)?;
    write_atomic(dir, &file)?;
    // The lock is released when `lock` is dropped.
    drop(lock);
    Ok(out)
}

fn create_dir_private(dir: &Path) -> Result<(), AuthError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| AuthError::io(dir, e))
}

fn write_atomic(dir: &Path, file: &TokenFile) -> Result<(), AuthError> {
    let path = tokens_path(dir);
    let tmp = dir.join("tokens.json.tmp");
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(|e| AuthError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| AuthError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| AuthError::io(&path, e))?;
    // The rename itself must survive a crash.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates a token in `dir`: returns the secret (to be shown once) and its record.
pub fn create(dir: &Path, spec: &NewToken, now_ms: i64) -> Result<(Secret, TokenRecord), AuthError> {
    spec.validate()?;
    let (secret, hash) = token::generate()?;
    let id = token::new_id()?;
    let record = TokenRecord {
        id,
        name: spec.name.clone(),
        role: spec.role,
        tenant: spec.tenant.clone(),
        created_ms: now_ms,
        expires_ms: spec
            .expires_in
            .map(|d| now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        last_used_ms: None,
        revoked: false,
        revoked_ms: None,
        sha256: token::hex(&hash),
    };
    let r = record.clone();
    update(dir, move |f| {
        f.tokens.push(r);
        Ok(())
    })?;
    Ok((secret, record))
}

/// Revokes token `id` in `dir` (revoking twice is fine); returns its record.
pub fn revoke(dir: &Path, id: &str, now_ms: i64) -> Result<TokenRecord, AuthError> {
    update(dir, |f| {
        let t = f
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| AuthError::NotFound(id.to_string()))?;
        if !t.revoked {
            t.revoked = true;
            t.revoked_ms = Some(now_ms);
        }
        Ok(t.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Role;

    fn spec(role: Role) -> NewToken {
        NewToken {
            name: "t".into(),
            role,
            tenant: None,
            expires_in: None,
        }
    }

    #[test]
    fn create_list_revoke_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = auth_dir(dir.path());
        assert!(load(&d).unwrap().tokens.is_empty(), "a missing file is an empty set");
        let (secret, rec) = create(&d, &spec(Role::Admin), 1000).unwrap();
        let text = std::fs::read_to_string(tokens_path(&d)).unwrap();
        assert!(!text.contains(&secret.expose()[4..]), "the secret is never stored");
        assert!(text.contains(&rec.sha256));
        let (_, rec2) = create(&d, &spec(Role::Viewer), 2000).unwrap();
        assert_eq!(load(&d).unwrap().tokens.len(), 2);
        let revoked = revoke(&d, &rec2.id, 3000).unwrap();
        assert!(revoked.revoked);
        assert_eq!(revoked.revoked_ms, Some(3000));
        let f = load(&d).unwrap();
        assert!(!f.tokens[0].revoked && f.tokens[1].revoked);
        assert!(matches!(revoke(&d, "tok-nope", 0), Err(AuthError::NotFound(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tokens_path(&d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "token file readable by others: {mode:o}");
        }
    }

    #[test]
    fn corrupt_files_are_errors_not_empty_sets() {
        let dir = tempfile::tempdir().unwrap();
        let d = auth_dir(dir.path());
        create(&d, &spec(Role::Admin), 0).unwrap();
        let good = std::fs::read_to_string(tokens_path(&d)).unwrap();
        let cases = [
            String::new(),
            good[..good.len() / 2].to_string(),
            "{\"version\": 1}".to_string(),
            good.replace("\"version\": 1", "\"version\": 7"),
            good.replace("\"sha256\": \"", "\"sha256\": \"zz"),
            good.replace("\"role\": \"admin\"", "\"role\": \"root\""),
        ];
        for bad in cases {
            std::fs::write(tokens_path(&d), &bad).unwrap();
            let err = load(&d).unwrap_err();
            assert!(matches!(err, AuthError::Corrupt { .. }), "{bad:?} → {err}");
            assert!(err.to_string().contains("tokens.json"), "{err}");
            // A change on a corrupt file is refused too (it would drop the tokens).
            assert!(create(&d, &spec(Role::Viewer), 0).is_err());
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = auth_dir(dir.path());
        let (_, rec) = create(&d, &spec(Role::Admin), 0).unwrap();
        let f = TokenFile {
            version: VERSION,
            tokens: vec![rec.clone(), rec],
        };
        let err = parse(&serde_json::to_vec(&f).unwrap()).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
