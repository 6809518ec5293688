//! The state machine in the schema, and an integration's changes with
//! their jobs in one transaction: on SQLite and PostgreSQL.

use ferry_core::JobState;
use ferry_queue::{NewJob, Queue};
use ferry_store::integrations::NextFire;
use ferry_store::{Db, Integration};

use crate::common::*;

const T0: i64 = 1_800_000_000_000;

fn job(i: &Integration, run_at: i64) -> NewJob {
    event_job(i, run_at, 3, "{}")
}

async fn states(db: &Db, i: &Integration) -> Vec<String> {
    sqlx::query_scalar("SELECT state FROM jobs WHERE integration_id = $1 ORDER BY id")
        .bind(i.id.to_string())
        .fetch_all(&db.pool)
        .await
        .expect("states")
}

async fn suite(db: Db) {
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    q.enqueue(&[job(&i, T0), job(&i, T0)], T0)
        .await
        .expect("enqueue");

    // Every state of the enum is a state the table takes; nothing else is.
    for st in JobState::ALL {
        sqlx::query("UPDATE jobs SET state = $1 WHERE integration_id = $2")
            .bind(st.as_str())
            .bind(i.id.to_string())
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{st}: {e}"));
    }
    let refused = sqlx::query("UPDATE jobs SET state = 'retrying' WHERE integration_id = $1")
        .bind(i.id.to_string())
        .execute(&db.pool)
        .await;
    let e = refused.expect_err("a state outside JobState is refused");
    assert!(
        e.to_string().to_lowercase().contains("check")
            || e.to_string().contains("jobs_state_known"),
        "{e}"
    );
    let refused = sqlx::query(
        "INSERT INTO runs (id, integration_id, tenant, connector, revision, trigger, status, attempts, \
         created_at, finished_at) VALUES ($1, $2, 't', 'webhook', 1, 'event', 'queued', 1, 0, 0)",
    )
    .bind(ferry_core::new_id().to_string())
    .bind(i.id.to_string())
    .execute(&db.pool)
    .await;
    assert!(
        refused.is_err(),
        "a run is stored as succeeded or dead only"
    );
    sqlx::query("UPDATE jobs SET state = $1 WHERE integration_id = $2")
        .bind(JobState::Available.as_str())
        .bind(i.id.to_string())
        .execute(&db.pool)
        .await
        .expect("back to available");
    let counts = q.counts().await.expect("counts");
    assert_eq!(counts.len(), JobState::ALL.len(), "every state, zeros too");
    assert!(counts.contains(&(JobState::Available, 2)));

    // Pause and resume hold and free the jobs with the flag.
    let paused = q.pause_integration(i.id, T0 + 1).await.expect("pause");
    assert!(!paused.enabled);
    assert_eq!(states(&db, &i).await, vec!["held", "held"]);
    let resumed = q.resume_integration(i.id, T0 + 2).await.expect("resume");
    assert!(resumed.enabled);
    assert_eq!(states(&db, &i).await, vec!["available", "available"]);

    // An edit that pauses holds them too, and one that resumes frees them.
    let mut off = spec("webhook", "acme", None);
    off.enabled = false;
    let edited = q
        .edit_integration(
            &key(),
            i.id,
            resumed.revision,
            &off,
            NextFire::Keep,
            T0 + 3,
            "test",
        )
        .await
        .expect("edit: pause");
    assert_eq!(states(&db, &i).await, vec!["held", "held"]);
    let on = spec("webhook", "acme", None);
    q.edit_integration(
        &key(),
        i.id,
        edited.revision,
        &on,
        NextFire::Keep,
        T0 + 4,
        "test",
    )
    .await
    .expect("edit: resume");
    assert_eq!(states(&db, &i).await, vec!["available", "available"]);

    // A change that fails changes nothing: a stale revision, a deleted
    // integration.
    let stale = q
        .edit_integration(
            &key(),
            i.id,
            edited.revision,
            &off,
            NextFire::Keep,
            T0 + 5,
            "test",
        )
        .await;
    assert!(matches!(stale, Err(ferry_store::Error::Conflict(_))));
    assert_eq!(states(&db, &i).await, vec!["available", "available"]);
    q.delete_integration(i.id, T0 + 6).await.expect("delete");
    assert!(matches!(
        q.pause_integration(i.id, T0 + 7).await,
        Err(ferry_store::Error::NotFound)
    ));
    assert_eq!(
        states(&db, &i).await,
        vec!["available", "available"],
        "jobs already due run out after a delete"
    );
}

#[tokio::test]
async fn states_are_checked_and_changes_hold_jobs_in_one_transaction_sqlite() {
    let (db, _dir) = sqlite_db().await;
    suite(db.clone()).await;

    // SQLite adds the CHECKs by rebuilding `jobs` and `runs`: the rebuild
    // keeps every row and every index.
    let q = Queue::new(db.clone());
    let i = integration(&db, &spec("webhook", "acme", None), None, T0).await;
    q.enqueue(&[job(&i, T0), job(&i, T0 + 10)], T0)
        .await
        .expect("enqueue");
    let rows = |t: &'static str| {
        let db = db.clone();
        async move { count(&db, &format!("SELECT COUNT(*) FROM {t}")).await }
    };
    let indexes = |t: &'static str| {
        let db = db.clone();
        async move {
            let mut names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL",
            )
            .bind(t)
            .fetch_all(&db.pool)
            .await
            .expect("indexes");
            names.sort();
            names
        }
    };
    let before = (
        rows("jobs").await,
        rows("runs").await,
        indexes("jobs").await,
        indexes("runs").await,
    );
    assert_eq!(before.2.len(), 5, "{:?}", before.2);
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::raw_sql(
        &include_str!("../../migrations/sqlite/0008_state_checks.sql")
            .replace("jobs_checked", "jobs_again")
            .replace("runs_checked", "runs_again"),
    )
    .execute(&mut *tx)
    .await
    .expect("the rebuild runs on a populated store");
    tx.commit().await.expect("commit");
    let after = (
        rows("jobs").await,
        rows("runs").await,
        indexes("jobs").await,
        indexes("runs").await,
    );
    assert_eq!(before, after);
}

#[tokio::test]
async fn states_are_checked_and_changes_hold_jobs_in_one_transaction_postgres() {
    let Some(db) = pg_db("states_are_checked_postgres").await else {
        return;
    };
    suite(db).await;
}
