//! One storage and queue conformance suite; every engine must pass it.
//! Time is passed in explicitly, so leases and backoff are exact.

use ferry_core::{Rejection, Trigger};
use ferry_queue::{AttemptEntry, DeadLetterFilter, Failure, NewJob, Queue, RunFilter, Success};
use ferry_store::integrations;
use ferry_store::Db;
use serde_json::json;

use crate::common::*;

const T0: i64 = 1_800_000_000_000;

fn job(i: &ferry_store::Integration, run_at: i64, key: Option<&str>) -> NewJob {
    NewJob {
        idempotency_key: key.map(str::to_string),
        ..event_job(i, run_at, 2, r#"{"n":1}"#)
    }
}

fn entry(attempt: i64, outcome: &str, error: Option<&str>) -> AttemptEntry {
    AttemptEntry {
        attempt,
        started_at: T0,
        finished_at: T0,
        outcome: outcome.into(),
        error: error.map(str::to_string),
        class: None,
        worker: Some("w".into()),
        role: None,
    }
}

fn success(j: &ferry_queue::ClaimedJob) -> Success {
    Success {
        id: j.id,
        integration_id: j.integration_id,
        overlap: false,
        lease_token: j.lease_token.clone(),
        connector_version: "1.0.0".into(),
        records_ok: 3,
        records_rejected: 1,
        rejections: vec![Rejection {
            record: "r1".into(),
            reason: "contact is suppressed".into(),
        }],
        attempt: entry(j.attempt, "succeeded", None),
        state: None,
    }
}

fn failure(j: &ferry_queue::ClaimedJob, retry_at: Option<i64>, err: &str) -> Failure {
    Failure {
        id: j.id,
        integration_id: j.integration_id,
        overlap: false,
        lease_token: j.lease_token.clone(),
        connector_version: "1.0.0".into(),
        attempt: entry(j.attempt, "failed", Some(err)),
        retry_at,
    }
}

async fn suite(db: Db) {
    let key = key();
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;

    // Integrations: revisions, CAS on revision, secrets sealed.
    let mut s2 = spec("webhook", "acme", None);
    s2.config = json!({"url": "http://example.test/v2"});
    // The same write twice: the second names a revision that is gone.
    let update_rev1 = || {
        q.edit_integration(
            &key,
            i.id,
            1,
            &s2,
            integrations::NextFire::Set(None),
            T0,
            "test",
        )
    };
    let i2 = update_rev1().await.expect("update");
    assert_eq!(i2.revision, 2);
    assert!(matches!(
        update_rev1().await,
        Err(ferry_store::Error::Conflict(_))
    ));
    let r1 = integrations::revision(&db, &key, i.id, 1)
        .await
        .expect("rev 1");
    assert_eq!(r1.config, json!({"url": "http://127.0.0.1:9/x"}));
    assert_eq!(r1.secrets["signing_secret"], "s3cret-value");
    let sealed: Vec<String> = sqlx::query_scalar("SELECT secrets_enc FROM integration_revisions")
        .fetch_all(&db.pool)
        .await
        .expect("read");
    assert!(
        sealed.iter().all(|s| !s.contains("s3cret")),
        "secrets are encrypted at rest"
    );
    let (listed, _) = integrations::list(&db, Some("acme"), 10, None)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);

    // Enqueue dedupes by key, even after the first job has finished.
    let a = job(&i, T0, Some("evt-1"));
    let first = q
        .enqueue(std::slice::from_ref(&a), T0)
        .await
        .expect("enqueue")[0]
        .clone();
    assert!(!first.duplicate);
    let again = q
        .enqueue(&[job(&i, T0, Some("evt-1"))], T0)
        .await
        .expect("enqueue dup")[0]
        .clone();
    assert!(again.duplicate);
    assert_eq!((again.job_id, again.event_id), (a.id, a.event_id));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs").await, 1);
    // One batch holding a known key, a new key twice, and no key: the
    // repeat inside the batch points at the first copy in it.
    let (b, c) = (job(&i, T0, Some("evt-2")), job(&i, T0, Some("evt-2")));
    let batch = q
        .enqueue(
            &[job(&i, T0, Some("evt-1")), b.clone(), c, job(&i, T0, None)],
            T0,
        )
        .await
        .expect("enqueue mixed batch");
    let seen: Vec<(bool, uuid::Uuid)> = batch.iter().map(|e| (e.duplicate, e.job_id)).collect();
    assert_eq!(
        seen[..3],
        [(true, a.id), (false, b.id), (true, b.id)],
        "known key, new key, its repeat"
    );
    assert!(!batch[3].duplicate);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs").await, 3);
    sqlx::query("DELETE FROM jobs WHERE id <> $1")
        .bind(a.id.to_string())
        .execute(&db.pool)
        .await
        .expect("back to one job");
    // Keys still hold once merged (SQLite moves its key tail into
    // `job_keys`; PostgreSQL has no tail, and this does nothing).
    q.merge_key_tail().await.expect("merge");
    let merged = q
        .enqueue(
            &[job(&i, T0, Some("evt-1")), job(&i, T0, Some("evt-2"))],
            T0,
        )
        .await
        .expect("enqueue after the merge");
    assert_eq!(
        merged
            .iter()
            .map(|e| (e.duplicate, e.job_id))
            .collect::<Vec<_>>(),
        [(true, a.id), (true, b.id)]
    );

    // Claims: batch, only due jobs, distinct fencing tokens.
    q.enqueue(
        &[
            job(&i, T0, None),
            job(&i, T0 + 1, None),
            job(&i, T0 + 60_000, None),
        ],
        T0,
    )
    .await
    .expect("enqueue more");
    let claimed = q.claim("w1", 2, 1_000, T0 + 10, &[]).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert_ne!(claimed[0].lease_token, claimed[1].lease_token);
    let rest = q
        .claim("w1", 10, 1_000, T0 + 10, &[])
        .await
        .expect("claim rest");
    assert_eq!(rest.len(), 1, "the job due in a minute is not claimed");
    assert!(q
        .claim("w1", 10, 1_000, T0 + 10, &["acme".to_string()])
        .await
        .expect("claim excl")
        .is_empty());

    // Completion needs the token.
    let mut wrong = success(&claimed[0]);
    wrong.lease_token = "stale".into();
    assert_eq!(
        q.complete(&[wrong], T0 + 20).await.expect("complete"),
        vec![claimed[0].id]
    );
    assert!(q
        .complete(&[success(&claimed[0]), success(&claimed[1])], T0 + 20)
        .await
        .expect("complete")
        .is_empty());
    let run = q.get_run(claimed[0].id).await.expect("run");
    assert_eq!(run.status, ferry_core::RunStatus::Succeeded);
    assert_eq!((run.records_ok, run.records_rejected), (3, 1));
    assert_eq!(run.connector_version.as_deref(), Some("1.0.0"));
    assert_eq!(
        (run.attempts, run.started_at, run.finished_at),
        (1, Some(T0 + 10), Some(T0 + 20))
    );
    assert_eq!(
        (run.event_id, run.trigger, run.revision),
        (claimed[0].event_id, Trigger::Event, i.revision)
    );
    let log = run.attempt_log.clone().expect("attempt log");
    assert_eq!(
        log.iter()
            .map(|e| (e.attempt, e.outcome.as_str(), e.worker.as_deref()))
            .collect::<Vec<_>>(),
        vec![(1, "succeeded", Some("w"))]
    );
    assert_eq!(
        run.rejections.as_deref().unwrap_or_default()[0].reason,
        "contact is suppressed"
    );
    assert!(
        q.enqueue(&[job(&i, T0, Some("evt-1"))], T0)
            .await
            .expect("dup after finish")[0]
            .duplicate
    );

    // Failure: retry at the given time, then dead with every error.
    let f = &rest[0];
    assert!(q
        .fail(&failure(f, Some(T0 + 5_000), "HTTP 500: boom"), T0 + 30)
        .await
        .expect("fail"));
    let listed = q
        .list_runs(
            &RunFilter {
                status: Some(ferry_core::RunStatus::Retrying),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .expect("runs");
    assert_eq!(listed.0.len(), 1);
    assert!(
        q.claim("w1", 10, 1_000, T0 + 4_999, &[])
            .await
            .expect("early")
            .is_empty(),
        "not before its backoff"
    );
    let again = q
        .claim("w1", 10, 1_000, T0 + 5_000, &[])
        .await
        .expect("retry claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert!(q
        .fail(&failure(&again[0], None, "HTTP 500: still"), T0 + 5_100)
        .await
        .expect("dead"));
    let (dls, _) = q
        .list_dead_letters(&DeadLetterFilter::default(), 10, None)
        .await
        .expect("dls");
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(
        dl.errors,
        vec!["HTTP 500: boom".to_string(), "HTTP 500: still".to_string()]
    );
    assert_eq!(dl.payload, json!({"n": 1}));
    assert_eq!(dl.attempts, 2);
    let q_match = DeadLetterFilter {
        q: Some("BOOM".into()),
        ..Default::default()
    };
    assert_eq!(
        q.list_dead_letters(&q_match, 10, None)
            .await
            .expect("q")
            .0
            .len(),
        1
    );
    let q_miss = DeadLetterFilter {
        q: Some("timeout".into()),
        ..Default::default()
    };
    assert_eq!(
        q.list_dead_letters(&q_miss, 10, None)
            .await
            .expect("q")
            .0
            .len(),
        0
    );
    let in_window = DeadLetterFilter {
        since: Some(T0),
        until: Some(T0 + 10_000),
        ..Default::default()
    };
    assert_eq!(q.count_replayable(&in_window).await.expect("count"), 1);
    let later = DeadLetterFilter {
        since: Some(T0 + 10_000),
        ..Default::default()
    };
    assert_eq!(q.count_replayable(&later).await.expect("count"), 0);

    // Replay: a new linked job on the current revision; lineage both ways.
    let run_id = q
        .replay(
            dl.id,
            ferry_queue::ReplayRevision::Current,
            "tester",
            T0 + 6_000,
        )
        .await
        .expect("replay");
    let replayed = q.get_run(run_id).await.expect("replayed run");
    assert_eq!(replayed.replay_of, Some(dl.id));
    assert_eq!(replayed.trigger, Trigger::Replay);
    assert_eq!(
        replayed.event_id, dl.event_id,
        "same event id, so receivers can deduplicate"
    );
    assert_eq!(replayed.revision, 2);
    let dl_after = q.get_dead_letter(dl.id).await.expect("dl");
    assert_eq!(dl_after.replay_run_id, Some(run_id));
    assert_eq!(
        q.count_replayable(&DeadLetterFilter::default())
            .await
            .expect("count"),
        0
    );
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'dead_letter.replay'"
        )
        .await
            == 1
    );
    let rj = q
        .claim("A", 10, 1_000, T0 + 7_000, &[])
        .await
        .expect("claim replay");
    assert_eq!(
        rj.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![run_id],
        "only the replay is due"
    );
}

