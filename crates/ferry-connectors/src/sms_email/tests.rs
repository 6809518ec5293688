//! The sms_email connector: Twilio signature vectors, the conformance
//! harness on the sandbox's SMTP sink, and delivery to a real SMTP server
//! process (Python's aiosmtpd).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Connector, ConnectorError, Intake, WebhookContext};
use ferry_sandbox::faults::Fault;
use ferry_sandbox::{smtp, Sandbox};
use serde_json::{json, Value};
use uuid::Uuid;

use super::SmsEmailConnector;
use crate::testkit::{self, conform, context, fixture, inbound, Case, Endpoints, WebhookCase};

const NOW_MS: i64 = 1_763_630_102_000;

fn vectors() -> Value {
    serde_json::from_slice(&fixture("signatures.json")).expect("json")
}

fn config_for(host: &str, port: u16) -> Value {
    json!({
        "recipients": ["desk@example.com", "ops@example.com"],
        "from": "sms@ferry.example",
        "smtp_host": host,
        "smtp_port": port,
        "smtp_security": "none",
        "subject": "SMS from {from} to {to}",
        "smtp_timeout_ms": 5000
    })
}

fn config(e: &Endpoints) -> Value {
    config_for("127.0.0.1", e.smtp.port())
}

fn secrets(_: &Endpoints) -> BTreeMap<String, String> {
    let v = vectors();
    BTreeMap::from([(
        "auth_token".to_string(),
        v["twilio"]["auth_token"]
            .as_str()
            .expect("token")
            .to_string(),
    )])
}

/// The fixture's parameters as the intake stores them.
fn payload() -> String {
    let map: BTreeMap<String, String> = form_urlencoded::parse(&fixture("twilio_inbound_sms.form"))
        .into_owned()
        .collect();
    serde_json::to_string(&map).expect("json")
}

fn webhook(_: &Endpoints, _: i64) -> WebhookCase {
    let v = vectors();
    let t = &v["twilio"];
    let url = t["url"].as_str().expect("url");
    let sig = t["value"].as_str().expect("sig");
    let body = fixture("twilio_inbound_sms.form");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let with = |url: &str, sig: &str, body: &[u8]| {
        let mut h = form.to_vec();
        h.push(("x-twilio-signature", sig));
        inbound(url, &h, body)
    };
    let changed = String::from_utf8(body.clone())
        .expect("utf8")
        .replace("late", "early");
    WebhookCase {
        good: with(url, sig, &body),
        tampered: vec![
            ("a changed parameter", with(url, sig, changed.as_bytes())),
            (
                "another URL",
                with(&url.replace("region=eu", "region=us"), sig, &body),
            ),
            (
                "another port",
                with(
                    &url.replace("ferry.example", "ferry.example:8443"),
                    sig,
                    &body,
                ),
            ),
            (
                "a signature of another token",
                with(url, "PS2weXZ7P7Qgghqlr6Nn9iplxk9=", &body),
            ),
            ("no signature", inbound(url, &form, &body)),
        ],
    }
}

/// What the SMTP sink took: sender, recipients, subject of each message.
fn emails(s: &Sandbox) -> Value {
    json!(s
        .world()
        .emails
        .iter()
        .map(|m| json!([m.mail_from, m.rcpt_to, m.subject]))
        .collect::<Vec<_>>())
}

#[tokio::test]
async fn sms_email_passes_the_conformance_harness() {
    conform(Case {
        connector: Arc::new(SmsEmailConnector::new()),
        config,
        secrets,
        bad_configs: vec![
            (json!({"recipients": []}), "config.recipients"),
            (
                json!({"recipients": ["not-an-address"]}),
                "config.recipients.0",
            ),
            (json!({"from": null}), "config.from"),
            (json!({"smtp_security": "ssl"}), "config.smtp_security"),
            (json!({"smtp_port": 0}), "config.smtp_port"),
        ],
        webhook: Some(webhook),
        payload: Some(payload),
        faults: vec![Fault::status("smtp", 451), Fault::status("smtp", 421)],
        cut: None,
        outcome: emails,
        now_ms: NOW_MS,
    })
    .await;
}

