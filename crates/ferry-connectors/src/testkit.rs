//! The conformance harness every connector passes, built-in or not.
//!
//! A [`Case`] describes a connector against the sandbox: a working config,
//! configs that must be refused (and the field the refusal must name), a
//! signed webhook and its tampered variants, the faults a run must survive,
//! and what a finished run leaves in the sandbox. [`conform`] then checks:
//!
//! 1. the manifest registers (id, semver, schema) and the good config and
//!    secrets validate;
//! 2. every bad config is refused with `config.<field>` named;
//! 3. the signed webhook is accepted and every tampered one is refused
//!    as unauthorized;
//! 4. a clean run produces the outcome, and a second run with nothing new
//!    changes nothing;
//! 5. each fault (429 with `Retry-After`, 5xx, …) fails the run with a
//!    retryable class (`rate_limited` carries the `Retry-After`), and the
//!    retry produces exactly the clean outcome;
//! 6. a run cut mid-way commits nothing, and the re-run from the last
//!    committed cursor produces exactly the clean outcome: no duplicates;
//! 7. throughout, every request the sandbox's fakes served came through
//!    the run's `ctx.http` (counted against the client's recording): a
//!    connector makes no call around it.
//!
//! Each step runs in a fresh sandbox, so outcomes compare exactly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::http::Recording;
use ferry_core::{
    Connector, ConnectorError, InboundRequest, Intake, Registry, RunContext, RunReport, Trigger,
    WebhookContext, WebhookError,
};
use ferry_sandbox::faults::Fault;
use ferry_sandbox::Sandbox;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where a running sandbox listens.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `http://127.0.0.1:PORT`: append `/platform`, `/zoom/v2`, ….
    pub http: String,
    pub smtp: SocketAddr,
    /// Every exchange the runs against this sandbox made through their
    /// `ctx.http`.
    pub recording: Recording,
}

/// A fresh sandbox with its HTTP fakes and SMTP sink on ephemeral ports.
pub async fn sandbox() -> (Sandbox, Endpoints) {
    let s = Sandbox::new();
    let http = s
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox binds a loopback port");
    let smtp = s
        .serve_smtp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the SMTP sink binds a loopback port");
    (
        s,
        Endpoints {
            http: format!("http://{http}"),
            smtp,
            recording: Recording::new(),
        },
    )
}

/// A run context as the worker builds it.
pub fn context(
    config: Value,
    secrets: BTreeMap<String, String>,
    payload: Option<String>,
    state: Value,
    now_ms: i64,
) -> RunContext {
    RunContext {
        run_id: Uuid::now_v7(),
        integration_id: Uuid::now_v7(),
        tenant: "conformance".into(),
        trigger: if payload.is_some() {
            Trigger::Event
        } else {
            Trigger::Schedule
        },
        attempt: 1,
        scheduled_for: None,
        event_id: payload.as_ref().map(|_| Uuid::now_v7()),
        payload,
        config: Arc::new(config),
        secrets: Arc::new(secrets),
        state,
        cancel: CancellationToken::new(),
        now_ms,
        http: crate::http::client(ferry_core::http::DEFAULT_PER_HOST),
    }
}

/// The platform's contacts as runs leave them: email → data fields,
/// address books and how many upserts changed the contact (so a duplicate
/// write shows).
pub fn platform_contacts(s: &Sandbox) -> Value {
    let w = s.world();
    let contacts: BTreeMap<&str, Value> = w
        .platform
        .contacts
        .values()
        .filter(|c| c.status != "suppressed")
        .map(|c| {
            (
                c.email.as_str(),
                json!({"fields": c.data_fields, "books": c.address_books, "changes": c.changes}),
            )
        })
        .collect();
    json!(contacts)
}

/// A webhook request that must be accepted, and tampered variants (named)
/// that must be refused as unauthorized.
pub struct WebhookCase {
    pub good: InboundRequest,
    pub tampered: Vec<(&'static str, InboundRequest)>,
}

pub struct Case {
    pub connector: Arc<dyn Connector>,
    /// A config that works against the sandbox.
    pub config: fn(&Endpoints) -> Value,
    pub secrets: fn(&Endpoints) -> BTreeMap<String, String>,
    /// Changes to the good config (a `null` removes the key) that must be
    /// refused, and the field the refusal must name (`config.page_size`).
    pub bad_configs: Vec<(Value, &'static str)>,
    pub webhook: Option<fn(&Endpoints, i64) -> WebhookCase>,
    /// The event a run handles (for connectors driven by webhooks only);
    /// `None` runs the scheduled sync.
    pub payload: Option<fn() -> String>,
    /// Faults that must fail a run retryably; each is applied once.
    pub faults: Vec<Fault>,
    /// A fault that cuts a run mid-way (after some pages were read).
    pub cut: Option<Fault>,
    /// What a run leaves in the sandbox, comparable across sandboxes.
    pub outcome: fn(&Sandbox) -> Value,
    pub now_ms: i64,
}

fn patched(good: &Value, patch: &Value) -> Value {
    let mut v = good.clone();
    if let (Some(o), Some(p)) = (v.as_object_mut(), patch.as_object()) {
        for (k, val) in p {
            if val.is_null() {
                o.remove(k);
            } else {
                o.insert(k.clone(), val.clone());
            }
        }
    }
    v
}

impl Case {
    async fn run(&self, e: &Endpoints, state: Value) -> Result<RunReport, ConnectorError> {
        let mut ctx = context(
            (self.config)(e),
            (self.secrets)(e),
            self.payload.map(|p| p()),
            state,
            self.now_ms,
        );
        ctx.http = ctx.http.recorded(&e.recording);
        self.connector.run(ctx).await
    }