#[tokio::test]
async fn conformance_sqlite() {
    let (db, _dir) = sqlite_db().await;
    suite(db).await;
}

/// The single-node key filter is loaded from every `hook:` key in the store
/// (more than one page of them) and every keyed event still in the spool;
/// keys it never saw are answered "new" without the store.
#[tokio::test]
async fn the_key_filter_loads_the_store_and_the_spool_sqlite() {
    use ferry_queue::keys::{job_key, key_hash, SeenKeys, HOOK_PREFIX};
    use ferry_queue::spool::{EventJob, Spool, SpoolConfig, SpooledEvent};

    let (db, dir) = sqlite_db().await;
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    let stored: Vec<String> = (0..6500)
        .map(|n| format!("hook:{}:stored-{n}", i.id))
        .collect();
    for chunk in stored.chunks(1000) {
        let jobs: Vec<NewJob> = chunk.iter().map(|k| job(&i, T0, Some(k))).collect();
        q.enqueue(&jobs, T0).await.expect("enqueue");
    }
    // Keys that are not a provider's are left out.
    q.enqueue(&[job(&i, T0, Some("fire:x:1"))], T0)
        .await
        .expect("enqueue");
    assert_eq!(
        q.count_keys_with_prefix(HOOK_PREFIX).await.expect("count"),
        6500
    );

    let (spool, _) = Spool::open(SpoolConfig::new(dir.0.join("spool"), 1 << 20)).expect("spool");
    let pending = SpooledEvent {
        event_id: ferry_core::new_id(),
        integration_id: i.id,
        received_at: T0,
        idempotency_key: Some("pending-1".into()),
        job: Some(EventJob {
            tenant: "acme".into(),
            connector: "webhook".into(),
            revision: 1,
            max_attempts: 3,
            payload: "{}".into(),
        }),
        held: None,
    };
    let pending_key = job_key(&pending, Some("pending-1"));
    spool.append(pending).await.expect("append");

    let seen = SeenKeys::new();
    assert!(
        seen.maybe_seen(key_hash("hook:anything")),
        "unloaded: maybe"
    );
    let n = seen.rebuild(&spool, &q).await.expect("rebuild");
    assert_eq!(n, 6501);
    assert!(stored.iter().all(|k| seen.maybe_seen(key_hash(k))));
    assert!(seen.maybe_seen(key_hash(&pending_key)));
    let unseen = (0..1000)
        .filter(|n| seen.maybe_seen(key_hash(&format!("hook:{}:new-{n}", i.id))))
        .count();
    assert_eq!(unseen, 0, "a near-empty filter has no false positives");
    spool.close();
}