#[tokio::test]
async fn the_signature_covers_the_configured_url_and_the_sid_is_the_idempotency_key() {
    let v = vectors();
    let t = &v["twilio"];
    let body = fixture("twilio_inbound_sms.form");
    let secrets = secrets(&testkit::Endpoints {
        http: String::new(),
        smtp: ([127, 0, 0, 1], 25).into(),
        recording: Default::default(),
    });
    // Behind a proxy Ferry sees another URL; the configured one is signed.
    let config = json!({"webhook_url": t["url"]});
    let ctx = WebhookContext {
        integration_id: Uuid::now_v7(),
        config: &config,
        secrets: &secrets,
        now_ms: NOW_MS,
    };
    let req = inbound(
        "http://10.0.0.5:8080/v1/hooks/x",
        &[("x-twilio-signature", t["value"].as_str().expect("v"))],
        &body,
    );
    match SmsEmailConnector::new().verify_webhook(&ctx, &req) {
        Ok(Intake::Accept {
            idempotency_key,
            payload,
        }) => {
            assert_eq!(
                idempotency_key.as_deref(),
                Some("sms:SM0123456789abcdef0123456789abcdef")
            );
            let p: Value = serde_json::from_str(&payload).expect("json");
            assert_eq!(p["Body"], "Running 10 min late, sorry!");
        }
        other => panic!("want accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn smtp_refusals_are_classified_and_an_empty_sms_is_a_rejection() {
    let (s, e) = testkit::sandbox().await;
    let c = SmsEmailConnector::new();
    let run = |config: Value, secrets: BTreeMap<String, String>, payload: String| {
        c.run(context(config, secrets, Some(payload), json!({}), NOW_MS))
    };
    let mut bounce = config(&e);
    bounce["recipients"] = json!(["desk@example.com", "gone@bounce.example"]);
    match run(bounce, secrets(&e), payload()).await {
        Err(ConnectorError::Permanent(m)) => assert!(m.contains("550"), "{m}"),
        other => panic!("want permanent, got {other:?}"),
    }
    let mut authed = config(&e);
    authed["smtp_username"] = json!(smtp::USERNAME);
    let mut wrong = secrets(&e);
    wrong.insert("smtp_password".into(), "wrong".into());
    assert!(matches!(
        run(authed.clone(), wrong, payload()).await,
        Err(ConnectorError::Auth(_))
    ));
    let mut right = secrets(&e);
    right.insert("smtp_password".into(), smtp::PASSWORD.into());
    run(authed, right, payload())
        .await
        .expect("authenticated send");
    assert_eq!(s.world().emails.len(), 1);

    let empty =
        json!({"MessageSid": "SMempty", "From": "+1", "To": "+2", "Body": " ", "NumMedia": "0"})
            .to_string();
    let report = run(config(&e), secrets(&e), empty)
        .await
        .expect("empty sms");
    assert_eq!((report.records_ok, report.records_rejected), (0, 1));
    assert_eq!(report.rejections[0].reason, "has no text and no media");
    assert_eq!(s.world().emails.len(), 1, "no email for an empty SMS");

    let down = config_for("127.0.0.1", 9);
    assert!(matches!(
        run(down, secrets(&e), payload()).await,
        Err(ConnectorError::Transient(_))
    ));
}

/// A Python with aiosmtpd: `FERRY_TEST_SMTP_PYTHON` (set by CI, which
/// installs it), else `python3` if it has aiosmtpd.
fn aiosmtpd_python() -> Option<String> {
    if let Ok(p) = std::env::var("FERRY_TEST_SMTP_PYTHON") {
        return Some(p);
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| "python3".to_string())
}

pub(crate) struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real SMTP server process (aiosmtpd) writing a maildir: the server
/// (stopped on drop), its port and the maildir; `None` after saying the
/// test `name` is skipped.
pub(crate) async fn smtp_server(name: &str) -> Option<(Kill, u16, std::path::PathBuf)> {
    let Some(python) = aiosmtpd_python() else {
        // Past the harness's capture, so the run says what it did not test.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {name}: aiosmtpd is not installed (pip install aiosmtpd, or set FERRY_TEST_SMTP_PYTHON)"
        );
        return None;
    };
    let dir = std::env::temp_dir().join(format!("ferry-smtp-{}", Uuid::now_v7()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = std::process::Command::new(&python)
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {python} -m aiosmtpd: {e}"));
    let server = Kill(child);
    // Readiness: the server accepts connections.
    let mut ready = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "aiosmtpd did not start on port {port}");
    Some((server, port, dir))
}

#[tokio::test]
async fn an_sms_arrives_as_email_at_a_real_smtp_server() {
    let Some((_server, port, dir)) =
        smtp_server("an_sms_arrives_as_email_at_a_real_smtp_server").await
    else {
        return;
    };
    let c = SmsEmailConnector::new();
    let report = c
        .run(context(
            config_for("127.0.0.1", port),
            secrets(&testkit::Endpoints {
                http: String::new(),
                smtp: ([127, 0, 0, 1], port).into(),
                recording: Default::default(),
            }),
            Some(payload()),
            json!({}),
            NOW_MS,
        ))
        .await
        .expect("sent");
    assert_eq!(report.records_ok, 1);
    let new = dir.join("new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .expect("maildir")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1, "one message for both recipients");
    let text = std::fs::read_to_string(files[0].path()).expect("message");
    assert!(
        text.contains("Subject: SMS from +447700900123 to +447700900999"),
        "{text}"
    );
    assert!(
        text.contains("To: desk@example.com, ops@example.com"),
        "{text}"
    );
    assert!(text.contains("Running 10 min late, sorry!"), "{text}");
    assert!(
        text.contains("Message-ID: <SM0123456789abcdef0123456789abcdef@sms.ferry>"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
