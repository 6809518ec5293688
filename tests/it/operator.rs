//! The operator surface through the real binary: the access matrix (every
//! endpoint × every kind of caller), a dead-letter replay driven through
//! the CLI, and secrets kept out of responses, logs and the database.

use std::process::Command;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::TempDir;
use crate::harness::{eventually, Api, Node, Receiver, ADMIN, IN_SECRET, OUT_SECRET};
use ferry_core::signing;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    BadToken,
    Viewer,
    Operator,
    Admin,
    /// An admin token scoped to another tenant.
    OtherTenant,
}

const CALLERS: [Caller; 6] = [
    Caller::NoToken,
    Caller::BadToken,
    Caller::Viewer,
    Caller::Operator,
    Caller::Admin,
    Caller::OtherTenant,
];

/// The weakest role an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// No token needed; answers `status` to everyone.
    Public(u16),
    Viewer,
    Operator,
    Admin,
    /// An admin token not scoped to a tenant.
    UnscopedAdmin,
}

/// What another tenant's token sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// One of acme's resources: does not exist for it (404).
    Resource,
    /// A list or count: its own (empty) part of it.
    List,
    /// Creating in acme: forbidden (403).
    InAcme,
}

struct Case {
    method: Method,
    path: String,
    body: Option<String>,
    need: Need,
    scope: Scope,
    ok: u16,
}

fn expected(case: &Case, who: Caller) -> u16 {
    if let Need::Public(s) = case.need {
        return s;
    }
    let rank = |c: Caller| match c {
        Caller::Viewer => 1,
        Caller::Operator => 2,
        Caller::Admin | Caller::OtherTenant => 3,
        _ => 0,
    };
    let needed = match case.need {
        Need::Viewer => 1,
        Need::Operator => 2,
        Need::Admin | Need::UnscopedAdmin => 3,
        Need::Public(_) => 0,
    };
    match who {
        Caller::NoToken | Caller::BadToken => 401,
        c if rank(c) < needed => 403,
        Caller::OtherTenant if case.need == Need::UnscopedAdmin => 403,
        Caller::OtherTenant => match case.scope {
            Scope::Resource => 404,
            Scope::List => case.ok,
            Scope::InAcme => 403,
        },
        _ => case.ok,
    }
}

