//! Where idempotency keys are stored and looked up: `job_keys` (both
//! engines) and, on SQLite, the unmerged tail (`keys::tail`).

use std::collections::{HashMap, HashSet};

use ferry_store::Error;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::{NewJob, Queue};
use crate::row::{opt_uuid_col, uuid_col, Tx, CHUNK};
use crate::Result;

use super::tail::KeyTail;
use super::{key_hash, prefix_range};

impl Queue {
    /// PostgreSQL: inserts the keys into `job_keys`, and returns those that
    /// were there already (or earlier in this batch) with their first ids.
    pub(crate) async fn insert_keys(
        &self,
        tx: &mut Tx<'_>,
        keyed: &[&NewJob],
        now: i64,
    ) -> Result<HashMap<String, (Uuid, Option<Uuid>)>> {
        let mut existing = HashMap::new();
        for chunk in keyed.chunks(CHUNK) {
            let mut sql =
                String::from("INSERT INTO job_keys (key, job_id, event_id, created_at) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(i * 4 + 1, 4));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (key) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for j in chunk {
                q = q
                    .bind(j.idempotency_key.clone())
                    .bind(j.id.to_string())
                    .bind(j.event_id.map(|e| e.to_string()))
                    .bind(now);
            }
            // Usually every key is new, which the row count shows, and
            // nothing is read. Otherwise the chunk's keys are read back: a
            // key naming another job was there first (or earlier in this
            // batch), and its job here is a duplicate.
            if q.execute(&mut **tx).await?.rows_affected() == chunk.len() as u64 {
                continue;
            }
            let keys: Vec<String> = chunk
                .iter()
                .filter_map(|j| j.idempotency_key.clone())
                .collect();
            self.read_keys(tx, "job_keys", "key", &keys, &mut existing)
                .await?;
        }
        Ok(existing)
    }

    /// SQLite: the keys already taken, as this transaction sees them, in
    /// the tail (found through its map) or merged into `job_keys`.
    pub(crate) async fn known_keys(
        &self,
        tail: &KeyTail,
        tx: &mut Tx<'_>,
        keyed: &[&NewJob],
    ) -> Result<HashMap<String, (Uuid, Option<Uuid>)>> {
        let mut existing = HashMap::new();
        if keyed.is_empty() {
            return Ok(existing);
        }
        tail.ready(&self.db.read).await?;
        let mut seqs = Vec::new();
        for j in keyed {
            if let Some(k) = &j.idempotency_key {
                tail.candidates(key_hash(k), &mut seqs);
            }
        }
        if !seqs.is_empty() {
            let mut found = HashMap::new();
            for chunk in seqs.chunks(CHUNK) {
                self.read_keys(tx, "job_keys_tail", "seq", chunk, &mut found)
                    .await?;
            }
            // A row under a key's hash may hold another key.
            for j in keyed {
                if let Some(k) = &j.idempotency_key {
                    if let Some(v) = found.get(k) {
                        existing.insert(k.clone(), *v);
                    }
                }
            }
        }
        let mut rest: Vec<String> = keyed
            .iter()
            .filter_map(|j| j.idempotency_key.as_ref())
            .filter(|k| !existing.contains_key(*k))
            .cloned()
            .collect();
        rest.sort_unstable();
        rest.dedup();
        for chunk in rest.chunks(CHUNK) {
            self.read_keys(tx, "job_keys", "key", chunk, &mut existing)
                .await?;
        }
        Ok(existing)
    }