/// SQLite appends new keys to a tail found through a map in memory, and
/// merges it into `job_keys`: a key is a duplicate wherever it is, a key
/// rolled back is not, a row under another key's hash is not taken for the
/// key, and a restart finds the tail again.
#[tokio::test]
async fn the_key_tail_finds_keys_before_and_after_a_merge_sqlite() {
    use ferry_queue::keys::key_hash;

    let (db, dir) = sqlite_db().await;
    let q = Queue::new(db.clone());
    let tail = q.tail.clone().expect("SQLite has a key tail");
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    let keys: Vec<String> = (0..1000).map(|n| format!("hook:{}:k-{n}", i.id)).collect();
    let first: Vec<NewJob> = keys.iter().map(|k| job(&i, T0, Some(k))).collect();
    let made = q.enqueue(&first, T0).await.expect("enqueue");
    assert!(made.iter().all(|e| !e.duplicate));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_keys_tail").await, 1000);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_keys").await, 0);
    assert_eq!(tail.len(), 1000);

    // Found in the tail: by enqueue and by intake's lookup.
    let expect_first = |out: &[ferry_queue::Enqueued]| {
        assert!(out.iter().all(|e| e.duplicate));
        let ids: Vec<_> = out.iter().map(|e| (e.job_id, e.event_id)).collect();
        let want: Vec<_> = first.iter().map(|j| (j.id, j.event_id)).collect();
        assert_eq!(ids, want, "each repeat names the first job and event");
    };
    let again: Vec<NewJob> = keys.iter().map(|k| job(&i, T0, Some(k))).collect();
    expect_first(&q.enqueue(&again, T0).await.expect("repeat"));
    let found = q.events_for_keys(&keys).await.expect("lookup");
    assert_eq!(found.len(), 1000);
    assert_eq!(found[&keys[7]], first[7].event_id.expect("event id"));

    // Rolled back: not taken. Twice in one transaction: the second is a
    // repeat of the first.
    let rb = format!("hook:{}:rolled-back", i.id);
    let mut tx = db.pool.begin().await.expect("tx");
    let once = q
        .enqueue_in(&mut tx, &[job(&i, T0, Some(&rb))], T0)
        .await
        .expect("enqueue in tx");
    let twice = q
        .enqueue_in(&mut tx, &[job(&i, T0, Some(&rb))], T0)
        .await
        .expect("again in the same tx");
    assert!(!once[0].duplicate);
    assert!(twice[0].duplicate, "the transaction sees its own key");
    assert_eq!(twice[0].job_id, once[0].job_id);
    tx.rollback().await.expect("rollback");
    assert!(q
        .events_for_keys(std::slice::from_ref(&rb))
        .await
        .expect("lookup")
        .is_empty());
    let kept = q
        .enqueue(&[job(&i, T0, Some(&rb))], T0)
        .await
        .expect("enqueue after rollback");
    assert!(!kept[0].duplicate, "a rolled-back key is free");

    // A row under a key's hash that holds another key is not taken for it.
    let other = format!("hook:{}:other", i.id);
    tail.add(key_hash(&other), tail.last_seq());
    let fresh = q
        .enqueue(&[job(&i, T0, Some(&other))], T0)
        .await
        .expect("enqueue other");
    assert!(!fresh[0].duplicate);

    // Merged: the tail is empty, the map forgets, every key still holds.
    let moved = q.merge_key_tail().await.expect("merge");
    assert_eq!(moved, 1002);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_keys_tail").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_keys").await, 1002);
    assert!(tail.is_empty());
    let again: Vec<NewJob> = keys.iter().map(|k| job(&i, T0, Some(k))).collect();
    expect_first(&q.enqueue(&again, T0).await.expect("repeat after merge"));
    assert_eq!(q.events_for_keys(&keys).await.expect("lookup").len(), 1000);
    assert_eq!(
        q.count_keys_with_prefix(&format!("hook:{}:", i.id))
            .await
            .expect("count"),
        1002
    );

    // New keys after the merge, then a restart: the map is loaded again.
    let late: Vec<String> = (0..10).map(|n| format!("hook:{}:late-{n}", i.id)).collect();
    let late_jobs: Vec<NewJob> = late.iter().map(|k| job(&i, T0, Some(k))).collect();
    q.enqueue(&late_jobs, T0).await.expect("enqueue late");
    assert_eq!(
        q.unmerged_keys_with_prefix(&format!("hook:{}:late-", i.id))
            .await
            .expect("unmerged")
            .len(),
        10
    );
    drop((q, tail));
    db.close().await;
    drop(db);
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("ferry.db").display());
    let db = Db::connect(&ferry_store::DbOptions::new(url))
        .await
        .expect("reconnect");
    let q = Queue::new(db.clone());
    let tail = q.tail.clone().expect("tail");
    let repeat = q
        .enqueue(
            &late
                .iter()
                .map(|k| job(&i, T0, Some(k)))
                .collect::<Vec<_>>(),
            T0,
        )
        .await
        .expect("repeat after restart");
    assert!(repeat.iter().all(|e| e.duplicate));
    assert_eq!(
        repeat.iter().map(|e| e.job_id).collect::<Vec<_>>(),
        late_jobs.iter().map(|j| j.id).collect::<Vec<_>>()
    );
    assert_eq!(tail.len(), 10, "loaded from the table");
    let second = Db::connect(&ferry_store::DbOptions::new(db.url.clone()))
        .await
        .expect("second handle");
    assert!(
        std::sync::Arc::ptr_eq(
            &tail,
            Queue::new(second.clone()).tail.as_ref().expect("tail")
        ),
        "handles on one file share the map"
    );

    // Pruned keys go from the tail and from job_keys.
    let pruned = q.prune_history(T0 + 1).await.expect("prune");
    assert_eq!(pruned, 1012);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_keys_tail").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_keys").await, 0);
    let after_prune = q
        .enqueue(&[job(&i, T0 + 2, Some(&late[0]))], T0 + 2)
        .await
        .expect("enqueue after prune");
    assert!(!after_prune[0].duplicate, "a pruned key is free again");
}

