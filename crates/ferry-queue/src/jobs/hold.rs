//! Hold: what pausing, resuming, editing and deleting an integration do to
//! its jobs, each in the one transaction that changes the integration.
//!
//! - A pause holds the integration's queued jobs (`available` → `held`)
//!   and withdraws the schedule fires enqueued ahead of their time (they
//!   have not happened; their `next_fire_at` comes back so they are planned
//!   again after the resume).
//! - A resume frees the held jobs.
//! - An edit withdraws the fires planned from the old revision; with the
//!   schedule unchanged they are planned again from the new one. An edit
//!   that pauses or resumes (`enabled`) holds or frees as those do.
//! - A delete withdraws the early fires; jobs already due run out.
//!
//! The integration's row is updated first: on PostgreSQL that waits for a
//! scheduler transaction holding it, so that transaction's fires are seen.

use ferry_core::{JobState, Trigger};
use ferry_store::integrations::{self, NextFire};
use ferry_store::{Integration, IntegrationSpec, SecretKey};
use uuid::Uuid;

use crate::jobs::Queue;
use crate::keys::fire_key;
use crate::row::Tx;
use crate::Result;

impl Queue {
    /// Pauses the integration: held jobs, early fires withdrawn.
    pub async fn pause_integration(&self, id: Uuid, now: i64) -> Result<Integration> {
        let mut tx = self.db.pool.begin().await?;
        integrations::set_enabled_in(&mut tx, id, false, now).await?;
        self.hold_in(&mut tx, id, now).await?;
        tx.commit().await?;
        integrations::get(&self.db, id).await
    }

    /// Resumes the integration: its held jobs are free again.
    pub async fn resume_integration(&self, id: Uuid, now: i64) -> Result<Integration> {
        let mut tx = self.db.pool.begin().await?;
        integrations::set_enabled_in(&mut tx, id, true, now).await?;
        let freed = self.set_held_in(&mut tx, id, false, now).await?;
        tx.commit().await?;
        if freed > 0 {
            self.wake.notify_one();
        }
        integrations::get(&self.db, id).await
    }

    /// Writes a new revision if the current one is still
    /// `expected_revision`. Fires enqueued ahead of their time were planned
    /// from the old revision: they are withdrawn, and with
    /// `NextFire::Keep` fired again from the new one.
    #[allow(clippy::too_many_arguments)] // each is a distinct part of the write
    pub async fn edit_integration(
        &self,
        key: &SecretKey,
        id: Uuid,
        expected_revision: i64,
        spec: &IntegrationSpec,
        next_fire: NextFire,
        now: i64,
        actor: &str,
    ) -> Result<Integration> {
        let mut tx = self.db.pool.begin().await?;
        integrations::update_in(
            &mut tx,
            &self.db,
            key,
            id,
            expected_revision,
            spec,
            next_fire,
            now,
            actor,
        )
        .await?;
        let earliest = self.withdraw_early_fires(&mut tx, id, now).await?;
        if next_fire == NextFire::Keep {
            integrations::refire_from(&mut tx, id, earliest).await?;
        }
        let freed = self.set_held_in(&mut tx, id, !spec.enabled, now).await?;
        tx.commit().await?;
        if spec.enabled && freed > 0 {
            self.wake.notify_one();
        }
        integrations::get(&self.db, id).await
    }

    /// Soft-deletes the integration; fires enqueued ahead of their time are
    /// withdrawn (they had not happened).
    pub async fn delete_integration(&self, id: Uuid, now: i64) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        integrations::delete_in(&mut tx, id, now).await?;
        self.withdraw_early_fires(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Holds the integration's queued jobs and withdraws its early fires
    /// (whose `next_fire_at` comes back).
    pub(crate) async fn hold_in(&self, tx: &mut Tx<'_>, id: Uuid, now: i64) -> Result<()> {
        let earliest = self.withdraw_early_fires(tx, id, now).await?;
        integrations::refire_from(tx, id, earliest).await?;
        self.set_held_in(tx, id, true, now).await?;
        Ok(())
    }

    /// The statement that holds (`held`) or frees an integration's jobs:
    /// parameters now, integration id. The states are written into it, not
    /// bound: on PostgreSQL `jobs_integration` covers only jobs that are
    /// not running, and a generic plan can use it only if it can see that
    /// the state asked for is not `running`. Public so that its plan can be
    /// checked.
    pub fn set_held_sql(held: bool) -> String {
        let (from, to) = if held {
            (JobState::Available, JobState::Held)
        } else {
            (JobState::Held, JobState::Available)
        };
        format!(
            "UPDATE jobs SET state = '{to}', run_at = CASE WHEN run_at < $1 THEN $1 ELSE run_at END \
             WHERE integration_id = $2 AND state = '{from}'"
        )
    }

    /// Holds or frees the integration's queued jobs; returns how many.
    async fn set_held_in(&self, tx: &mut Tx<'_>, id: Uuid, held: bool, now: i64) -> Result<u64> {
        Ok(sqlx::query(&Self::set_held_sql(held))
            .bind(now)
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?
            .rows_affected())
    }

    /// Removes the scheduled jobs of `id` whose fire time is still ahead of
    /// `now` (the scheduler enqueues fires up to its look-ahead before they
    /// are due; such a job has never run), with their fire keys so that the
    /// same fire can be enqueued again. Returns the earliest withdrawn fire
    /// time.
    async fn withdraw_early_fires(
        &self,
        tx: &mut Tx<'_>,
        id: Uuid,
        now: i64,
    ) -> Result<Option<i64>> {
        let sql = format!(
            "DELETE FROM jobs WHERE integration_id = $1 AND trigger = '{}' AND attempts = 0 \
             AND state IN ({}) AND scheduled_for > $2 RETURNING scheduled_for",
            Trigger::Schedule.as_str(),
            JobState::sql_list(&[JobState::Available, JobState::Waiting])
        );
        let fires: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(id.to_string())
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
        let keys: Vec<String> = fires.iter().map(|fire| fire_key(id, *fire)).collect();
        self.delete_keys(tx, &keys).await?;
        Ok(fires.into_iter().min())
    }
}
