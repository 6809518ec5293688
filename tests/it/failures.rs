//! Failure groups: a thousand dead letters from three causes across fifty
//! integrations form exactly three groups, counted per tenant; a fourth
//! cause opens a fourth; a resolved group reopens when its cause comes
//! back; concurrent failures of one cause count into one row; a group's
//! dead letters replay as one bulk replay.

use ferry_queue::failures::{GroupFilter, GroupStatus};
use ferry_queue::{DeadLetterFilter, NewJob, Queue, Step};
use ferry_store::Db;

use crate::common::*;

const T0: i64 = 1_800_000_000_000;

/// The three causes, as their errors vary from one failure to the next.
fn cause(kind: usize, n: usize) -> (String, &'static str) {
    match kind {
        0 => (
            format!("Typeform refused the api_token: HTTP 401: token for account {} is invalid", 1000 + n % 7),
            "auth",
        ),
        1 => (
            format!(
                "HTTP 500: internal error (request id {}, after {} ms)",
                uuid::Uuid::new_v4(),
                100 + n
            ),
            "transient",
        ),
        _ => (
            format!("HTTP 422: record {n} (guest{n}@example.com) rejected: mapped field FIRSTNAME is empty"),
            "permanent",
        ),
    }
}

/// Fails every due job once with `error(n)`; `retry` sends them back
/// instead of to the dead letters. Returns how many failed.
async fn fail_all(
    q: &Queue,
    now: i64,
    retry: bool,
    error: impl Fn(usize) -> (String, &'static str),
) -> usize {
    let mut n = 0;
    loop {
        // The event endpoint's deliveries (tenant ops) are left queued.
        let claimed = q
            .claim("w", 500, 60_000, now, &["ops".to_string()])
            .await
            .expect("claim");
        if claimed.is_empty() {
            return n;
        }
        for j in &claimed {
            let (text, class) = error(n);
            let f = failed(
                j,
                "1.0.0",
                text,
                class,
                now,
                retry.then_some(now + 1_000_000),
            );
            assert!(q.fail(&f, now).await.expect("fail"));
            n += 1;
        }
    }
}

/// The `failure_group.*` events queued for the endpoint, by type.
async fn group_events(db: &Db) -> (i64, i64) {
    let of = |kind: &str| {
        format!("SELECT COUNT(*) FROM jobs WHERE connector = 'events' AND payload LIKE '%\"type\":\"{kind}\"%'")
    };
    (
        count(db, &of("failure_group.opened")).await,
        count(db, &of("failure_group.reopened")).await,
    )
}

async fn suite(db: Db, second: Option<Db>) {
    let q = Queue::new(db.clone());
    // A global endpoint for failure-group events.
    let mut endpoint = spec("events", "ops", None);
    endpoint.config = serde_json::json!({
        "channel": "webhook", "url": "http://127.0.0.1:9/events", "global": true,
        "event_types": ["failure_group.*"]
    });
    integration(&db, &endpoint, None, T0).await;
    // 50 integrations, 40 of acme and 10 of globex.
    let mut integrations = Vec::new();
    for k in 0..50 {
        let tenant = if k < 40 { "acme" } else { "globex" };
        integrations.push(integration(&db, &spec("typeform", tenant, None), None, T0).await);
    }
    // 1,000 runs, 20 per integration, each cause on a third of them.
    let jobs: Vec<NewJob> = (0..1000)
        .map(|n| event_job(&integrations[n % 50], T0, 1, &format!(r#"{{"n":{n}}}"#)))
        .collect();
    q.enqueue(&jobs, T0).await.expect("enqueue");
    let n = fail_all(&q, T0, false, |n| cause((n / 50) % 3, n)).await;
    assert_eq!(n, 1000);

    let (groups, next) = q
        .list_failure_groups(&GroupFilter::default(), 50, None)
        .await
        .expect("groups");
    assert!(next.is_none());
    assert_eq!(groups.len(), 3, "{groups:#?}");
    assert_eq!(
        group_events(&db).await,
        (3, 0),
        "one opened event per group"
    );
    let total: i64 = groups.iter().map(|g| g.dead_letters).sum();
    assert_eq!(total, 1000);
    for g in &groups {
        assert_eq!(g.attempts, g.dead_letters, "each failed once");
        assert_eq!(g.integrations, 50, "{}", g.message);
        assert_eq!(g.status, GroupStatus::Open);
        assert_eq!((g.first_seen, g.last_seen), (T0, T0));
    }
    let by_class = |class: &str| {
        groups
            .iter()
            .find(|g| g.class == class)
            .unwrap_or_else(|| panic!("no {class} group"))
            .clone()
    };
    let server = by_class("transient");
    assert_eq!(
        server.message,
        "HTTP 500: internal error (request id <id>, after # ms)"
    );
    assert!(server
        .sample
        .starts_with("HTTP 500: internal error (request id "));
    assert_eq!(
        by_class("permanent").message,
        "HTTP 422: record # (<email>) rejected: mapped field FIRSTNAME is empty"
    );

    // Counted per tenant: globex sees its 10 integrations' share.
    let (theirs, _) = q
        .list_failure_groups(
            &GroupFilter {
                tenant: Some("globex".into()),
                ..Default::default()
            },
            50,
            None,
        )
        .await
        .expect("groups");
    assert_eq!(theirs.len(), 3);
    assert_eq!(theirs.iter().map(|g| g.dead_letters).sum::<i64>(), 200);
    assert!(theirs.iter().all(|g| g.integrations == 10));

    // Each dead letter names its group; a group replays as one bulk replay.
    let in_group = DeadLetterFilter {
        failure_group: Some(server.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        q.count_replayable(&in_group).await.expect("count"),
        server.dead_letters
    );
    let op = q
        .start_replay(
            &in_group,
            ferry_queue::ReplayRevision::Current,
            "t",
            "node-a",
            T0 + 10,
        )
        .await
        .expect("replay");
    while q
        .step_operation(op.id, "node-a", T0 + 20)
        .await
        .expect("step")
        != Step::Finished
    {}
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE replay_of IS NOT NULL").await,
        server.dead_letters
    );

    // The replays fail again, but retry: attempts grow, dead letters not.
    fail_all(&q, T0 + 100, true, |n| cause(1, n)).await;
    let again = q.get_failure_group(&server.id, None).await.expect("group");
    assert_eq!(
        (again.attempts, again.dead_letters, again.last_seen),
        (server.attempts * 2, server.dead_letters, T0 + 100)
    );

    // Resolved, then the cause comes back: it reopens. Acknowledged stays so.
    q.set_failure_group_status(&server.id, GroupStatus::Resolved, "token:ops", T0 + 200)
        .await
        .expect("resolve");
    let auth = by_class("auth");
    q.set_failure_group_status(&auth.id, GroupStatus::Acknowledged, "token:ops", T0 + 200)
        .await
        .expect("ack");
    let (resolved, _) = q
        .list_failure_groups(
            &GroupFilter {
                status: Some(GroupStatus::Resolved),
                ..Default::default()
            },
            50,
            None,
        )
        .await
        .expect("groups");
    assert_eq!(resolved.len(), 1);
    let jobs: Vec<NewJob> = (0..4)
        .map(|n| event_job(&integrations[n], T0 + 300, 1, "{}"))
        .collect();
    q.enqueue(&jobs, T0 + 300).await.expect("enqueue");
    fail_all(&q, T0 + 1_000_200, false, |n| cause(n % 2, n)).await;
    let reopened = q.get_failure_group(&server.id, None).await.expect("group");
    assert_eq!((reopened.status, reopened.reopened), (GroupStatus::Open, 1));
    assert_eq!(
        reopened.status_by.as_deref(),
        Some("token:ops"),
        "who resolved it is kept"
    );
    let acked = q.get_failure_group(&auth.id, None).await.expect("group");
    assert_eq!(acked.status, GroupStatus::Acknowledged);
    assert_eq!(
        group_events(&db).await,
        (3, 1),
        "the reopening is sent once"
    );

    // A fourth cause opens a fourth group.
    let jobs: Vec<NewJob> = (0..3)
        .map(|n| event_job(&integrations[n], T0 + 2_000_000, 1, "{}"))
        .collect();
    q.enqueue(&jobs, T0 + 2_000_000).await.expect("enqueue");
    fail_all(&q, T0 + 2_000_000, false, |n| {
        (format!("SMTP: 554 5.7.1 message {n} refused"), "permanent")
    })
    .await;
    let (groups, _) = q
        .list_failure_groups(&GroupFilter::default(), 50, None)
        .await
        .expect("groups");
    assert_eq!(groups.len(), 4);
    assert_eq!(
        group_events(&db).await,
        (4, 1),
        "the fourth cause sends one failure_group.opened"
    );
    // Pages by id.
    let (first, next) = q
        .list_failure_groups(&GroupFilter::default(), 3, None)
        .await
        .expect("page");
    let (rest, end) = q
        .list_failure_groups(&GroupFilter::default(), 3, next.as_deref())
        .await
        .expect("page");
    assert_eq!((first.len(), rest.len(), end), (3, 1, None));
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action IN ('failure_group.resolve', 'failure_group.acknowledge')"
        )
        .await,
        2
    );

    // Failures of one cause on many connections at once count into one row.
    let jobs: Vec<NewJob> = (0..200)
        .map(|n| event_job(&integrations[n % 50], T0 + 3_000_000, 1, "{}"))
        .collect();
    q.enqueue(&jobs, T0 + 3_000_000).await.expect("enqueue");
    let claimed = q
        .claim("w", 200, 60_000, T0 + 3_000_000, &["ops".to_string()])
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 200);
    // Half the failures through another connection pool (another node,
    // on PostgreSQL).
    let other = second.map(Queue::new).unwrap_or_else(|| q.clone());
    let tasks: Vec<_> = claimed
        .chunks(25)
        .enumerate()
        .map(|(i, chunk)| {
            let q = if i % 2 == 0 { q.clone() } else { other.clone() };
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for j in chunk {
                    let f = failed(
                        &j,
                        "9.9.9",
                        format!("HTTP 502: gateway {}", uuid::Uuid::new_v4()),
                        "transient",
                        T0,
                        None,
                    );
                    // A lost race is retried, as the worker's completion does.
                    loop {
                        match q.fail(&f, T0 + 3_000_000).await {
                            Ok(done) => {
                                assert!(done);
                                break;
                            }
                            Err(e) if e.is_unavailable() => continue,
                            Err(e) => panic!("fail: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let (groups, _) = q
        .list_failure_groups(&GroupFilter::default(), 50, None)
        .await
        .expect("groups");
    let gateway: Vec<_> = groups
        .iter()
        .filter(|g| g.connector_version == "9.9.9")
        .collect();
    assert_eq!(gateway.len(), 1);
    assert_eq!(
        (gateway[0].dead_letters, gateway[0].integrations),
        (200, 50)
    );
    assert_eq!(
        group_events(&db).await,
        (5, 1),
        "200 concurrent failures of a new cause on two nodes send one event"
    );
    // Every delivery goes to the endpoint, as a queued run of it.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE connector = 'events' AND tenant = 'ops' AND state = 'available'").await,
        6
    );
}

#[tokio::test]
async fn failures_form_one_group_per_cause_sqlite() {
    let (db, _dir) = sqlite_db().await;
    suite(db, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_form_one_group_per_cause_postgres() {
    let Some(db) = pg_db("failure_groups").await else {
        return;
    };
    let second = ferry_store::Db::connect(&ferry_store::DbOptions::new(db.url.clone()))
        .await
        .expect("a second pool");
    suite(db, Some(second)).await;
}
