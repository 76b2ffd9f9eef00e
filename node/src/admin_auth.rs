//! The admin token: every `POST /admin/*` must present it as `Authorization: Bearer TOKEN`.
//!
//! The admin port changes the ring (a `leave` of the last member empties it, and that survives a
//! restart), and a browser on the operator's machine can send a plain POST to loopback from any
//! web page. A bearer token closes both: a page cannot read it, and a request carrying an
//! `Authorization` header is not one a browser sends cross-site without the server's consent
//! (CORS preflight), which this server never gives.
//!
//! The token comes from `[admin] token_file`; without one, the node creates
//! `<data_dir>/admin.token` (random, mode 0600) on first start and keeps it, so `ringkv admin
//! --token-file <data_dir>/admin.token` works on a fresh node.

use crate::config::{admin_token_of, Settings};
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file name of a generated token inside the data directory.
pub const GENERATED_TOKEN_FILE: &str = "admin.token";

/// Where the token is: the configured file, or the data directory's generated one.
pub fn token_path(settings: &Settings) -> PathBuf {
    settings
        .admin_token_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join(GENERATED_TOKEN_FILE))
}

/// Reads the node's admin token, creating the generated one if it does not exist yet.
pub fn load_or_create(settings: &Settings) -> Result<String, String> {
    let path = token_path(settings);
    if settings.admin_token_file.is_none() && !path.exists() {
        create(&path)?;
    }
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read the admin token {}: {e}", path.display()))?;
    admin_token_of(bytes.trim_ascii())
        .map_err(|why| format!("the admin token {}: {why}", path.display()))
}

/// Writes a fresh random token to `path` (owner-only), atomically.
fn create(path: &Path) -> Result<(), String> {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = path.with_extension("token.tmp");
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    written.map_err(|e| format!("cannot create the admin token {}: {e}", path.display()))
}

/// Whether `header_value` (an `Authorization` header's value) carries `token`. The comparison
/// takes the same time wherever the first difference is.
pub fn authorizes(header_value: Option<&str>, token: &str) -> bool {
    let Some(presented) = header_value.and_then(|v| v.trim().strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(authorizes(Some(&format!("Bearer {token}")), token));
        assert!(!authorizes(None, token));
        assert!(!authorizes(Some(token), token), "the scheme is required");
        assert!(!authorizes(Some("Bearer 0123456789abcdef"), token));
        assert!(!authorizes(
            Some("Bearer 0123456789abcdef0123456789abcdeF"),
            token
        ));
    }

    #[test]
    fn a_generated_token_is_owner_only_and_kept_across_starts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(GENERATED_TOKEN_FILE);
        create(&path).expect("create");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            admin_token_of(token.trim().as_bytes()),
            Ok(token.trim().to_string())
        );
    }
}