    /// `key`, `job_id` and `event_id` of the rows of `table` whose `column`
    /// is one of `values`.
    pub(crate) async fn read_keys<V>(
        &self,
        tx: &mut Tx<'_>,
        table: &str,
        column: &str,
        values: &[V],
        into: &mut HashMap<String, (Uuid, Option<Uuid>)>,
    ) -> Result<()>
    where
        V: Clone + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let head = format!("SELECT key, job_id, event_id FROM {table} WHERE");
        for r in self.rows_in(&mut **tx, &head, column, values).await? {
            into.insert(
                r.try_get("key")?,
                (uuid_col(&r, "job_id")?, opt_uuid_col(&r, "event_id")?),
            );
        }
        Ok(())
    }

    /// The rows of `head` (a statement ending in `WHERE` or `AND`) whose
    /// `column` is one of `values`.
    pub(crate) async fn rows_in<'c, E, V>(
        &self,
        exec: E,
        head: &str,
        column: &str,
        values: &[V],
    ) -> Result<Vec<AnyRow>>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
        V: Clone + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let sql = format!(
            "{head} {column} IN ({})",
            self.db.placeholders(1, values.len())
        );
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v.clone());
        }
        Ok(q.fetch_all(exec).await?)
    }

    /// SQLite: appends the keys of `fresh` to the tail, recording each in
    /// its map first (the map may hold more than the table, never less).
    pub(crate) async fn append_keys(
        &self,
        tail: &KeyTail,
        tx: &mut Tx<'_>,
        fresh: &[&NewJob],
        now: i64,
    ) -> Result<()> {
        let keyed: Vec<(&NewJob, &str)> = fresh
            .iter()
            .filter_map(|j| j.idempotency_key.as_deref().map(|k| (*j, k)))
            .collect();
        if keyed.is_empty() {
            return Ok(());
        }
        let first = tail.reserve(keyed.len());
        for (i, (_, k)) in keyed.iter().enumerate() {
            tail.add(key_hash(k), first + i as i64);
        }
        for (n, chunk) in keyed.chunks(CHUNK).enumerate() {
            let mut sql = String::from(
                "INSERT INTO job_keys_tail (seq, key, job_id, event_id, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i > 0 { ", (" } else { "(" });
                sql.push_str(&self.db.placeholders(i * 5 + 1, 5));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for (i, (j, k)) in chunk.iter().enumerate() {
                q = q
                    .bind(first + (n * CHUNK + i) as i64)
                    .bind(k.to_string())
                    .bind(j.id.to_string())
                    .bind(j.event_id.map(|e| e.to_string()))
                    .bind(now);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// SQLite: moves the tail's keys into `job_keys`, in key order and in
    /// one transaction (each leaf of the key index is written once however
    /// many of the keys land on it), and forgets them once committed.
    /// Returns how many rows it moved. On PostgreSQL there is no tail.
    pub async fn merge_key_tail(&self) -> Result<u64> {
        let Some(tail) = &self.tail else {
            return Ok(0);
        };
        tail.ready(&self.db.read).await?;
        let mut tx = self.db.pool.begin().await?;
        // Taken while this transaction holds the one writer connection: no
        // transaction that took a seq up to here is still running.
        let last = tail.last_seq();
        sqlx::query(
            "INSERT INTO job_keys (key, job_id, event_id, created_at) \
             SELECT key, job_id, event_id, created_at FROM job_keys_tail WHERE seq <= $1 \
             ORDER BY key ON CONFLICT (key) DO NOTHING",
        )
        .bind(last)
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query("DELETE FROM job_keys_tail WHERE seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        tail.forget_through(last);
        Ok(moved)
    }

    /// The event ids first enqueued under each of `keys` that has one, as
    /// committed. On SQLite the tail is asked before `job_keys`: a merge
    /// that commits in between moves a key from the first to the second,
    /// never the other way.
    pub async fn events_for_keys(&self, keys: &[String]) -> Result<HashMap<String, Uuid>> {
        let mut out = HashMap::new();
        if let Some(tail) = &self.tail {
            tail.ready(&self.db.read).await?;
            let mut seqs = Vec::new();
            for k in keys {
                tail.candidates(key_hash(k), &mut seqs);
            }
            let wanted: HashSet<&String> = keys.iter().collect();
            for chunk in seqs.chunks(CHUNK) {
                for (key, id) in self.event_ids("job_keys_tail", "seq", chunk).await? {
                    // A row under a key's hash may hold another key.
                    if wanted.contains(&key) {
                        out.insert(key, id);
                    }
                }
            }
        }
        let rest: Vec<String> = keys
            .iter()
            .filter(|k| !out.contains_key(*k))
            .cloned()
            .collect();
        for chunk in rest.chunks(CHUNK) {
            out.extend(self.event_ids("job_keys", "key", chunk).await?);
        }
        Ok(out)
    }

    /// `key` and `event_id` of the committed rows of `table` whose `column`
    /// is one of `values` and that have an event id.
    pub(crate) async fn event_ids<V>(
        &self,
        table: &str,
        column: &str,
        values: &[V],
    ) -> Result<Vec<(String, Uuid)>>
    where
        V: Clone + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let head = format!("SELECT key, event_id FROM {table} WHERE event_id IS NOT NULL AND");
        let mut out = Vec::new();
        for row in self.rows_in(&self.db.read, &head, column, values).await? {
            let key: String = row.try_get("key")?;
            let id: String = row.try_get("event_id")?;
            let id =
                Uuid::parse_str(&id).map_err(|e| Error::Db(format!("{table}.event_id: {e}")))?;
            out.push((key, id));
        }
        Ok(out)
    }

    /// The tables idempotency keys are kept in: `job_keys`, and on SQLite
    /// also the tail not yet merged into it.
    pub(crate) fn key_tables(&self) -> &'static [&'static str] {
        match self.tail {
            Some(_) => &["job_keys", "job_keys_tail"],
            None => &["job_keys"],
        }
    }

    /// How many idempotency keys begin with `prefix` (merged or not).
    pub async fn count_keys_with_prefix(&self, prefix: &str) -> Result<i64> {
        let (lo, hi) = prefix_range(prefix);
        let tables = self.key_tables();
        let mut n = 0;
        for table in tables {
            let row = sqlx::query(&format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE key >= $1 AND key < $2"
            ))
            .bind(lo.clone())
            .bind(hi.clone())
            .fetch_one(&self.db.read)
            .await?;
            n += row.try_get::<i64, _>("n")?;
        }
        Ok(n)
    }

    /// Up to `limit` idempotency keys beginning with `prefix`, in order,
    /// after `after` (pass `prefix` to start), of those merged into
    /// `job_keys` (see `unmerged_keys_with_prefix` for the rest). Keys
    /// compare bytewise, as on SQLite; a PostgreSQL database needs the C
    /// collation for this.
    pub async fn keys_with_prefix_after(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let (_, hi) = prefix_range(prefix);
        Ok(sqlx::query_scalar(
            "SELECT key FROM job_keys WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3",
        )
        .bind(after.to_string())
        .bind(hi)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The idempotency keys beginning with `prefix` that are not yet merged
    /// into `job_keys` (SQLite's tail; none on PostgreSQL). Read them before
    /// `keys_with_prefix_after`: a merge in between moves keys from here to
    /// there, never back.
    pub async fn unmerged_keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        if self.tail.is_none() {
            return Ok(Vec::new());
        }
        let (lo, hi) = prefix_range(prefix);
        Ok(
            sqlx::query_scalar("SELECT key FROM job_keys_tail WHERE key >= $1 AND key < $2")
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// Deletes keys older than `before` (history pruning).
    pub(crate) async fn prune_keys(&self, before: i64) -> Result<u64> {
        let mut pruned = 0;
        for table in self.key_tables() {
            pruned += sqlx::query(&format!("DELETE FROM {table} WHERE created_at < $1"))
                .bind(before)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        Ok(pruned)
    }

    /// Deletes `keys` wherever they are (merged into `job_keys` or still in
    /// the tail), inside the caller's transaction, so that the work they
    /// named can be enqueued again.
    pub(crate) async fn delete_keys(&self, tx: &mut Tx<'_>, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM job_keys WHERE key IN ({})",
                self.db.placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.clone());
            }
            q.execute(&mut **tx).await?;
            if let Some(tail) = &self.tail {
                self.delete_from_tail(tail, tx, chunk).await?;
            }
        }
        Ok(())
    }

    /// Deletes `keys` from the tail, inside the caller's transaction.
    pub(crate) async fn delete_from_tail(
        &self,
        tail: &KeyTail,
        tx: &mut Tx<'_>,
        keys: &[String],
    ) -> Result<()> {
        tail.ready(&self.db.read).await?;
        let mut seqs = Vec::new();
        for k in keys {
            tail.candidates(key_hash(k), &mut seqs);
        }
        // The rows under these hashes that hold one of the keys (not another
        // key with the same hash).
        for chunk in seqs.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM job_keys_tail WHERE seq IN ({}) AND key IN ({})",
                self.db.placeholders(1, chunk.len()),
                self.db.placeholders(chunk.len() + 1, keys.len())
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            for k in keys {
                q = q.bind(k.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}