#[tokio::test]
async fn conformance_postgres() {
    let Some(db) = pg_db("conformance_postgres").await else {
        return;
    };
    suite(db).await;
}

async fn lease_suite(db: Db) {
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    q.enqueue(&[job(&i, T0, None)], T0).await.expect("enqueue");
    let a = q
        .claim("A", 1, 1_000, T0, &[])
        .await
        .expect("claim A")
        .remove(0);
    // Heartbeats extend the lease.
    assert!(q
        .heartbeat(&[(a.id, a.lease_token.clone())], 1_000, T0 + 900)
        .await
        .expect("hb")
        .is_empty());
    assert_eq!(
        q.rescue_expired(T0 + 1_500).await.expect("rescue"),
        0,
        "the heartbeat moved the lease to T0+1900"
    );
    // A stops heartbeating: rescued, claimed by B.
    assert_eq!(q.rescue_expired(T0 + 2_000).await.expect("rescue"), 1);
    let b = q
        .claim("B", 1, 1_000, T0 + 2_000, &[])
        .await
        .expect("claim B")
        .remove(0);
    assert_eq!(b.id, a.id);
    assert_eq!(b.attempt, 2);
    assert_ne!(b.lease_token, a.lease_token);
    assert_eq!(b.attempt_log[0].outcome, "lease_expired");
    // A's heartbeat and completion are rejected; B's completion lands.
    assert_eq!(
        q.heartbeat(&[(a.id, a.lease_token.clone())], 1_000, T0 + 2_100)
            .await
            .expect("hb"),
        vec![a.id]
    );
    assert_eq!(
        q.complete(&[success(&a)], T0 + 2_200)
            .await
            .expect("A completes"),
        vec![a.id]
    );
    assert!(!q
        .fail(&failure(&a, None, "late"), T0 + 2_200)
        .await
        .expect("A fails"));
    assert!(q
        .complete(&[success(&b)], T0 + 2_300)
        .await
        .expect("B completes")
        .is_empty());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").await,
        1
    );
    // The run's log keeps the expired attempt before the one that succeeded.
    let log = q
        .get_run(b.id)
        .await
        .expect("run")
        .attempt_log
        .expect("attempt log");
    assert_eq!(
        log.iter()
            .map(|e| (e.attempt, e.outcome.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "lease_expired"), (2, "succeeded")]
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters").await, 0);

    // A job whose last attempt's worker vanished is dead-lettered, not lost.
    q.enqueue(
        &[NewJob {
            max_attempts: 1,
            ..job(&i, T0, None)
        }],
        T0,
    )
    .await
    .expect("enqueue");
    q.claim("C", 1, 1_000, T0 + 3_000, &[])
        .await
        .expect("claim C");
    assert_eq!(q.rescue_expired(T0 + 5_000).await.expect("rescue"), 1);
    let (dls, _) = q
        .list_dead_letters(&DeadLetterFilter::default(), 10, None)
        .await
        .expect("dls");
    assert_eq!(dls.len(), 1);
    assert!(
        dls[0].errors[0].contains("lease expired"),
        "{:?}",
        dls[0].errors
    );

    // Integration state: compare-and-swap with the completion.
    q.enqueue(&[job(&i, T0, None), job(&i, T0, None)], T0)
        .await
        .expect("enqueue");
    let two = q
        .claim("D", 2, 10_000, T0 + 6_000, &[])
        .await
        .expect("claim D");
    let with_state = |j: &ferry_queue::ClaimedJob, cursor: i64| Success {
        state: Some((0, json!({"cursor": cursor}))),
        ..success(j)
    };
    assert!(q
        .complete(&[with_state(&two[0], 1)], T0 + 6_100)
        .await
        .expect("cas ok")
        .is_empty());
    let stale = q.complete(&[with_state(&two[1], 2)], T0 + 6_200).await;
    assert!(
        matches!(stale, Err(ferry_store::Error::Conflict(_))),
        "{stale:?}"
    );
    let st = ferry_store::state::get(&db.pool, i.id)
        .await
        .expect("state");
    assert_eq!((st.version, st.state), (1, json!({"cursor": 1})));
}

