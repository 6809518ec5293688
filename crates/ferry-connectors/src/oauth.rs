//! Access tokens shared by every run of a connector in this process
//! (Google, Zoom): cached per credential until shortly before they expire,
//! forgotten when the provider refuses one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_core::ConnectorError;

/// Tokens are renewed this long before the provider says they expire.
const MARGIN: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached token for `credential` that is still good at `now`.
    pub fn get(&self, credential: &str, now: Instant) -> Option<String> {
        self.lock()
            .get(credential)
            .filter(|(_, until)| now + MARGIN < *until)
            .map(|(t, _)| t.clone())
    }

    pub fn put(&self, credential: &str, token: &str, expires_in: Duration, now: Instant) {
        self.lock().insert(
            credential.to_string(),
            (token.to_string(), now + expires_in),
        );
    }

    /// Forgets `token` (refused by the provider), unless another run has
    /// already replaced it.
    pub fn forget(&self, credential: &str, token: &str) {
        let mut map = self.lock();
        if map.get(credential).is_some_and(|(t, _)| t == token) {
            map.remove(credential);
        }
    }
}

/// Calls `call` with a token for `credential`: the cached one, or one
/// `fetch`ed (token, lifetime) and cached. A token the provider refuses
/// (`Auth`) is forgotten and replaced once.
pub async fn authorized<T, F, C, FF, CF>(
    cache: &TokenCache,
    credential: &str,
    fetch: F,
    call: C,
) -> Result<T, ConnectorError>
where
    F: Fn() -> FF,
    FF: std::future::Future<Output = Result<(String, Duration), ConnectorError>>,
    C: Fn(String) -> CF,
    CF: std::future::Future<Output = Result<T, ConnectorError>>,
{
    let mut token = match cache.get(credential, Instant::now()) {
        Some(t) => t,
        None => {
            let (t, ttl) = fetch().await?;
            cache.put(credential, &t, ttl, Instant::now());
            t
        }
    };
    match call(token.clone()).await {
        Err(ConnectorError::Auth(m)) => {
            tracing::info!(reason = %m, "the provider refused the cached token; renewing it");
            cache.forget(credential, &token);
            let (t, ttl) = fetch().await?;
            cache.put(credential, &t, ttl, Instant::now());
            token = t;
            call(token).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reused_until_shortly_before_expiry_and_forgotten_on_refusal() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        c.put("acct", "tok1", Duration::from_secs(3600), t0);
        assert_eq!(c.get("acct", t0).as_deref(), Some("tok1"));
        assert_eq!(
            c.get("acct", t0 + Duration::from_secs(3550)),
            None,
            "renewed a minute early"
        );
        c.forget("acct", "other");
        assert!(
            c.get("acct", t0).is_some(),
            "a stale refusal does not drop a newer token"
        );
        c.forget("acct", "tok1");
        assert_eq!(c.get("acct", t0), None);
    }
}
