//! Bulk replay as a background operation: pages commit with their progress,
//! a dead node's operation is taken over and finished without replaying
//! anything twice, and dead letters arriving after the start are left alone.

use ferry_queue::{DeadLetterFilter, NewJob, OperationStatus, Queue, Step};
use ferry_store::Db;

use crate::common::*;

const T0: i64 = 1_800_000_000_000;

/// `n` dead letters of integration `i`, each failed once (max_attempts 1):
/// due at `now`, claimed then, dead at `dead_at`.
async fn dead_letters(q: &Queue, i: &ferry_store::Integration, n: usize, now: i64, dead_at: i64) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|k| event_job(i, now, 1, &format!(r#"{{"n":{k}}}"#)))
        .collect();
    for chunk in jobs.chunks(500) {
        q.enqueue(chunk, now).await.expect("enqueue");
    }
    let mut left = n;
    while left > 0 {
        let claimed = q
            .claim("w", left.min(500), 60_000, now, &[])
            .await
            .expect("claim");
        assert!(!claimed.is_empty(), "{left} jobs not claimable");
        for j in &claimed {
            let f = failed(
                j,
                "1.0.0",
                "HTTP 503: receiver down".into(),
                "transient",
                now,
                None,
            );
            assert!(q.fail(&f, dead_at).await.expect("fail"), "dead-lettered");
        }
        left -= claimed.len();
    }
}

async fn suite(db: Db) {
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    dead_letters(&q, &i, 1_200, T0, T0).await;
    let filter = DeadLetterFilter {
        integration: Some(i.id),
        ..Default::default()
    };
    assert_eq!(q.count_replayable(&filter).await.expect("count"), 1_200);

    // Node A starts it and does one page, then stops renewing (it died).
    let op = q
        .start_replay(
            &filter,
            ferry_queue::ReplayRevision::Current,
            "token:ops",
            "node-a",
            T0 + 1_000,
        )
        .await
        .expect("start");
    assert_eq!(
        (op.status, op.total, op.done),
        (OperationStatus::Running, 1_200, 0)
    );
    assert_eq!(
        q.step_operation(op.id, "node-a", T0 + 1_100)
            .await
            .expect("step"),
        Step::Progressed(500)
    );
    // A dead letter arriving after the start is not this operation's.
    // (Due before the replayed jobs, so claiming it takes only it.)
    dead_letters(&q, &i, 1, T0 + 1_050, T0 + 2_000).await;

    // Not stale yet: nobody takes it.
    assert!(q
        .claim_stale_operations("node-b", T0 + 20_000)
        .await
        .expect("sweep")
        .is_empty());
    let later = T0 + 1_100 + ferry_queue::ops::STALE_AFTER_MS + 1;
    assert_eq!(
        q.claim_stale_operations("node-b", later)
            .await
            .expect("sweep"),
        vec![op.id]
    );
    assert!(
        q.claim_stale_operations("node-c", later)
            .await
            .expect("sweep")
            .is_empty(),
        "one taker"
    );
    // A comes back: it no longer owns the operation and changes nothing.
    assert_eq!(
        q.step_operation(op.id, "node-a", later)
            .await
            .expect("step"),
        Step::Lost
    );
    let mut steps = 0;
    loop {
        match q
            .step_operation(op.id, "node-b", later + 1)
            .await
            .expect("step")
        {
            Step::Progressed(_) => steps += 1,
            Step::Finished => break,
            Step::Lost => panic!("node-b lost an operation it owns"),
        }
        assert!(steps < 10, "runs away");
    }
    let done = q.get_operation(op.id).await.expect("op");
    assert_eq!(done.status, OperationStatus::Succeeded);
    assert_eq!(done.done, 1_200, "every page counted once");
    assert!(done.finished_at.is_some());

    // Each dead letter replayed exactly once, with lineage both ways.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE replay_of IS NOT NULL").await,
        1_200
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM jobs j JOIN dead_letters d ON d.id = j.replay_of AND d.replay_run_id = j.id"
        )
        .await,
        1_200
    );
    assert_eq!(
        q.count_replayable(&filter).await.expect("count"),
        1,
        "only the one that died after the start is left"
    );

    // The list shows it; scoped to another tenant it is not there.
    let (ops, _) = q.list_operations(None, 10, None).await.expect("list");
    assert_eq!(ops.len(), 1);
    let (theirs, _) = q
        .list_operations(Some("globex"), 10, None)
        .await
        .expect("list");
    assert!(theirs.is_empty());

    // Replaying one already replayed is refused, never a second job.
    let (dls, _) = q.list_dead_letters(&filter, 10, None).await.expect("dls");
    let replayed = dls
        .iter()
        .find(|d| d.replay_run_id.is_some())
        .expect("a replayed dead letter");
    assert!(q
        .replay(
            replayed.id,
            ferry_queue::ReplayRevision::Current,
            "t",
            later + 2
        )
        .await
        .is_err());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs WHERE replay_of IS NOT NULL").await,
        1_200
    );

    // Nothing matching: finished at once.
    let none = q
        .start_replay(
            &DeadLetterFilter {
                tenant: Some("nobody".into()),
                ..Default::default()
            },
            ferry_queue::ReplayRevision::Current,
            "t",
            "node-b",
            later + 3,
        )
        .await
        .expect("start");
    assert_eq!((none.status, none.total), (OperationStatus::Succeeded, 0));
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'dead_letter.replay_bulk'"
        )
        .await,
        2,
        "each bulk replay audited"
    );
}

