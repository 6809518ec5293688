//! The spool: a node-local, append-only log of accepted webhook events, in
//! front of the store. An event is acknowledged to its sender only once its
//! record is on stable storage; concurrent appends share one synchronous
//! write (group commit) through a single writer thread (`sink` says how).
//! The forwarder (`crate::forward`) moves pending events into the jobs
//! table and then appends a `Settled` record naming them; segments whose
//! events are all settled are deleted, oldest first.
//!
//! The log is ours rather than an SQLite file because recovery must keep
//! every intact record around a damaged one: a checksum and a magic number
//! per record let start-up skip exactly the damaged bytes, where a damaged
//! database page could lose far more. See `ARCHITECTURE.md`.
//!
//! Pending events are also held in memory (bounded by `max_bytes`), so the
//! forwarder never reads the disk except at start-up.

mod segment;
mod sink;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

pub use segment::Damage;
use segment::Kind;
/// Replaces a file atomically and durably (temporary file, fsync, rename,
/// fsync of the directory).
pub use writer::replace_file as write_atomically;
use writer::{Msg, Segment, Writer};

/// An accepted event as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledEvent {
    pub event_id: Uuid,
    pub integration_id: Uuid,
    pub received_at: i64,
    /// The provider's idempotency key, as the connector extracted it.
    pub idempotency_key: Option<String>,
    /// Set when the event was verified at intake.
    pub job: Option<EventJob>,
    /// Set instead when the node had never seen the integration and the
    /// store was unreachable: verified once the store answers.
    pub held: Option<HeldRequest>,
}

/// What the job for a verified event needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventJob {
    pub tenant: String,
    pub connector: String,
    pub revision: i64,
    pub max_attempts: i64,
    pub payload: String,
}

/// The request of an event that could not be verified at intake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRequest {
    pub url: String,
    pub sub_path: String,
    pub headers: BTreeMap<String, String>,
    /// The body, base64.
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes on disk past which appends are refused.
    pub max_bytes: u64,
    /// A segment this large is closed and a new one started.
    pub segment_bytes: u64,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            max_bytes,
            segment_bytes: (max_bytes / 4).clamp(4096, 64 << 20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({bytes} of {max} bytes)")]
    Full { bytes: u64, max: u64 },
    #[error("spool write failed: {0}")]
    Io(String),
    #[error("the spool is closed")]
    Closed,
}

/// What start-up found on disk.
#[derive(Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: usize,
    pub pending: usize,
    /// Each damaged stretch, with its segment file.
    pub damage: Vec<(PathBuf, Damage)>,
}

