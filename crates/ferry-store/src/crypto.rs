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

/// The keys a node can open secrets with: the first seals when the store
/// names no other (a fresh store), every one is tried when opening. During
/// a key rotation a node holds the old and the new key (`FERRY_SECRET_KEY`
/// and `FERRY_SECRET_KEYS_EXTRA`), and seals with whichever the store names
/// as its sealing key (`crate::keys`).
#[derive(Clone)]
pub struct SecretKey {
    keys: std::sync::Arc<Vec<Key<Aes256Gcm>>>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.fingerprints().join(","))
    }
}

/// A key read from the environment or the data dir, or made for a data dir
/// that had none (written there only once the store has accepted it).
pub struct LoadedKey {
    pub key: SecretKey,
    /// Made just now: no `FERRY_SECRET_KEY` and no key file.
    pub generated: bool,
}

fn decode_key(text: &str, what: &str) -> Result<Key<Aes256Gcm>> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| Error::Crypto(format!("{what} is not valid base64")))?;
    if bytes.len() != 32 {
        return Err(Error::Crypto(format!(
            "{what} must decode to 32 bytes, got {}",
            bytes.len()
        )));
    }
    Ok(*Key::<Aes256Gcm>::from_slice(&bytes))
}

/// A key's public name: the first 8 bytes of HMAC-SHA256(key, a fixed
/// label), in hex. It identifies the key without revealing it.
fn fingerprint_of(key: &Key<Aes256Gcm>) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_slice())
        .expect("HMAC takes a key of any length");
    mac.update(b"ferry secret key fingerprint v1");
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SecretKey {
    /// From `FERRY_SECRET_KEY`: base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<SecretKey> {
        Ok(SecretKey {
            keys: std::sync::Arc::new(vec![decode_key(text, "FERRY_SECRET_KEY")?]),
        })
    }

    pub fn generate() -> SecretKey {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SecretKey {
            keys: std::sync::Arc::new(vec![*Key::<Aes256Gcm>::from_slice(&bytes)]),
        }
    }

    /// This ring with `others` (base64 keys) added after its own keys.
    pub fn with_extra(self, others: &[String]) -> Result<SecretKey> {
        let mut keys = (*self.keys).clone();
        for (i, text) in others.iter().enumerate() {
            let k = decode_key(text, &format!("FERRY_SECRET_KEYS_EXTRA entry {}", i + 1))?;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        Ok(SecretKey {
            keys: std::sync::Arc::new(keys),
        })
    }

    /// The fingerprint of the first key (the one a fresh store is sealed with).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.keys[0])
    }

    /// Every key's fingerprint, the first key's first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(fingerprint_of).collect()
    }

    pub fn holds(&self, fingerprint: &str) -> bool {
        self.keys.iter().any(|k| fingerprint_of(k) == fingerprint)
    }

    /// The base64 text of the first key (to write a key file).
    fn primary_text(&self) -> String {
        STANDARD.encode(self.keys[0])
    }

    /// The key from `env` if given, else from `dir/secret.key`, which is
    /// created (mode 0600) on first use.
    pub fn load_or_create(env: Option<&str>, dir: &Path) -> Result<SecretKey> {
        let loaded = SecretKey::load(env, dir)?;
        if loaded.generated {
            loaded.key.save_generated(dir)?;
        }
        Ok(loaded.key)
    }

    /// The key from `env` if given, else from `dir/secret.key`; with
    /// neither, a new key that is not yet written anywhere (see
    /// `save_generated`), so a node that is refused does not leave a key
    /// file behind.
    pub fn load(env: Option<&str>, dir: &Path) -> Result<LoadedKey> {
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            return Ok(LoadedKey {
                key: SecretKey::from_base64(text)?,
                generated: false,
            });
        }
        let path = dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(LoadedKey {
                key: SecretKey::from_base64(&text)
                    .map_err(|e| Error::Crypto(format!("{}: {e}", path.display())))?,
                generated: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoadedKey {
                key: SecretKey::generate(),
                generated: true,
            }),
            Err(e) => Err(Error::Crypto(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes a generated key to `dir/secret.key` (mode 0600).
    pub fn save_generated(&self, dir: &Path) -> Result<()> {
        let path = dir.join("secret.key");
        write_private(&path, self.primary_text().as_bytes())
            .map_err(|e| Error::Crypto(format!("cannot write {}: {e}", path.display())))
    }

    /// Seals with the first key.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> Result<String> {
        seal(&self.keys[0], plaintext, aad)
    }

    /// Seals with the key named by `fingerprint` (the store's sealing key),
    /// or the first key when the store names none.
    pub fn encrypt_with(
        &self,
        fingerprint: Option<&str>,
        plaintext: &[u8],
        aad: &str,
    ) -> Result<String> {
        let Some(fp) = fingerprint else {
            return self.encrypt(plaintext, aad);
        };
        match self.keys.iter().find(|k| fingerprint_of(k) == fp) {
            Some(k) => seal(k, plaintext, aad),
            None => Err(Error::Crypto(format!(
                "the store seals secrets with key {fp}, which this node does not hold \
                 (it holds {}); set FERRY_SECRET_KEY or FERRY_SECRET_KEYS_EXTRA",
                self.fingerprints().join(", ")
            ))),
        }
    }

    /// The fingerprint of the key of this ring that opens `sealed`, if any.
    pub fn opener_of(&self, sealed: &str, aad: &str) -> Option<String> {
        self.keys.iter().find_map(|k| {
            let one = SecretKey {
                keys: std::sync::Arc::new(vec![*k]),
            };
            one.decrypt(sealed, aad).ok().map(|_| fingerprint_of(k))
        })
    }

    /// Opens a value sealed with any key of the ring.
    pub fn decrypt(&self, sealed: &str, aad: &str) -> Result<Vec<u8>> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| Error::Crypto("sealed value is not base64".into()))?;
        if bytes.len() < 12 + 16 {
            return Err(Error::Crypto("sealed value is too short".into()));
        }
        let (nonce, ct) = bytes.split_at(12);
        for k in self.keys.iter() {
            let opened = Aes256Gcm::new(k).decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            );
            if let Ok(plain) = opened {
                return Ok(plain);
            }
        }
        Err(Error::Crypto(format!(
            "cannot decrypt with key {}: wrong FERRY_SECRET_KEY or tampered value",
            self.fingerprints().join(" or ")
        )))
    }
}

