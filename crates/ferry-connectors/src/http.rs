//! The transport under every connector's HTTP: reqwest, one pooled client
//! per node. Connectors never see it; they reach HTTP through
//! `RunContext::http` (`ferry_core::http`), which fences, limits, traces
//! and records every call before it gets here.

use std::sync::Arc;

use ferry_core::http::{HttpClient, Method, Request, Response, Transport, TransportError};

pub use ferry_core::http::{classify_status, percent_encode as path_segment, retry_after};

/// reqwest behind `ferry_core::http::Transport`. Redirects are not
/// followed (a provider that moves is an error to see, and a token must
/// not follow a redirect to another host).
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new() -> ReqwestTransport {
        let client = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ReqwestTransport { client }
    }
}

impl Default for ReqwestTransport {
    fn default() -> Self {
        Self::new()
    }
}

/// The transport a node runs its connectors' calls over.
pub fn transport() -> Arc<dyn Transport> {
    Arc::new(ReqwestTransport::new())
}

/// A client over reqwest, at most `per_host` requests in flight to one
/// host (a node builds its own from [`transport`] and its config).
pub fn client(per_host: usize) -> HttpClient {
    HttpClient::new(transport(), per_host)
}

/// reqwest's Display includes the URL, which may hold a token: only the
/// URL-free description is kept.
fn classify(err: reqwest::Error) -> TransportError {
    let (timeout, connect) = (err.is_timeout(), err.is_connect());
    let text = err.without_url().to_string();
    if timeout {
        TransportError::Timeout(text)
    } else if connect {
        TransportError::Connect(text)
    } else {
        TransportError::Other(text)
    }
}

#[async_trait::async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.client.request(method, &req.url).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body);
        }
        let resp = builder.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = resp.bytes().await.map_err(classify)?.to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::ConnectorError;

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_names_no_url() {
        // A port nothing listens on: bind one, then drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = client(4)
            .get(format!("http://127.0.0.1:{port}/x?token=secret"))
            .send()
            .await
            .unwrap_err();
        match err {
            ConnectorError::Transient(m) => {
                assert!(m.starts_with("connection failed"), "{m}");
                assert!(!m.contains("secret"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(
            retry_after(Some("2"), 0),
            Some(std::time::Duration::from_secs(2))
        );
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            retry_after(Some("Sat, 21 Nov 2026 10:00:30 GMT"), now),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(Some("2026-11-21T10:01:00Z"), now),
            Some(std::time::Duration::from_secs(60)),
            "Zoom's daily-limit Retry-After is a time"
        );
    }
}