    /// A fresh sandbox, a clean run, and what it left.
    async fn clean(&self) -> (Sandbox, Endpoints, RunReport, Value) {
        let (s, e) = sandbox().await;
        let report = self.run(&e, json!({})).await.expect("a clean run succeeds");
        let outcome = (self.outcome)(&s);
        (s, e, report, outcome)
    }
}

/// The requests the sandbox's HTTP fakes served (SMTP is not HTTP).
pub fn http_requests(s: &Sandbox) -> u64 {
    s.world()
        .requests
        .iter()
        .filter(|(provider, _)| provider.as_str() != "smtp")
        .map(|(_, n)| n)
        .sum()
}

/// Every request the fakes served went through the runs' `ctx.http`.
fn one_path(id: &str, s: &Sandbox, e: &Endpoints, step: &str) {
    let served = http_requests(s);
    let through = e.recording.len() as u64;
    assert_eq!(
        served, through,
        "{id}: {step}: the sandbox served {served} requests but the run's ctx.http made {through}; \
         a connector must make every call through ctx.http, none around it"
    );
}

/// Runs every check on `case`; panics with what failed.
pub async fn conform(case: Case) {
    let id = case.connector.manifest().id.clone();

    // 1. The manifest registers and the good config validates.
    let mut registry = Registry::new();
    registry
        .register(ArcConnector(case.connector.clone()))
        .unwrap_or_else(|e| panic!("{id}: manifest refused: {e}"));
    let registered = registry.resolve(&id, None).expect("registered");
    let m = registered.manifest();
    assert!(
        !m.triggers.is_empty(),
        "{id}: a manifest declares its triggers"
    );
    assert!(
        !m.description.is_empty(),
        "{id}: a manifest describes itself"
    );
    assert!(
        !m.changelog.is_empty(),
        "{id}: a manifest says what its version changed"
    );
    let (_s, e) = sandbox().await;
    let good = (case.config)(&e);
    let secrets = (case.secrets)(&e);
    registered
        .validate(&good, &secrets)
        .unwrap_or_else(|err| panic!("{id}: the good config is refused: {err}"));

    // 2. Bad configs are refused, naming the field.
    assert!(!case.bad_configs.is_empty(), "{id}: list bad configs");
    for (patch, field) in &case.bad_configs {
        let err = registered
            .validate(&patched(&good, patch), &secrets)
            .expect_err(&format!("{id}: {patch} must be refused"))
            .to_string();
        assert!(
            err.starts_with(field),
            "{id}: refusing {patch} must name {field}, said: {err}"
        );
    }

    // 3. Webhooks: the signed one passes, every tampered one is refused.
    if let Some(make) = case.webhook {
        let w = make(&e, case.now_ms);
        let ctx = WebhookContext {
            integration_id: Uuid::now_v7(),
            config: &good,
            secrets: &secrets,
            now_ms: case.now_ms,
        };
        match case.connector.verify_webhook(&ctx, &w.good) {
            Ok(Intake::Accept { .. } | Intake::Respond { .. }) => {}
            Err(err) => panic!("{id}: the signed webhook is refused: {err}"),
        }
        assert!(!w.tampered.is_empty(), "{id}: list tampered webhooks");
        for (what, req) in &w.tampered {
            match case.connector.verify_webhook(&ctx, req) {
                Err(WebhookError::Unauthorized(_)) => {}
                other => panic!("{id}: a webhook with {what} must be unauthorized, got {other:?}"),
            }
        }
    }

    // 4. A clean run; a second one with nothing new changes nothing.
    let (s, e, report, outcome) = case.clean().await;
    assert_ne!(
        outcome,
        (case.outcome)(&Sandbox::new()),
        "{id}: a run leaves something"
    );
    if case.payload.is_none() {
        let state = report.state.clone().unwrap_or_else(|| json!({}));
        case.run(&e, state).await.expect("a second run succeeds");
        assert_eq!(
            (case.outcome)(&s),
            outcome,
            "{id}: a second run with nothing new changes nothing"
        );
    }
    one_path(&id, &s, &e, "clean runs");

    // 5. Faults fail a run retryably; the retry ends exactly as a clean run.
    assert!(
        !case.faults.is_empty(),
        "{id}: list the faults a run must survive"
    );
    for fault in &case.faults {
        let (s, e) = sandbox().await;
        s.set_fault(Fault {
            count: Some(1),
            ..fault.clone()
        })
        .expect("fault");
        let err = case
            .run(&e, json!({}))
            .await
            .expect_err(&format!("{id}: a run under {fault:?} fails"));
        match (&err, fault.status, fault.retry_after_s) {
            (ConnectorError::RateLimited { retry_after, .. }, Some(429), Some(secs)) => assert_eq!(
                *retry_after,
                Some(Duration::from_secs(secs)),
                "{id}: Retry-After is honoured"
            ),
            (ConnectorError::RateLimited { .. } | ConnectorError::Transient(_), _, _) => {}
            other => panic!("{id}: {fault:?} must be retryable, got {other:?}"),
        }
        let again = case.run(&e, json!({})).await;
        assert!(
            again.is_ok(),
            "{id}: the retry after {fault:?} succeeds: {again:?}"
        );
        assert_eq!(
            (case.outcome)(&s),
            outcome,
            "{id}: the retry after {fault:?} ends as a clean run"
        );
        one_path(&id, &s, &e, "a run under a fault and its retry");
    }

    // 6. A run cut mid-way commits nothing; the re-run has no duplicates.
    if let Some(cut) = &case.cut {
        let (s, e) = sandbox().await;
        s.set_fault(Fault {
            count: Some(1),
            ..cut.clone()
        })
        .expect("fault");
        let err = case.run(&e, json!({})).await;
        assert!(
            matches!(
                err,
                Err(ConnectorError::Transient(_) | ConnectorError::RateLimited { .. })
            ),
            "{id}: the cut run fails retryably: {err:?}"
        );
        case.run(&e, json!({})).await.expect("the re-run succeeds");
        assert_eq!(
            (case.outcome)(&s),
            outcome,
            "{id}: the re-run after a cut ends as a clean run"
        );
        one_path(&id, &s, &e, "a cut run and its re-run");
    }
}

/// Registers a shared connector (the registry takes ownership).
struct ArcConnector(Arc<dyn Connector>);

#[async_trait::async_trait]
impl Connector for ArcConnector {
    fn manifest(&self) -> &ferry_core::Manifest {
        self.0.manifest()
    }
    fn verify_webhook(
        &self,
        ctx: &WebhookContext<'_>,
        req: &InboundRequest,
    ) -> Result<Intake, WebhookError> {
        self.0.verify_webhook(ctx, req)
    }
    async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
        self.0.run(ctx).await
    }
}

/// A file of the repository's `fixtures/` (provider payloads, signature
/// vectors), byte-exact.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// An inbound request as the intake hands it over.
pub fn inbound(url: &str, headers: &[(&str, &str)], body: &[u8]) -> InboundRequest {
    InboundRequest {
        url: url.to_string(),
        sub_path: String::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Manifest;

    /// Reads the platform's data fields once through `ctx.http` and, when
    /// `around`, once more through a client of its own.
    struct Reader {
        manifest: Manifest,
        around: bool,
    }

    impl Reader {
        fn shared(around: bool) -> Arc<dyn Connector> {
            Arc::new(Reader {
                manifest: Manifest {
                    id: "reader".into(),
                    version: "1.0.0".into(),
                    changelog: "First version.".into(),
                    name: "Reader".into(),
                    description: "reads the platform's data fields".into(),
                    triggers: vec![ferry_core::TriggerKind::Schedule],
                    config_schema: json!({"type": "object"}),
                    secrets: vec![],
                },
                around,
            })
        }
    }

    #[async_trait::async_trait]
    impl Connector for Reader {
        fn manifest(&self) -> &Manifest {
            &self.manifest
        }

        async fn run(&self, ctx: RunContext) -> Result<RunReport, ConnectorError> {
            let url = format!(
                "{}/v1/data-fields",
                ctx.config["platform"].as_str().unwrap_or("")
            );
            let key = ferry_sandbox::platform::API_KEY;
            ctx.http
                .get(&url)
                .bearer(key)
                .send_json("platform API", "the API key", ctx.now_ms)
                .await?;
            if self.around {
                reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .map_err(|e| ConnectorError::Transient(e.to_string()))?;
            }
            Ok(RunReport::default())
        }
    }

    fn case(connector: Arc<dyn Connector>) -> Case {
        Case {
            connector,
            config: |e| json!({"platform": format!("{}/platform", e.http)}),
            secrets: |_| BTreeMap::new(),
            bad_configs: vec![],
            webhook: None,
            payload: None,
            faults: vec![],
            cut: None,
            outcome: platform_contacts,
            now_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_call_around_ctx_http_is_caught() {
        let (s, e) = sandbox().await;
        case(Reader::shared(false))
            .run(&e, json!({}))
            .await
            .expect("runs");
        one_path("reader", &s, &e, "honest run");
        assert_eq!(e.recording.len(), 1);

        let (s, e) = sandbox().await;
        case(Reader::shared(true))
            .run(&e, json!({}))
            .await
            .expect("runs");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_path("reader", &s, &e, "sneaky run")
        }))
        .expect_err("a request around ctx.http must fail the harness");
        let said = caught.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            said.contains("served 2 requests but the run's ctx.http made 1"),
            "{said}"
        );
    }
}