#[tokio::test]
async fn leases_and_state_sqlite() {
    let (db, _dir) = sqlite_db().await;
    lease_suite(db).await;
}

#[tokio::test]
async fn leases_and_state_postgres() {
    let Some(db) = pg_db("leases_and_state_postgres").await else {
        return;
    };
    lease_suite(db).await;
}

/// Readiness probes at the same time each read their own write, and the
/// outage switch cuts the store off and gives it back.
async fn probe_suite(url: String) {
    let outage = ferry_store::OutageSwitch::default();
    let mut opts = ferry_store::DbOptions::new(url);
    opts.acquire_timeout = std::time::Duration::from_millis(300);
    opts.outage = Some(outage.clone());
    let db = Db::connect(&opts).await.expect("connect");
    db.migrate().await.expect("migrate");

    let mut probes = tokio::task::JoinSet::new();
    for n in 0..32 {
        let db = db.clone();
        probes.spawn(async move { ferry_store::nodes::heartbeat(&db, "node-a", T0 + n).await });
    }
    while let Some(p) = probes.join_next().await {
        p.expect("probe task").expect("a concurrent probe fails");
    }

    outage.cut();
    let err = ferry_store::nodes::heartbeat(&db, "node-a", T0 + 100)
        .await
        .expect_err("the store answers through a cut");
    assert!(err.is_unavailable(), "a cut is an outage, not {err}");
    outage.restore();
    ferry_store::nodes::heartbeat(&db, "node-a", T0 + 200)
        .await
        .expect("the store answers once restored");
}