/// A replay runs on the revision each failed run used when asked
/// (`original`), else on the integration's current one; one at a time and
/// in bulk.
async fn revision_suite(db: Db) {
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    dead_letters(&q, &i, 6, T0, T0).await;
    let mut changed = spec("webhook", "acme", None);
    changed.config = serde_json::json!({"url": "http://127.0.0.1:9/changed"});
    let edited = q
        .edit_integration(
            &key(),
            i.id,
            i.revision,
            &changed,
            ferry_store::integrations::NextFire::Keep,
            T0 + 10,
            "t",
        )
        .await
        .expect("edit");
    assert_eq!(edited.revision, 2);
    dead_letters(&q, &edited, 2, T0 + 50, T0 + 50).await;
    let filter = |since: Option<i64>, until: Option<i64>| DeadLetterFilter {
        integration: Some(i.id),
        since,
        until,
        ..Default::default()
    };
    let (dls, _) = q
        .list_dead_letters(&filter(None, Some(T0 + 1)), 10, None)
        .await
        .expect("dls");
    assert_eq!(dls.len(), 6);
    assert!(
        dls.iter().all(|d| d.revision == 1),
        "dead letters name their revision"
    );
    // Three of revision 1 one at a time on their original revision, the
    // other three in bulk on the current one.
    for d in &dls[..3] {
        q.replay(d.id, ferry_queue::ReplayRevision::Original, "t", T0 + 60)
            .await
            .expect("replay");
    }
    let bulk = |f: DeadLetterFilter, which| {
        let q = q.clone();
        async move {
            let op = q
                .start_replay(&f, which, "t", "node-a", T0 + 70)
                .await
                .expect("start");
            while q
                .step_operation(op.id, "node-a", T0 + 80)
                .await
                .expect("step")
                != Step::Finished
            {}
            op
        }
    };
    let op = bulk(
        filter(None, Some(T0 + 1)),
        ferry_queue::ReplayRevision::Current,
    )
    .await;
    assert_eq!(op.total, 3);
    // The two of revision 2, in bulk on their original revision.
    let op = bulk(
        filter(Some(T0 + 50), None),
        ferry_queue::ReplayRevision::Original,
    )
    .await;
    assert_eq!(
        (op.total, op.params["revision"].as_str()),
        (2, Some("original"))
    );
    let on = |rev: i64| {
        let db = db.clone();
        async move {
            count(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM jobs WHERE replay_of IS NOT NULL AND revision = {rev}"
                ),
            )
            .await
        }
    };
    assert_eq!((on(1).await, on(2).await), (3, 5));
}

#[tokio::test]
async fn replays_choose_their_revision_sqlite() {
    let (db, _dir) = sqlite_db().await;
    revision_suite(db).await;
}

#[tokio::test]
async fn replays_choose_their_revision_postgres() {
    let Some(db) = pg_db("replays_choose_their_revision").await else {
        return;
    };
    revision_suite(db).await;
}

#[tokio::test]
async fn bulk_replay_operations_sqlite() {
    let (db, _dir) = sqlite_db().await;
    suite(db).await;
}

#[tokio::test]
async fn bulk_replay_operations_postgres() {
    let Some(db) = pg_db("bulk_replay_operations").await else {
        return;
    };
    suite(db).await;
}
