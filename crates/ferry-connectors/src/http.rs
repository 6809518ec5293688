//! What every HTTP-speaking connector shares: turning a provider's response
//! status and a transport error into a `ConnectorError` class. Backoff is
//! not decided here (see `ferry_core::retry`).

use std::time::Duration;

use ferry_core::ConnectorError;

/// `Retry-After` as seconds or an HTTP date, relative to `now_ms`.
pub fn retry_after(value: Option<&str>, now_ms: i64) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_millis((secs * 1000.0) as u64));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(v))
        .ok()?
        .timestamp_millis();
    Some(Duration::from_millis((at - now_ms).max(0) as u64))
}

/// Classifies a non-2xx answer: 429 rate-limited, 408/5xx transient, any
/// other 4xx permanent.
pub fn classify_status(
    status: u16,
    retry_after_header: Option<&str>,
    body: &str,
    now_ms: i64,
) -> ConnectorError {
    let snippet: String = body.chars().take(200).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    match status {
        429 => ConnectorError::RateLimited {
            retry_after: retry_after(retry_after_header, now_ms),
            message,
        },
        408 | 500..=599 => ConnectorError::Transient(message),
        401 | 403 => ConnectorError::Auth(message),
        _ => ConnectorError::Permanent(message),
    }
}

/// Transport failures (refused, reset, timed out) are worth retrying.
pub fn classify_transport(err: reqwest::Error) -> ConnectorError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL, which may hold a token: keep the
    // host-free description only.
    ConnectorError::Transient(format!("{kind}: {}", err.without_url()))
}

/// `s` percent-encoded for use as one URL path segment (everything but
/// RFC 3986's unreserved characters is encoded).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a provider answered: status, `Retry-After`, body text.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub text: String,
}

/// Sends `req` and reads the whole answer, whatever its status; only a
/// transport failure is an error. Nothing is sent once this node may no
/// longer act on its runs (`ferry_core::liveness`).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer, ConnectorError> {
    ferry_core::liveness::check()?;
    let resp = req.send().await.map_err(classify_transport)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.map_err(classify_transport)?;
    Ok(Answer {
        status,
        retry_after,
        text,
    })
}

/// Sends `req` and reads its JSON answer. A non-2xx answer is classified
/// (`classify_status`); a refused credential says which, as "`service`
/// refused `credential`: …".
pub async fn send_json(
    req: reqwest::RequestBuilder,
    service: &str,
    credential: &str,
    now_ms: i64,
) -> Result<serde_json::Value, ConnectorError> {
    let Answer {
        status,
        retry_after,
        text,
    } = send(req).await?;
    if !(200..300).contains(&status) {
        return Err(
            match classify_status(status, retry_after.as_deref(), &text, now_ms) {
                ConnectorError::Auth(m) => {
                    ConnectorError::Auth(format!("{service} refused {credential}: {m}"))
                }
                e => e,
            },
        );
    }
    serde_json::from_str(&text).map_err(|e| {
        ConnectorError::Transient(format!("{service} answered {status} with non-JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify_status(429, Some("3"), "", 0),
            ConnectorError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
                message: "HTTP 429".into()
            }
        );
        assert!(
            matches!(classify_status(503, None, "down", 0), ConnectorError::Transient(m) if m == "HTTP 503: down")
        );
        assert!(matches!(
            classify_status(404, None, "", 0),
            ConnectorError::Permanent(_)
        ));
        assert!(matches!(
            classify_status(401, None, "", 0),
            ConnectorError::Auth(_)
        ));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after(Some("2"), 0), Some(Duration::from_secs(2)));
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            retry_after(Some("Sat, 21 Nov 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(Some("2026-11-21T10:01:00Z"), now),
            Some(Duration::from_secs(60)),
            "Zoom's daily-limit Retry-After is a time"
        );
        assert_eq!(retry_after(Some("soon"), 0), None);
    }
}
