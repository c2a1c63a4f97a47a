//! Loading the shared membership secret (file or env var) and turning it into an AES key.
//!
//! Must not: log or print the secret or the key (errors name the source, never the content).

use std::path::Path;

use sha2::{Digest, Sha256};

/// Env var holding the shared secret (used when no secret file is given).
pub const SECRET_ENV: &str = "FERROLB_ML_SECRET";

/// Errors reading the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("membership secret file {path}: {reason}")]
    Read { path: String, reason: String },
    /// The secret is empty after trimming whitespace.
    #[error("membership secret from {source_name} is empty")]
    Empty { source_name: String },
}

/// Reads the secret from `file` if given, else from `FERROLB_ML_SECRET`; `Ok(None)` when neither
/// is set (membership then runs unencrypted, and the caller should say so in the logs).
pub fn load_secret(file: Option<&Path>) -> Result<Option<Vec<u8>>, SecretError> {
    match file {
        Some(path) => {
            let raw = std::fs::read(path).map_err(|e| SecretError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            checked(raw, &path.display().to_string()).map(Some)
        }
        None => match std::env::var_os(SECRET_ENV) {
            Some(v) => checked(v.into_encoded_bytes(), SECRET_ENV).map(Some),
            None => Ok(None),
        },
    }
}

fn checked(raw: Vec<u8>, source_name: &str) -> Result<Vec<u8>, SecretError> {
    let trimmed = raw.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(SecretError::Empty {
            source_name: source_name.to_string(),
        });
    }
    Ok(trimmed)
}

/// Derives the 256-bit AES-GCM key from a secret of any length (SHA-256 of the secret bytes).
pub fn derive_key(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_is_trimmed_and_empty_is_rejected() {
        let dir = std::env::temp_dir().join(format!("flb-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, b"  s3cret\n").unwrap();
        assert_eq!(load_secret(Some(&good)).unwrap(), Some(b"s3cret".to_vec()));
        let empty = dir.join("empty");
        std::fs::write(&empty, b" \n").unwrap();
        let err = load_secret(Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let missing = dir.join("missing");
        let err = load_secret(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_depends_on_every_byte() {
        assert_ne!(derive_key(b"a"), derive_key(b"b"));
        assert_eq!(derive_key(b"same"), derive_key(b"same"));
    }
}
