//! Access tokens the fakes' OAuth endpoints issue (Google, Zoom), and the
//! bearer check their APIs make with them.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub provider: String,
    /// Who the token speaks for (a project, an account).
    pub subject: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Tokens {
    /// Live tokens by value.
    #[serde(skip)]
    live: BTreeMap<String, Issued>,
    /// How many each provider issued.
    pub issued: BTreeMap<String, u64>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Tokens {
    /// Issues a token valid for `ttl_s` seconds.
    pub fn issue(&mut self, provider: &str, subject: &str, prefix: &str, ttl_s: i64) -> String {
        let token = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        self.live.insert(
            token.clone(),
            Issued {
                provider: provider.into(),
                subject: subject.into(),
                expires_at_ms: now_ms() + ttl_s * 1000,
            },
        );
        *self.issued.entry(provider.into()).or_default() += 1;
        token
    }

    /// The subject of a live `provider` token, if `token` is one.
    pub fn check(&self, provider: &str, token: &str) -> Option<String> {
        self.live
            .get(token)
            .filter(|i| i.provider == provider && i.expires_at_ms > now_ms())
            .map(|i| i.subject.clone())
    }

    /// Expires every token `provider` issued (the `expire_tokens` knob).
    pub fn expire(&mut self, provider: &str) {
        self.live.retain(|_, i| i.provider != provider);
    }

    pub fn revoke(&mut self, token: &str) -> bool {
        self.live.remove(token).is_some()
    }
}

/// The token of an `Authorization: Bearer …` header (any case of
/// "Bearer", as providers accept).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A form body as name → value (the last of a repeated name wins).
pub fn form(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}
