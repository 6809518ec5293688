//! The Standard Webhooks signature scheme, used by the generic `webhook`
//! connector in both directions: `webhook-signature: v1,<base64
//! HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, several signatures
//! space-separated. Comparison is constant-time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was refused. Messages are safe to return to
/// the sender: they never include the secret or the expected signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the allowed window of {0} seconds")]
    StaleTimestamp(i64),
    #[error("no signature matches")]
    Mismatch,
}

/// The HMAC key for a secret: `whsec_` followed by base64 is decoded; any
/// other string is used as is.
pub fn key_from_secret(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD
            .decode(b64)
            .unwrap_or_else(|_| secret.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `webhook-signature` header value for a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Checks a message against its `webhook-signature` header, which may list
/// several `v1,<sig>` entries (key rotation); any match is enough.
pub fn verify(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let ts_text = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signature = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now_s - ts).abs() > tolerance_s {
        return Err(SignatureError::StaleTimestamp(tolerance_s));
    }
    for candidate in signature.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(bytes) = STANDARD.decode(b64) else {
            continue;
        };
        if mac(key, id, ts_text.trim(), body)
            .verify_slice(&bytes)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector from shared fixtures (standard_webhooks in signatures.json).
    const SECRET: &str = "whsec_ZmVycnktc3RhbmRhcmQtd2ViaG9va3Mta2V5LTMyYiE=";
    const BODY: &[u8] = br#"{"type":"contact.created","data":{"email":"ada@example.com"}}"#;
    const SIG: &str = "v1,knOykZ4RZAzi9rj66YdorESgxY7ytGNxjh56C2B17TE=";

    #[test]
    fn fixture_vector_signs_and_verifies() {
        let key = key_from_secret(SECRET);
        assert_eq!(sign(&key, "msg_2p0X4Q0K7c7xXk1", 1763630102, BODY), SIG);
        let ok = verify(
            &key,
            Some("msg_2p0X4Q0K7c7xXk1"),
            Some("1763630102"),
            Some(SIG),
            BODY,
            1763630102,
            300,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn any_change_is_refused() {
        let key = key_from_secret(SECRET);
        let v = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
            verify(&key, Some(id), Some(ts), Some(sig), body, now, 300)
        };
        assert_eq!(
            v("msg_2p0X4Q0K7c7xXk1", "1763630102", SIG, b"{}", 1763630102),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v("msg_other", "1763630102", SIG, BODY, 1763630102),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v("msg_2p0X4Q0K7c7xXk1", "1763630103", SIG, BODY, 1763630102),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(
                "msg_2p0X4Q0K7c7xXk1",
                "1763630102",
                SIG,
                BODY,
                1763630102 + 301
            ),
            Err(SignatureError::StaleTimestamp(300))
        );
        let other_key = key_from_secret("whsec_b3RoZXI=");
        assert_eq!(
            verify(
                &other_key,
                Some("msg_2p0X4Q0K7c7xXk1"),
                Some("1763630102"),
                Some(SIG),
                BODY,
                1763630102,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        // A list with one good entry passes.
        let list = format!("v1,AAAA {SIG}");
        assert_eq!(
            v("msg_2p0X4Q0K7c7xXk1", "1763630102", &list, BODY, 1763630102),
            Ok(())
        );
        assert_eq!(
            verify(&key, None, Some("1"), Some(SIG), BODY, 1, 300),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
    }
}
