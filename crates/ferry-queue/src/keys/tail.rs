//! The unmerged tail of the idempotency keys, on SQLite.
//!
//! SQLite's WAL holds whole pages: a transaction writes every page it
//! touched in full, and a checkpoint writes them again into the database.
//! Provider keys are random, so each new key lands on its own leaf of
//! `job_keys`' key index, and each costs a 4 KiB page per commit. New keys
//! are therefore appended to `job_keys_tail` (no index but its row id, so
//! every insert lands on the last page) in the transaction that makes their
//! jobs, and a merge moves them into `job_keys` in key order, many at a
//! time, where each leaf is written once per merge instead of once per key.
//!
//! The tail has no index on the key. It is found through the map here,
//! from a hash of each key to the `seq` of its rows. The map holds every
//! row of the table and may hold more (rows rolled back, withdrawn or
//! pruned since), until a merge forgets what it moved. So a key missing
//! from the map is not in the tail, and a key found in it is checked
//! against the table, on the caller's connection: a transaction sees its
//! own rows, a reader only committed ones. Nothing depends on knowing
//! whether a transaction committed.
//!
//! One map per database file in a process: every `Db` on the file shares
//! it, and only this process writes the file (one node per SQLite store).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};

use super::key_hash;
use crate::Result;

#[derive(Default)]
struct Seqs {
    first: HashMap<u64, i64>,
    /// Further rows under a hash: a key added again after it was withdrawn
    /// or rolled back, or two keys with one hash.
    more: HashMap<u64, Vec<i64>>,
    len: usize,
}

impl Seqs {
    fn add(&mut self, h: u64, seq: i64) {
        match self.first.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(h).or_default().push(seq);
            }
        }
        self.len += 1;
    }

    fn forget_through(&mut self, last: i64) {
        self.first.retain(|_, s| *s > last);
        for seqs in self.more.values_mut() {
            seqs.retain(|s| *s > last);
        }
        self.more.retain(|_, seqs| !seqs.is_empty());
        // A hash whose first row went keeps its later ones.
        let orphans: Vec<u64> = self
            .more
            .keys()
            .filter(|h| !self.first.contains_key(h))
            .copied()
            .collect();
        for h in orphans {
            if let Some(mut seqs) = self.more.remove(&h) {
                self.first.insert(h, seqs.remove(0));
                if !seqs.is_empty() {
                    self.more.insert(h, seqs);
                }
            }
        }
        self.len = self.first.len() + self.more.values().map(Vec::len).sum::<usize>();
    }
}

pub struct KeyTail {
    map: Mutex<Seqs>,
    next_seq: AtomicI64,
    loaded: tokio::sync::OnceCell<()>,
    born: Instant,
    /// When a key was last added, in ms after `born`.
    last_added_ms: AtomicU64,
}

impl std::fmt::Debug for KeyTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTail")
            .field("len", &self.len())
            .field("next_seq", &self.next_seq.load(Ordering::Relaxed))
            .finish()
    }
}

static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<KeyTail>>>> = OnceLock::new();

impl KeyTail {
    fn new() -> KeyTail {
        KeyTail {
            map: Mutex::new(Seqs::default()),
            next_seq: AtomicI64::new(1),
            loaded: tokio::sync::OnceCell::new(),
            born: Instant::now(),
            last_added_ms: AtomicU64::new(0),
        }
    }