async fn token(api: &Api, role: &str, tenant: Option<&str>) -> (String, String) {
    let (s, v) = api
        .post(
            "/v1/tokens",
            &json!({"role": role, "tenant": tenant}).to_string(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    (
        v["token"].as_str().expect("token").to_string(),
        v["id"].as_str().expect("id").to_string(),
    )
}

fn integration_body(url: &str, max_attempts: u32) -> String {
    json!({
        "name": "matrix", "tenant": "acme", "connector": "webhook",
        "config": {"url": url},
        "secrets": {"signing_secret": OUT_SECRET, "inbound_secret": IN_SECRET},
        "retry": {"max_attempts": max_attempts, "initial_backoff_ms": 10, "max_backoff_ms": 20}
    })
    .to_string()
}

async fn create_integration(api: &Api, url: &str, max_attempts: u32) -> String {
    let (s, v) = api
        .post("/v1/integrations", &integration_body(url, max_attempts))
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_string()
}

async fn dead_letter_ids(api: &Api, integration: &str) -> Vec<String> {
    api.get(&format!(
        "/v1/dead-letters?integration={integration}&limit=1000"
    ))
    .await["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| d["replay_run_id"].is_null() && d["discarded_at"].is_null())
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_caller_as_its_role_and_tenant_allow() {
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    let (viewer, _) = token(&api, "viewer", None).await;
    let (operator, _) = token(&api, "operator", None).await;
    let (admin, _) = token(&api, "admin", None).await;
    let (other, _) = token(&api, "admin", Some("globex")).await;

    // Shared acme resources, and a source of dead letters (port 9 refuses).
    let closed = "http://127.0.0.1:9/in";
    let shared = create_integration(&api, closed, 1).await;
    let quiet = create_integration(&api, closed, 1).await;
    let (s, run) = api
        .post(&format!("/v1/integrations/{shared}/runs"), "")
        .await;
    assert_eq!(s, 202);
    let run = run["run_id"].as_str().expect("run").to_string();
    for _ in 0..13 {
        let (s, _) = api
            .post(&format!("/v1/integrations/{shared}/runs"), "")
            .await;
        assert_eq!(s, 202);
    }
    eventually(30, "14 dead letters", || async {
        dead_letter_ids(&api, &shared).await.len() >= 14
    })
    .await;
    let mut fresh_dls = dead_letter_ids(&api, &shared).await;
    let shown_dl = fresh_dls.pop().expect("a dead letter to show");
    let group = api.get(&format!("/v1/dead-letters/{shown_dl}")).await["failure_group"]
        .as_str()
        .expect("a dead letter names its failure group")
        .to_string();
    let (s, op) = api
        .post(
            "/v1/dead-letters/replay",
            &json!({"filter": {"integration": quiet}, "dry_run": false}).to_string(),
        )
        .await;
    assert_eq!(s, 202, "{op}");
    let op = op["operation"]["id"].as_str().expect("op").to_string();

    let mut table = Vec::new();
    for who in CALLERS {
        // Resources a successful call would use up, fresh for each caller.
        let doomed = create_integration(&api, closed, 1).await;
        let (_, revokable) = token(&api, "viewer", None).await;
        let replayable = fresh_dls.pop().expect("dead letter");
        let discardable = fresh_dls.pop().expect("dead letter");
        let case = |method: Method, path: String, body: Option<&str>, need, scope, ok| Case {
            method,
            path,
            body: body.map(str::to_string),
            need,
            scope,
            ok,
        };
        use Need as N;
        use Scope as S;
        let cases = vec![
            case(
                Method::GET,
                "/healthz".into(),
                None,
                N::Public(200),
                S::List,
                200,
            ),
            case(
                Method::GET,
                "/metrics".into(),
                None,
                N::Public(200),
                S::List,
                200,
            ),
            case(
                Method::GET,
                "/readyz".into(),
                None,
                N::Public(200),
                S::List,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/hooks/{shared}"),
                Some("{}"),
                N::Public(401),
                S::List,
                401,
            ),
            case(
                Method::GET,
                "/v1/openapi.json".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                "/v1/connectors".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::POST,
                "/v1/tokens".into(),
                Some(r#"{"role":"viewer"}"#),
                N::Admin,
                S::List,
                201,
            ),
            case(
                Method::GET,
                "/v1/tokens".into(),
                None,
                N::Admin,
                S::List,
                200,
            ),
            case(
                Method::DELETE,
                format!("/v1/tokens/{revokable}"),
                None,
                N::Admin,
                S::Resource,
                200,
            ),
            case(
                Method::GET,
                "/v1/audit".into(),
                None,
                N::UnscopedAdmin,
                S::List,
                200,
            ),
            case(
                Method::POST,
                "/v1/integrations".into(),
                Some(&integration_body(closed, 1)),
                N::Admin,
                S::InAcme,
                201,
            ),
            case(
                Method::GET,
                "/v1/integrations".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                "/v1/rollouts".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/integrations/{shared}"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::PATCH,
                format!("/v1/integrations/{quiet}"),
                Some(r#"{"name":"renamed"}"#),
                N::Admin,
                S::Resource,
                200,
            ),
            case(
                Method::DELETE,
                format!("/v1/integrations/{doomed}"),
                None,
                N::Admin,
                S::Resource,
                204,
            ),
            case(
                Method::POST,
                format!("/v1/integrations/{quiet}/pause"),
                None,
                N::Operator,
                S::Resource,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/integrations/{quiet}/resume"),
                None,
                N::Operator,
                S::Resource,
                200,
            ),
            case(
                Method::PUT,
                format!("/v1/integrations/{quiet}/auto-pause"),
                Some(r#"{"after_s":3600,"min_runs":5}"#),
                N::Operator,
                S::Resource,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/integrations/{quiet}/runs"),
                None,
                N::Operator,
                S::Resource,
                202,
            ),
            case(
                Method::GET,
                format!("/v1/integrations/{shared}/state"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/integrations/{shared}/revisions"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/integrations/{shared}/revisions/diff?from=1"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/integrations/{quiet}/revisions/1/restore"),
                None,
                N::Admin,
                S::Resource,
                200,
            ),
            case(
                Method::GET,
                "/v1/runs".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/runs/{run}"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::GET,
                "/v1/dead-letters".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/dead-letters/{shown_dl}"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/dead-letters/{replayable}/replay"),
                None,
                N::Operator,
                S::Resource,
                202,
            ),
            case(
                Method::DELETE,
                format!("/v1/dead-letters/{discardable}"),
                None,
                N::Operator,
                S::Resource,
                204,
            ),
            case(
                Method::POST,
                "/v1/dead-letters/replay".into(),
                Some(r#"{"dry_run":true}"#),
                N::Operator,
                S::List,
                200,
            ),
            case(
                Method::POST,
                "/v1/dead-letters/replay".into(),
                Some(&json!({"filter": {"integration": quiet}}).to_string()),
                N::Operator,
                S::List,
                202,
            ),
            case(
                Method::GET,
                "/v1/failure-groups".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/failure-groups/{group}"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/failure-groups/{group}/ack"),
                None,
                N::Operator,
                S::Resource,
                200,
            ),
            case(
                Method::POST,
                format!("/v1/failure-groups/{group}/resolve"),
                None,
                N::Operator,
                S::Resource,
                200,
            ),
            case(
                Method::GET,
                "/v1/operations".into(),
                None,
                N::Viewer,
                S::List,
                200,
            ),
            case(
                Method::GET,
                format!("/v1/operations/{op}"),
                None,
                N::Viewer,
                S::Resource,
                200,
            ),
        ];
        let bearer = match who {
            Caller::NoToken => None,
            Caller::BadToken => Some("fry_not-a-real-token"),
            Caller::Viewer => Some(viewer.as_str()),
            Caller::Operator => Some(operator.as_str()),
            Caller::Admin => Some(admin.as_str()),
            Caller::OtherTenant => Some(other.as_str()),
        };
        for c in &cases {
            let (status, body) = api
                .call(c.method.clone(), &c.path, bearer, c.body.as_deref())
                .await;
            let want = expected(c, who);
            if status != want {
                table.push(format!(
                    "{:?} {} {}: got {status}, want {want}: {body}",
                    who, c.method, c.path
                ));
            }
            if status >= 400 && !c.path.starts_with("/readyz") {
                assert!(
                    body["error"]["code"].is_string(),
                    "errors carry a code: {who:?} {} {} -> {body}",
                    c.method,
                    c.path
                );
            }
        }
    }
    assert!(
        table.is_empty(),
        "access matrix mismatches:\n{}",
        table.join("\n")
    );

    // Every list pages with ?limit=&cursor=, connectors included.
    let first = api.get("/v1/connectors?limit=1").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let second = api
        .get(&format!("/v1/connectors?limit=1&cursor={cursor}"))
        .await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    // Walked a page at a time, every registered version comes once, by id
    // then version.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/connectors?limit=2&cursor={c}"),
            None => "/v1/connectors?limit=2".into(),
        };
        let page = api.get(&path).await;
        for m in page["items"].as_array().expect("items") {
            seen.push(format!(
                "{}@{}",
                m["id"].as_str().unwrap_or(""),
                m["version"].as_str().unwrap_or("")
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let all = api.get("/v1/connectors?limit=1000").await;
    assert_eq!(
        seen.len(),
        all["items"].as_array().map(Vec::len).unwrap_or(0)
    );
    let tf: Vec<&String> = seen.iter().filter(|s| s.starts_with("typeform@")).collect();
    assert_eq!(tf, ["typeform@1.0.0", "typeform@2.0.0"]);
    let (s, e) = api
        .call(
            Method::GET,
            "/v1/connectors?cursor=nonsense",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 422, "{e}");
    for path in [
        "/v1/integrations",
        "/v1/runs",
        "/v1/dead-letters",
        "/v1/tokens",
        "/v1/audit",
        "/v1/operations",
    ] {
        let page = api.get(&format!("{path}?limit=1")).await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{path}");
        let next = page["next_cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} has more"));
        let more = api.get(&format!("{path}?limit=1&cursor={next}")).await;
        assert_ne!(more["items"][0], page["items"][0], "{path} moves on");
    }

    // What another tenant's lists show: nothing of acme's.
    let (_, listed) = api
        .call(Method::GET, "/v1/dead-letters", Some(&other), None)
        .await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
    // A revoked token stops working at once.
    let (doomed_token, doomed_id) = token(&api, "operator", None).await;
    let (s, _) = api
        .call(Method::GET, "/v1/runs", Some(&doomed_token), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{doomed_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(Method::GET, "/v1/runs", Some(&doomed_token), None)
        .await;
    assert_eq!(s, 401);
    let (s, again) = api
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{doomed_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (s, again["error"]["code"].as_str()),
        (409, Some("already_revoked"))
    );
    // Every mutation above is in the audit log with its actor.
    let audit = api.get("/v1/audit?limit=1000").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "token.create",
        "token.revoke",
        "integration.create",
        "integration.update",
        "integration.restore",
        "integration.delete",
        "integration.pause",
        "integration.resume",
        "integration.auto_pause_setting",
        "integration.trigger",
        "dead_letter.replay",
        "dead_letter.replay_bulk",
        "dead_letter.discard",
        "failure_group.acknowledge",
        "failure_group.resolve",
    ] {
        assert!(actions.contains(&a), "audit log lacks {a}: {actions:?}");
    }
    assert!(node.stop().success());
}

/// Runs the `ferry` CLI against `node`; returns (exit ok, stdout, stderr).
pub(crate) fn cli(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_URL", &node.base)
        .env("FERRY_TOKEN", ADMIN)
        .output()
        .expect("run ferry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn signed_event(api: &Api, id: &str, n: usize) -> reqwest::RequestBuilder {
    let body = json!({"type": "order.paid", "n": n}).to_string();
    let msg = format!("msg_{n}");
    let ts = chrono::Utc::now().timestamp();
    let sig = signing::sign(
        &signing::key_from_secret(IN_SECRET),
        &msg,
        ts,
        body.as_bytes(),
    );
    api.http
        .post(format!("{}/v1/hooks/{id}", api.base))
        .header("webhook-id", msg)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_receiver_is_repaired_by_replaying_its_dead_letters_through_the_cli() {
    let (receiver, url) = Receiver::start().await;
    receiver.status.store(500, Ordering::SeqCst);
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    let id = create_integration(&api, &url, 2).await;
    let other = create_integration(&api, &url, 2).await;

    // 40 events for the integration, 5 for another; all die.
    let mut event_ids = Vec::new();
    for n in 0..40 {
        let r = signed_event(&api, &id, n).send().await.expect("hook");
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.expect("json");
        event_ids.push(v["event_id"].as_str().expect("event id").to_string());
    }
    for n in 100..105 {
        assert_eq!(
            signed_event(&api, &other, n)
                .send()
                .await
                .expect("hook")
                .status()
                .as_u16(),
            202
        );
    }
    eventually(60, "45 dead letters", || async {
        dead_letter_ids(&api, &id).await.len() == 40
            && dead_letter_ids(&api, &other).await.len() == 5
    })
    .await;

    // One cause, one failure group, over both integrations; the CLI lists
    // it and counts its dead letters for a replay.
    let (ok, out, err) = cli(&node, &["failures", "list", "--output", "json"]);
    assert!(ok, "{err}");
    let groups: Value = serde_json::from_str(out.trim()).expect("json");
    let groups = groups["items"].as_array().expect("items").clone();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(
        (
            groups[0]["dead_letters"].as_i64(),
            groups[0]["integrations"].as_i64()
        ),
        (Some(45), Some(2))
    );
    assert_eq!(groups[0]["message"], "HTTP 500");
    let group = groups[0]["id"].as_str().expect("id").to_string();
    let (ok, out, err) = cli(
        &node,
        &[
            "dlq",
            "replay",
            "--all",
            "--failure-group",
            &group,
            "--dry-run",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "45 dead letters would be replayed");
    let (ok, out, err) = cli(&node, &["failures", "ack", &group]);
    assert!(ok && out.contains("acknowledged"), "{out} {err}");

    // The dry run counts only this integration's.
    let (ok, out, err) = cli(
        &node,
        &["dlq", "replay", "--all", "--integration", &id, "--dry-run"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "40 dead letters would be replayed");
    let (ok, out, err) = cli(
        &node,
        &[
            "dlq",
            "replay",
            "--all",
            "--integration",
            &id,
            "--dry-run",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let counted: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(counted["matched"], 40);
    assert!(receiver.received().is_empty(), "a dry run replays nothing");

    // Fixed; replayed; the CLI waits for the operation to finish.
    receiver.status.store(200, Ordering::SeqCst);
    let (ok, out, err) = cli(&node, &["dlq", "replay", "--all", "--integration", &id]);
    assert!(ok, "{err}");
    assert!(out.starts_with("replayed 40 (operation "), "{out}");
    eventually(30, "all 40 events delivered", || async {
        receiver.received().len() >= 40
    })
    .await;
    let mut got: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|(wid, _)| wid)
        .collect();
    got.sort();
    let mut want = event_ids.clone();
    want.sort();
    assert_eq!(got, want, "each event once, under its original event id");

    // The dead letters say they were replayed, and by which run.
    let (ok, out, err) = cli(
        &node,
        &[
            "dlq",
            "list",
            "--integration",
            &id,
            "--limit",
            "1000",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 40);
    for d in items {
        assert!(
            d["replayed_at"].is_string() && d["replay_run_id"].is_string(),
            "{d}"
        );
    }
    let run = items[0]["replay_run_id"].as_str().expect("run");
    let (ok, out, _) = cli(&node, &["runs", "show", run, "--output", "json"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["trigger"], "replay");
    assert_eq!(shown["replay_of"], items[0]["id"]);
    assert_eq!(
        dead_letter_ids(&api, &other).await.len(),
        5,
        "the other integration's are untouched"
    );
    // A second replay finds nothing left to do.
    let (ok, out, _) = cli(&node, &["dlq", "replay", "--all", "--integration", &id]);
    assert!(ok);
    assert!(out.starts_with("replayed 0"), "{out}");
    // The operation is there to inspect; tables for humans.
    let (ok, out, _) = cli(&node, &["operations", "list"]);
    assert!(ok);
    assert!(
        out.starts_with("ID") && out.contains("dead_letter_replay"),
        "{out}"
    );

    // Errors: one line, non-zero exit.
    let (ok, _, err) = cli(&node, &["dlq", "show", "not-an-id"]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("404 not_found"), "{err}");
    let (ok, _, err) = cli(&node, &["dlq", "replay"]);
    assert!(!ok);
    assert!(err.contains("give a dead-letter id, or --all"), "{err}");
    assert!(node.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_and_every_run_log_line_names_its_run() {
    let (receiver, url) = Receiver::start().await;
    let dir = TempDir::new("ferry-secrets");
    let node = Node::launch_with(
        &dir.0,
        &[(
            "FERRY_LOG",
            "debug,sqlx=warn,hyper=info,reqwest=info".to_string(),
        )],
        &["--log-format", "json"],
    );
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    // A secret that also appears nowhere else: its key bytes.
    let marker_out = "b3V0Ym91bmQtc2lnbmluZy1rZXktZm9yLXRlc3Rz";
    let marker_in = "aW5ib3VuZC1zaWduaW5nLWtleS1mb3ItdGVzdHM";
    let id = create_integration(&api, &url, 2).await;
    let (s, _) = api
        .post(&format!("/v1/integrations/{id}/runs"), r#"{"k":1}"#)
        .await;
    assert_eq!(s, 202);
    assert_eq!(
        signed_event(&api, &id, 1)
            .send()
            .await
            .expect("hook")
            .status()
            .as_u16(),
        202
    );
    eventually(20, "two deliveries", || async {
        receiver.received().len() >= 2
    })
    .await;
    // A failing run too: its errors are logged.
    receiver.status.store(500, Ordering::SeqCst);
    let (s, _) = api.post(&format!("/v1/integrations/{id}/runs"), "").await;
    assert_eq!(s, 202);
    eventually(20, "a dead letter", || async {
        !dead_letter_ids(&api, &id).await.is_empty()
    })
    .await;
    let (s, _) = api
        .call(
            Method::PATCH,
            &format!("/v1/integrations/{id}"),
            Some(ADMIN),
            Some(&json!({"secrets": {"signing_secret": OUT_SECRET}}).to_string()),
        )
        .await;
    assert_eq!(s, 200);

    // Not in any response.
    let mut seen = String::new();
    for path in [
        format!("/v1/integrations/{id}"),
        "/v1/integrations".to_string(),
        "/v1/runs?limit=1000".to_string(),
        "/v1/dead-letters".to_string(),
        "/v1/audit?limit=1000".to_string(),
        format!("/v1/integrations/{id}/state"),
        "/v1/openapi.json".to_string(),
        "/metrics".to_string(),
    ] {
        let (_, v) = api.call(Method::GET, &path, Some(ADMIN), None).await;
        seen.push_str(&v.to_string());
    }
    for run in api.get("/v1/runs?limit=1000").await["items"]
        .as_array()
        .expect("runs")
    {
        let id = run["id"].as_str().expect("id");
        seen.push_str(&api.get(&format!("/v1/runs/{id}")).await.to_string());
    }
    assert!(seen.contains("signing_secret"), "names are shown");
    for m in [marker_out, marker_in] {
        assert!(!seen.contains(m), "a secret value in an API response");
    }

    // Not in the logs, which are JSON, and whose run lines carry the run.
    let log = node.log();
    assert!(!log.is_empty());
    for m in [marker_out, marker_in] {
        assert!(!log.contains(m), "a secret value in the log");
    }
    let mut run_lines = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        let msg = v["message"].as_str().unwrap_or_default();
        if msg == "run succeeded"
            || msg == "run failed"
            || v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("ferry_connectors"))
        {
            run_lines += 1;
            for field in ["run_id", "integration_id", "tenant"] {
                assert!(v[field].is_string(), "{field} missing: {line}");
            }
            assert_eq!(v["integration_id"], id.as_str());
            assert_eq!(v["tenant"], "acme");
        }
    }
    assert!(run_lines >= 3, "runs were logged: {run_lines}");
    assert!(node.stop().success());

    // Not in the database files in plaintext.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir.0).expect("data dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            bytes.extend(std::fs::read(&p).expect("read"));
        }
    }
    assert!(bytes.len() > 4096, "the database is there");
    let text = String::from_utf8_lossy(&bytes);
    for m in [marker_out, marker_in, OUT_SECRET, IN_SECRET] {
        assert!(!text.contains(m), "a secret in plaintext on disk");
    }
}

/// Revisions through the binary: the list shows names of secrets only, the
/// difference names each changed field and each secret as changed or not,
/// a dead letter names its revision, a replay runs on the original or the
/// current revision as asked, and an old revision comes back as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_listed_compared_restored_and_chosen_by_a_replay() {
    let (old, old_url) = Receiver::start().await;
    old.status.store(500, Ordering::SeqCst);
    let (new, new_url) = Receiver::start().await;
    let node = Node::start();
    let api = Api {
        http: reqwest::Client::new(),
        base: node.base.clone(),
    };
    let id = create_integration(&api, &old_url, 1).await;
    let (s, _) = api.post(&format!("/v1/integrations/{id}/runs"), "").await;
    assert_eq!(s, 202);
    eventually(30, "a dead letter on revision 1", || async {
        dead_letter_ids(&api, &id).await.len() == 1
    })
    .await;
    let first_dl = dead_letter_ids(&api, &id).await.remove(0);

    // Revision 2: another URL and another inbound secret.
    let (s, v) = api
        .call(
            Method::PATCH,
            &format!("/v1/integrations/{id}"),
            Some(ADMIN),
            Some(&json!({"config": {"url": new_url}, "secrets": {"inbound_secret": "whsec_rotated"}}).to_string()),
        )
        .await;
    assert_eq!((s, v["revision"].as_i64()), (200, Some(2)), "{v}");

    let revs = api.get(&format!("/v1/integrations/{id}/revisions")).await;
    let items = revs["items"].as_array().expect("items");
    let numbers: Vec<i64> = items
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .collect();
    assert_eq!(numbers, vec![2, 1], "newest first");
    assert_eq!(items[1]["config"]["url"], old_url.as_str());
    let text = revs.to_string();
    for secret in [IN_SECRET, OUT_SECRET, "whsec_rotated"] {
        assert!(
            !text.contains(secret),
            "a secret value in the revisions: {text}"
        );
    }
    let page = api
        .get(&format!("/v1/integrations/{id}/revisions?limit=1"))
        .await;
    let next = page["next_cursor"].as_str().expect("a second page");
    let more = api
        .get(&format!(
            "/v1/integrations/{id}/revisions?limit=1&cursor={next}"
        ))
        .await;
    assert_eq!(more["items"][0]["revision"], 1);

    let d = api
        .get(&format!("/v1/integrations/{id}/revisions/diff?from=1"))
        .await;
    assert_eq!((d["from"].as_i64(), d["to"].as_i64()), (Some(1), Some(2)));
    assert_eq!(
        d["changes"],
        json!([{"field": "config.url", "before": old_url, "after": new_url}])
    );
    assert_eq!(
        d["secrets"],
        json!([
            {"name": "inbound_secret", "change": "changed"},
            {"name": "signing_secret", "change": "unchanged"}
        ])
    );
    assert!(!d.to_string().contains("whsec_rotated"));
    let (s, e) = api
        .call(
            Method::GET,
            &format!("/v1/integrations/{id}/revisions/diff?from=99"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((s, e["error"]["code"].is_string()), (404, true), "{e}");
    let (ok, out, err) = cli(&node, &["integrations", "diff", &id, "--from", "1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("config.url") && out.contains("secret inbound_secret: changed"),
        "{out}"
    );

    // The dead letter names its revision and connector version.
    let dl = api.get(&format!("/v1/dead-letters/{first_dl}")).await;
    assert_eq!(
        (dl["revision"].as_i64(), dl["connector_version"].as_str()),
        (Some(1), Some("1.0.0")),
        "the revision, and the exact version that ran"
    );

    // Replayed on the original revision, it goes to the old URL and dies again.
    let (s, v) = api
        .post(
            &format!("/v1/dead-letters/{first_dl}/replay"),
            r#"{"revision":"original"}"#,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    eventually(30, "the original-revision replay dead-lettered", || async {
        dead_letter_ids(&api, &id).await.len() == 1
            && !dead_letter_ids(&api, &id).await.contains(&first_dl)
    })
    .await;
    assert!(new.received().is_empty(), "nothing reached the new URL");
    let second_dl = dead_letter_ids(&api, &id).await.remove(0);
    let dl = api.get(&format!("/v1/dead-letters/{second_dl}")).await;
    assert_eq!(dl["revision"].as_i64(), Some(1));
    // On the current revision (through the CLI), it is delivered.
    let (ok, _, err) = cli(&node, &["dlq", "replay", &second_dl]);
    assert!(ok, "{err}");
    eventually(30, "delivered to the new URL", || async {
        new.received().len() == 1
    })
    .await;
    let (s, e) = api
        .post(
            &format!("/v1/dead-letters/{second_dl}/replay"),
            r#"{"revision":"latest"}"#,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{e}"
    );

    // Revision 1 restored as revision 3: nothing differs from 1.
    let (ok, out, err) = cli(
        &node,
        &["integrations", "restore", &id, "1", "--output", "json"],
    );
    assert!(ok, "{err}");
    let restored: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(restored["revision"], 3);
    assert_eq!(restored["config"]["url"], old_url.as_str());
    let d = api
        .get(&format!("/v1/integrations/{id}/revisions/diff?from=1&to=3"))
        .await;
    assert_eq!(d["changes"], json!([]));
    assert!(
        d["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .all(|s| s["change"] == "unchanged"),
        "{d}"
    );
    let (s, e) = api
        .post(&format!("/v1/integrations/{id}/revisions/7/restore"), "")
        .await;
    assert_eq!(s, 404, "{e}");
    let audit = api.get("/v1/audit?limit=1000").await;
    assert!(
        audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["action"] == "integration.restore" && e["detail"]["restored"] == 1),
        "{audit}"
    );
    assert!(node.stop().success());
}
