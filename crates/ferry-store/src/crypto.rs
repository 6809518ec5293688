//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value and
//! the integration id as associated data, so a ciphertext copied onto
//! another integration does not decrypt. Plaintext never leaves this module
//! except to a connector's `RunContext` or a webhook verifier.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct SecretKey(Key<Aes256Gcm>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// From `FERRY_SECRET_KEY`: base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<SecretKey> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| Error::Crypto("FERRY_SECRET_KEY is not valid base64".into()))?;
        if bytes.len() != 32 {
            return Err(Error::Crypto(format!(
                "FERRY_SECRET_KEY must decode to 32 bytes, got {}",
                bytes.len()
            )));
        }
        Ok(SecretKey(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    pub fn generate() -> SecretKey {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SecretKey(*Key::<Aes256Gcm>::from_slice(&bytes))
    }

    /// The key from `env` if given, else from `dir/secret.key`, which is
    /// created (mode 0600) on first use.
    pub fn load_or_create(env: Option<&str>, dir: &Path) -> Result<SecretKey> {
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            return SecretKey::from_base64(text);
        }
        let path = dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => SecretKey::from_base64(&text)
                .map_err(|e| Error::Crypto(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate();
                write_private(&path, STANDARD.encode(key.0).as_bytes())
                    .map_err(|e| Error::Crypto(format!("cannot write {}: {e}", path.display())))?;
                Ok(key)
            }
            Err(e) => Err(Error::Crypto(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> Result<String> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = Aes256Gcm::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(STANDARD.encode(out))
    }

    pub fn decrypt(&self, sealed: &str, aad: &str) -> Result<Vec<u8>> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| Error::Crypto("sealed value is not base64".into()))?;
        if bytes.len() < 12 + 16 {
            return Err(Error::Crypto("sealed value is too short".into()));
        }
        let (nonce, ct) = bytes.split_at(12);
        Aes256Gcm::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Crypto("cannot decrypt: wrong FERRY_SECRET_KEY or tampered value".into())
            })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_aad() {
        let k = SecretKey::generate();
        let sealed = k.encrypt(b"hunter2", "integration-a").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(k.decrypt(&sealed, "integration-a").unwrap(), b"hunter2");
        assert!(
            k.decrypt(&sealed, "integration-b").is_err(),
            "bound to its integration"
        );
        assert!(
            SecretKey::generate()
                .decrypt(&sealed, "integration-a")
                .is_err(),
            "other key fails"
        );
    }

    #[test]
    fn key_file_is_created_once_and_env_key_is_checked() {
        let dir = std::env::temp_dir().join(format!("ferry-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = SecretKey::load_or_create(None, &dir).unwrap();
        let b = SecretKey::load_or_create(None, &dir).unwrap();
        let sealed = a.encrypt(b"x", "i").unwrap();
        assert_eq!(b.decrypt(&sealed, "i").unwrap(), b"x");
        assert!(SecretKey::from_base64("c2hvcnQ=")
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