    /// The map of the database file at `path` (shared with every other
    /// `Db` on it in this process), or a map of its own for a database
    /// without a file.
    pub fn for_file(path: Option<PathBuf>) -> Arc<KeyTail> {
        let Some(path) = path.and_then(|p| std::fs::canonicalize(p).ok()) else {
            return Arc::new(KeyTail::new());
        };
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.retain(|_, t| t.strong_count() > 0);
        if let Some(t) = open.get(&path).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(KeyTail::new());
        open.insert(path, Arc::downgrade(&t));
        t
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seqs> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the map from the table the first time; every other method
    /// that reads the map is called after this.
    pub async fn ready(&self, read: &AnyPool) -> Result<()> {
        self.loaded
            .get_or_try_init(|| async {
                let rows = sqlx::query("SELECT seq, key FROM job_keys_tail")
                    .fetch_all(read)
                    .await?;
                let mut last = 0;
                let mut map = self.lock();
                for r in &rows {
                    let seq: i64 = r.try_get("seq")?;
                    let key: String = r.try_get("key")?;
                    map.add(key_hash(&key), seq);
                    last = last.max(seq);
                }
                self.next_seq.fetch_max(last + 1, Ordering::SeqCst);
                Ok::<(), crate::Error>(())
            })
            .await?;
        Ok(())
    }

    /// Appends the `seq`s of the rows that may hold a key hashed `h`.
    pub fn candidates(&self, h: u64, out: &mut Vec<i64>) {
        let map = self.lock();
        if let Some(s) = map.first.get(&h) {
            out.push(*s);
            if let Some(more) = map.more.get(&h) {
                out.extend_from_slice(more);
            }
        }
    }

    /// Takes `n` consecutive `seq`s for new rows; returns the first. Called
    /// on the writer connection, so a `seq` at or below `last_seq` belongs
    /// to a transaction that has ended.
    pub fn reserve(&self, n: usize) -> i64 {
        self.next_seq.fetch_add(n as i64, Ordering::SeqCst)
    }

    /// Records a row before it is inserted: the map may hold more than the
    /// table, never less.
    pub fn add(&self, h: u64, seq: i64) {
        self.lock().add(h, seq);
        let now = self.born.elapsed().as_millis() as u64;
        self.last_added_ms.store(now, Ordering::Relaxed);
    }

    /// The last `seq` taken so far.
    pub fn last_seq(&self) -> i64 {
        self.next_seq.load(Ordering::SeqCst) - 1
    }

    /// Forgets rows up to `last`, once a committed merge has moved them (or
    /// they were never there).
    pub fn forget_through(&self, last: i64) {
        self.lock().forget_through(last);
    }

    /// Rows the map holds (the table holds at most this many).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long since a key was last added.
    pub fn idle_for(&self) -> Duration {
        let last = self.last_added_ms.load(Ordering::Relaxed);
        self.born
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_keeps_every_row_until_a_merge_forgets_it() {
        let tail = KeyTail::new();
        let first = tail.reserve(3);
        assert_eq!(first, 1);
        tail.add(7, first);
        tail.add(7, first + 1); // the same hash again
        tail.add(9, first + 2);
        let mut seqs = Vec::new();
        tail.candidates(7, &mut seqs);
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(tail.len(), 3);
        assert_eq!(tail.last_seq(), 3);

        tail.forget_through(1);
        let mut seqs = Vec::new();
        tail.candidates(7, &mut seqs);
        assert_eq!(seqs, vec![2], "the later row of the hash stays");
        assert_eq!(tail.len(), 2);

        tail.forget_through(3);
        let mut seqs = Vec::new();
        tail.candidates(7, &mut seqs);
        tail.candidates(9, &mut seqs);
        assert!(seqs.is_empty());
        assert!(tail.is_empty());
        assert_eq!(tail.reserve(1), 4, "seqs are never taken twice");
    }

    #[test]
    fn handles_on_one_file_share_a_map() {
        let dir = std::env::temp_dir().join(format!("ferry-keytail-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.db");
        std::fs::write(&file, b"").expect("file");
        let a = KeyTail::for_file(Some(file.clone()));
        let b = KeyTail::for_file(Some(dir.join(".").join("a.db")));
        assert!(Arc::ptr_eq(&a, &b));
        let c = KeyTail::for_file(None);
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        let d = KeyTail::for_file(Some(file));
        assert_eq!(d.reserve(1), 1, "a map no handle holds is not kept");
        let _ = std::fs::remove_dir_all(dir);
    }
}