#[tokio::test]
async fn probes_and_outage_switch_sqlite() {
    let dir = TempDir::new("ferry-test");
    probe_suite(format!(
        "sqlite://{}?mode=rwc",
        dir.0.join("ferry.db").display()
    ))
    .await;
}

#[tokio::test]
async fn probes_and_outage_switch_postgres() {
    let Some(url) = pg_fresh_url("probes_and_outage_switch_postgres").await else {
        return;
    };
    probe_suite(url).await;
}

/// The claim's and the completion's connections are not pinged before
/// use (`Db::finish`). When PostgreSQL drops them (a restart, a failover,
/// an administrator), each stale connection fails one statement and is
/// replaced: the next claim and completion go through, and nothing
/// claimed or completed is lost or doubled.
#[tokio::test]
async fn stale_claim_and_completion_connections_are_replaced_postgres() {
    let Some(db) = pg_db("stale_connections_postgres").await else {
        return;
    };
    let queue = Queue::new(db.clone());
    let integration = uuid::Uuid::now_v7();
    let batch: Vec<NewJob> = (0..30)
        .map(|_| NewJob::new(integration, "t", "noop", 1, Trigger::Manual, T0, 3))
        .collect();
    queue.enqueue(&batch, T0).await.expect("enqueue");
    // Open the claim's and the completion's connections.
    let first = queue.claim("w", 10, 60_000, T0, &[]).await.expect("claim");
    assert_eq!(first.len(), 10);
    let done: Vec<Success> = first.iter().map(success).collect();
    assert!(queue
        .complete(&done, T0)
        .await
        .expect("complete")
        .is_empty());

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&db.pool)
    .await
    .expect("terminate the other connections");
    assert!(
        killed.len() >= 2,
        "claim and completion connections were open: {killed:?}"
    );

    // Each pool holds at most two connections: at most two failures each.
    let mut failures = 0;
    let second = loop {
        match queue.claim("w", 10, 60_000, T0, &[]).await {
            Ok(jobs) => break jobs,
            Err(e) if failures < 2 => {
                failures += 1;
                println!("claim on a stale connection: {e}");
            }
            Err(e) => panic!("the claim did not recover: {e}"),
        }
    };
    assert_eq!(second.len(), 10, "the failed claims took nothing");
    let done: Vec<Success> = second.iter().map(success).collect();
    let mut failures = 0;
    loop {
        match queue.complete(&done, T0).await {
            Ok(rejected) => {
                assert!(rejected.is_empty(), "{rejected:?}");
                break;
            }
            Err(e) if failures < 2 => {
                failures += 1;
                println!("completion on a stale connection: {e}");
            }
            Err(e) => panic!("the completion did not recover: {e}"),
        }
    }
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&db.pool)
        .await
        .expect("count runs");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'available'")
        .fetch_one(&db.pool)
        .await
        .expect("count jobs");
    assert_eq!((runs, left), (20, 10));
}

