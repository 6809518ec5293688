//! Google access tokens: a service account signs an RS256 JWT and trades
//! it at the token endpoint; an OAuth client trades its refresh token. A
//! refused grant (`invalid_grant`: a revoked or expired refresh token, a
//! bad key or clock) is permanent and says what to fix.

use std::time::Duration;

use base64::Engine;
use ferry_core::http::HttpClient;
use ferry_core::ConnectorError;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{json, Value};
use sha2::Sha256;

use super::config::{Auth, SheetsConfig, CLIENT_SECRET, REFRESH_TOKEN, SERVICE_ACCOUNT_JSON};
use crate::secret;

pub const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";

/// Who asks for tokens, and how.
pub enum Credential {
    ServiceAccount {
        email: String,
        key: Box<rsa::RsaPrivateKey>,
    },
    RefreshToken {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
}

impl Credential {
    pub fn from_config(
        config: &SheetsConfig,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<Credential, ConnectorError> {
        match config.auth {
            Auth::ServiceAccount => {
                let bad = |m: String| {
                    ConnectorError::InvalidConfig(format!("secrets.{SERVICE_ACCOUNT_JSON}: {m}"))
                };
                let v: Value = serde_json::from_str(secret(secrets, SERVICE_ACCOUNT_JSON)?)
                    .map_err(|e| bad(format!("is not a JSON key file: {e}")))?;
                let email = v["client_email"]
                    .as_str()
                    .ok_or_else(|| bad("has no client_email".into()))?;
                let pem = v["private_key"]
                    .as_str()
                    .ok_or_else(|| bad("has no private_key".into()))?;
                let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
                    .map_err(|e| bad(format!("private_key is not a PKCS#8 RSA key: {e}")))?;
                Ok(Credential::ServiceAccount {
                    email: email.to_string(),
                    key: Box::new(key),
                })
            }
            Auth::RefreshToken => Ok(Credential::RefreshToken {
                client_id: config.client_id.clone().ok_or_else(|| {
                    ConnectorError::InvalidConfig(
                        "config.client_id is required for refresh_token auth".into(),
                    )
                })?,
                client_secret: secret(secrets, CLIENT_SECRET)?.to_string(),
                refresh_token: secret(secrets, REFRESH_TOKEN)?.to_string(),
            }),
        }
    }

    /// Names the credential for the token cache and the write quota.
    pub fn id(&self) -> String {
        match self {
            Credential::ServiceAccount { email, .. } => email.clone(),
            Credential::RefreshToken { client_id, .. } => client_id.clone(),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signed assertion a service account trades for a token.
pub fn assertion(email: &str, key: &rsa::RsaPrivateKey, audience: &str, now_s: i64) -> String {
    let header = b64(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes());
    let claims = b64(
        json!({"iss": email, "scope": SCOPE, "aud": audience, "iat": now_s, "exp": now_s + 3600})
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature.to_bytes()))
}

/// A fresh access token and its lifetime.
pub async fn fetch(
    http: &HttpClient,
    token_url: &str,
    credential: &Credential,
    now_ms: i64,
) -> Result<(String, Duration), ConnectorError> {
    let form: Vec<(&str, String)> = match credential {
        Credential::ServiceAccount { email, key } => vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
            ),
            ("assertion", assertion(email, key, token_url, now_ms / 1000)),
        ],
        Credential::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } => vec![
            ("grant_type", "refresh_token".into()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.clone()),
            ("refresh_token", refresh_token.clone()),
        ],
    };
    let a = http.post(token_url).form(&form).send().await?;
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    if a.is_success() {
        let token = v["access_token"].as_str().ok_or_else(|| {
            ConnectorError::Transient(
                "Google's token endpoint answered without access_token".into(),
            )
        })?;
        return Ok((
            token.to_string(),
            Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600)),
        ));
    }
    let error = v["error"].as_str().unwrap_or("");
    let description = v["error_description"].as_str().unwrap_or("");
    Err(match (a.status, error, credential) {
        (400, "invalid_grant", Credential::RefreshToken { .. }) => ConnectorError::Permanent(format!(
            "Google refused the refresh token (invalid_grant: {description}): it was revoked or has expired; authorize Ferry again and update secrets.refresh_token"
        )),
        (400, "invalid_grant", Credential::ServiceAccount { .. }) => ConnectorError::Permanent(format!(
            "Google refused the service-account assertion (invalid_grant: {description}); check secrets.service_account_json and this machine's clock"
        )),
        (400 | 401, "invalid_client" | "unauthorized_client" | "invalid_scope", _) => ConnectorError::Permanent(format!(
            "Google refused the credential ({error}: {description}); check the client id, the client secret and the account's access to the spreadsheets scope"
        )),
        (s, _, _) => crate::http::classify_status(s, a.header("retry-after"), &a.text(), now_ms),
    })
}