fn seal(key: &Key<Aes256Gcm>, plaintext: &[u8], aad: &str) -> Result<String> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = Aes256Gcm::new(key)
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

    #[test]
    fn a_ring_opens_with_any_key_and_seals_with_the_named_one() {
        let old = SecretKey::generate();
        let new = SecretKey::generate();
        let ring = old.clone().with_extra(&[new.primary_text()]).unwrap();
        assert_eq!(
            ring.fingerprints(),
            vec![old.fingerprint(), new.fingerprint()]
        );
        assert_ne!(old.fingerprint(), new.fingerprint());
        let by_old = old.encrypt(b"a", "i").unwrap();
        let by_new = ring
            .encrypt_with(Some(&new.fingerprint()), b"b", "i")
            .unwrap();
        assert_eq!(ring.decrypt(&by_old, "i").unwrap(), b"a");
        assert_eq!(ring.decrypt(&by_new, "i").unwrap(), b"b");
        assert_eq!(
            new.decrypt(&by_new, "i").unwrap(),
            b"b",
            "sealed with the new key"
        );
        assert!(old.decrypt(&by_new, "i").is_err());
        let err = old
            .encrypt_with(Some(&new.fingerprint()), b"c", "i")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&new.fingerprint()), "{err}");
    }

    #[test]
    fn a_generated_key_is_written_only_when_saved() {
        let dir = std::env::temp_dir().join(format!("ferry-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let loaded = SecretKey::load(None, &dir).unwrap();
        assert!(loaded.generated);
        assert!(!dir.join("secret.key").exists());
        loaded.key.save_generated(&dir).unwrap();
        let again = SecretKey::load(None, &dir).unwrap();
        assert!(!again.generated);
        assert_eq!(again.key.fingerprint(), loaded.key.fingerprint());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
