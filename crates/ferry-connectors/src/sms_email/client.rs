//! The SMTP leg: one message to every recipient in one transaction, and
//! SMTP replies turned into error classes (4xx transient, 535
//! authentication, other 5xx permanent, connection failures transient).

use std::time::Duration;

use ferry_core::http::HttpClient;
use ferry_core::ConnectorError;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{Security, SmsEmailConfig};

/// The SMTP server a message goes through (the `events` connector's email
/// channel sends through it too).
pub(crate) struct SmtpServer<'a> {
    pub host: &'a str,
    pub port: u16,
    pub security: Security,
    pub username: Option<&'a str>,
    pub timeout_ms: u64,
}

impl<'a> From<&'a SmsEmailConfig> for SmtpServer<'a> {
    fn from(c: &'a SmsEmailConfig) -> Self {
        SmtpServer {
            host: &c.smtp_host,
            port: c.smtp_port,
            security: c.smtp_security,
            username: c.smtp_username.as_deref(),
            timeout_ms: c.smtp_timeout_ms,
        }
    }
}

pub(crate) async fn send(
    http: &HttpClient,
    config: &SmtpServer<'_>,
    password: Option<&str>,
    message: Message,
) -> Result<(), ConnectorError> {
    let host = config.host;
    let builder = match config.security {
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|e| ConnectorError::InvalidConfig(format!("config.smtp_host: {e}")))?,
        Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|e| ConnectorError::InvalidConfig(format!("config.smtp_host: {e}")))?,
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(Duration::from_millis(config.timeout_ms)));
    if let Some(user) = config.username {
        builder = builder.credentials(Credentials::new(
            user.to_string(),
            password.unwrap_or("").to_string(),
        ));
    }
    let transport = builder.build();
    // Not sent once this node may no longer act on its runs.
    http.fence()?;
    transport.send(message).await.map(|_| ()).map_err(classify)
}

fn classify(e: lettre::transport::smtp::Error) -> ConnectorError {
    let code = e.status().map(|c| c.to_string());
    let message = format!("SMTP: {e}");
    match code.as_deref() {
        Some("535" | "534" | "530") => ConnectorError::Auth(message),
        _ if e.is_permanent() => ConnectorError::Permanent(message),
        _ => ConnectorError::Transient(message),
    }
}