/// The claim keeps to the ordered scan of `jobs_available` when the
/// statistics are stale, as they are whenever a queue fills faster than
/// autovacuum analyses it: analysed empty, then 20,000 jobs due. Without
/// the pinning, PostgreSQL may plan a bitmap scan that sorts every
/// available job on every claim. Pause and resume keep to the partial
/// `jobs_integration`.
#[tokio::test]
async fn claim_plan_survives_stale_statistics_postgres() {
    let Some(db) = pg_db("claim_plan_postgres").await else {
        return;
    };
    sqlx::query("ANALYZE jobs")
        .execute(&db.pool)
        .await
        .expect("analyse the empty table");
    let queue = Queue::new(db.clone());
    let integration = uuid::Uuid::now_v7();
    for _ in 0..20 {
        let batch: Vec<NewJob> = (0..1000)
            .map(|_| NewJob::new(integration, "t", "noop", 1, Trigger::Manual, 1_000, 3))
            .collect();
        queue.enqueue(&batch, 1_000).await.expect("enqueue");
    }
    let explain = |pinned: bool| {
        let (db, queue) = (db.clone(), queue.clone());
        async move {
            let sql = format!("EXPLAIN {}", queue.claim_sql(0));
            macro_rules! explain_on {
                ($pool:expr) => {
                    sqlx::query_scalar(&sql)
                        .bind("claim:")
                        .bind(60_000i64)
                        .bind("w")
                        .bind(2_000i64)
                        .bind(256i64)
                        .fetch_all($pool)
                        .await
                        .expect("explain")
                };
            }
            let plan: Vec<String> = match (&db.claim, pinned) {
                (ferry_store::ClaimPool::Postgres(claim), true) => explain_on!(claim),
                (ferry_store::ClaimPool::Shared(_), true) => {
                    panic!("on PostgreSQL the claim has connections of its own")
                }
                (_, false) => explain_on!(&db.pool),
            };
            plan.join("\n")
        }
    };
    let plan = explain(true).await;
    assert!(
        plan.contains("Index Scan using jobs_available"),
        "claims walk jobs_available in run_at order:\n{plan}"
    );
    assert!(
        !plan.contains("Sort") && !plan.contains("Bitmap"),
        "no sort of the available jobs:\n{plan}"
    );
    assert!(
        plan.contains("Tid Scan on jobs") && !plan.contains("jobs_pkey"),
        "the claimed rows are updated by address, not joined back by id:\n{plan}"
    );
    println!("unpinned plan, for comparison:\n{}", explain(false).await);

    // Pausing and resuming find an integration's jobs through
    // `jobs_integration`, which leaves running jobs out: even a generic
    // plan (no parameter values) must see that it may use it.
    for held in [true, false] {
        let mut tx = db.pool.begin().await.expect("begin");
        for setting in [
            "SET LOCAL plan_cache_mode = force_generic_plan",
            "SET LOCAL enable_seqscan = off",
        ] {
            sqlx::query(setting)
                .execute(&mut *tx)
                .await
                .expect("setting");
        }
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN {}", Queue::set_held_sql(held)))
                .bind(2_000i64)
                .bind(integration.to_string())
                .fetch_all(&mut *tx)
                .await
                .expect("explain");
        let plan = plan.join("\n");
        assert!(
            plan.contains("jobs_integration"),
            "pause and resume use jobs_integration:\n{plan}"
        );
    }
}