impl Recovery {
    pub fn damaged_bytes(&self) -> usize {
        self.damage.iter().map(|(_, d)| d.bytes).sum()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SpoolStats {
    pub depth: u64,
    pub bytes: u64,
    /// When the oldest pending event arrived (ms), if any is pending.
    pub oldest_received_at: Option<i64>,
    /// Damaged stretches found since this node started.
    pub damaged: u64,
    /// The most bytes it holds before it refuses events (`spool.max_bytes`).
    pub max_bytes: u64,
}

pub(crate) struct Shared {
    pub pending: Mutex<BTreeMap<u64, Arc<SpooledEvent>>>,
    pub bytes: AtomicU64,
    pub damaged: AtomicU64,
    pub arrived: Notify,
    pub max_bytes: u64,
}

/// A handle on the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("spool directory {0}: {1}")]
    Io(String, std::io::Error),
    #[error("spool directory {0} is in use by another ferry process (one node per data dir)")]
    Locked(String),
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |e| OpenError::Io(path.display().to_string(), e)
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`, recovering every intact
    /// record. A damaged stretch is reported in the `Recovery` and the log,
    /// copied aside as `*.damaged` for inspection, and its segment rewritten
    /// without it, so it is reported once.
    pub fn open(config: SpoolConfig) -> Result<(Spool, Recovery), OpenError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // Two writers would interleave records: one process per spool.
        let lock = std::fs::File::create(dir.join("LOCK")).map_err(io_err(&dir))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(OpenError::Io(dir.display().to_string(), e))
            }
        }
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let base = name.strip_suffix(".log")?.parse::<u64>().ok()?;
                Some((base, e.path()))
            })
            .collect();
        names.sort();

        let mut recovery = Recovery {
            segments: names.len(),
            ..Default::default()
        };
        let mut pending: BTreeMap<u64, Arc<SpooledEvent>> = BTreeMap::new();
        let mut segments = Vec::new();
        let mut next_seq = 1;
        for (base, path) in &names {
            let buf = std::fs::read(path).map_err(io_err(path))?;
            let scan = segment::scan(&buf);
            let mut last = *base;
            for r in &scan.records {
                recovery.records += 1;
                last = last.max(r.seq);
                match r.kind {
                    Kind::Event => match serde_json::from_slice::<SpooledEvent>(r.body) {
                        Ok(ev) => {
                            pending.insert(r.seq, Arc::new(ev));
                        }
                        Err(e) => {
                            tracing::error!(segment = %path.display(), seq = r.seq, error = %e, "spool record has a good checksum but does not decode; skipped")
                        }
                    },
                    Kind::Settled => match serde_json::from_slice::<Vec<u64>>(r.body) {
                        Ok(seqs) => {
                            for s in seqs {
                                pending.remove(&s);
                            }
                        }
                        Err(e) => {
                            tracing::error!(segment = %path.display(), seq = r.seq, error = %e, "spool settle record does not decode; its events will be forwarded again (harmless: forwarding is idempotent)")
                        }
                    },
                }
            }
            let mut size = scan.end as u64;
            if !scan.damage.is_empty() {
                for d in &scan.damage {
                    tracing::error!(
                        segment = %path.display(),
                        offset = d.offset,
                        bytes = d.bytes,
                        torn_tail = d.tail,
                        "spool segment is damaged; the records in this stretch are lost, every intact record around it is kept"
                    );
                    recovery.damage.push((path.clone(), d.clone()));
                }
                let aside = path.with_extension(format!("damaged-{}", Uuid::new_v4().simple()));
                std::fs::copy(path, &aside).map_err(io_err(&aside))?;
                let mut clean = Vec::with_capacity(buf.len());
                for r in &scan.records {
                    segment::encode(&mut clean, r.seq, r.kind, r.body);
                }
                writer::replace_file(path, &clean).map_err(io_err(path))?;
                size = clean.len() as u64;
            }
            next_seq = next_seq.max(last + 1);
            segments.push(Segment {
                base: *base,
                path: path.clone(),
                bytes: size,
                live: 0,
            });
        }
        for seq in pending.keys() {
            if let Some(s) = segments.iter_mut().rev().find(|s| s.base <= *seq) {
                s.live += 1;
            }
        }
        recovery.pending = pending.len();

        let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
        let shared = Arc::new(Shared {
            pending: Mutex::new(pending),
            bytes: AtomicU64::new(bytes),
            damaged: AtomicU64::new(recovery.damage.len() as u64),
            arrived: Notify::new(),
            max_bytes: config.max_bytes,
        });
        let w =
            Writer::open(config, segments, next_seq, shared.clone(), lock).map_err(io_err(&dir))?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("ferry-spool".into())
            .spawn(move || w.run(rx))
            .map_err(io_err(&dir))?;
        Ok((
            Spool {
                tx,
                shared,
                writer: Arc::new(Mutex::new(Some(handle))),
            },
            recovery,
        ))
    }

    /// Appends `event` and returns its sequence number once it is on disk.
    pub async fn append(&self, event: SpooledEvent) -> Result<u64, SpoolError> {
        let body = serde_json::to_vec(&event).map_err(|e| SpoolError::Io(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append {
                body,
                event: Arc::new(event),
                reply,
            })
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// The oldest `max` pending events, in the order they were accepted.
    pub fn pending(&self, max: usize) -> Vec<(u64, Arc<SpooledEvent>)> {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .take(max)
            .map(|(s, e)| (*s, e.clone()))
            .collect()
    }

    /// Marks events as done with (in the store, or dropped): they leave the
    /// pending set now and their segments are deleted once the `Settled`
    /// record is on disk and nothing older is pending.
    pub async fn settle(&self, seqs: Vec<u64>) -> Result<(), SpoolError> {
        if seqs.is_empty() {
            return Ok(());
        }
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for s in &seqs {
                pending.remove(s);
            }
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Settle { seqs, reply })
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Resolves when an event has been appended since the last call.
    pub async fn arrived(&self) {
        self.shared.arrived.notified().await
    }

    /// Wakes the forwarder (the store is back, say).
    pub fn nudge(&self) {
        self.shared.arrived.notify_one();
    }

    pub fn stats(&self) -> SpoolStats {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        SpoolStats {
            depth: pending.len() as u64,
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            oldest_received_at: pending.values().next().map(|e| e.received_at),
            damaged: self.shared.damaged.load(Ordering::Relaxed),
            max_bytes: self.shared.max_bytes,
        }
    }

    /// Stops the writer after everything sent to it is written. Appends
    /// after this fail with `Closed`.
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests;
