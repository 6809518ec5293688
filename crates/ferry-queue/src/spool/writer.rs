//! The spool's single writer thread: group commit, segment rotation and
//! compaction. It takes every message waiting in its channel, frames them
//! into one buffer, writes it durably in one go (`super::sink`), then
//! answers each sender. While it writes, new appends queue up and form the
//! next group, so the number of events per sync grows with the load.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::segment::{self, Kind};
use super::sink::Sink;
use super::{segment_name, Shared, SpoolConfig, SpoolError, SpooledEvent};

/// Most messages taken into one group.
const MAX_GROUP: usize = 4096;
/// A segment with nothing pending is rotated (and so deleted) past this.
const IDLE_ROTATE: u64 = 256 << 10;

pub(crate) enum Msg {
    Append {
        body: Vec<u8>,
        event: Arc<SpooledEvent>,
        reply: oneshot::Sender<Result<u64, SpoolError>>,
    },
    Settle {
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    Stop,
}

pub(crate) struct Segment {
    /// The sequence number of its first record, also its file name.
    pub base: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Events in it not yet settled.
    pub live: usize,
}

pub(crate) struct Writer {
    config: SpoolConfig,
    segments: Vec<Segment>,
    /// The active (last) segment.
    sink: Sink,
    next_seq: u64,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    /// Held (locked) for as long as the writer runs.
    _lock: File,
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

impl Writer {
    pub fn open(
        config: SpoolConfig,
        mut segments: Vec<Segment>,
        next_seq: u64,
        shared: Arc<Shared>,
        lock: File,
    ) -> std::io::Result<Writer> {
        if segments.is_empty() {
            let path = config.dir.join(segment_name(next_seq));
            File::create(&path)?.sync_all()?;
            sync_dir(&config.dir)?;
            segments.push(Segment {
                base: next_seq,
                path,
                bytes: 0,
                live: 0,
            });
        }
        let (active, end) = segments
            .last()
            .map(|s| (s.path.clone(), s.bytes))
            .unwrap_or_default();
        let sink = Sink::open(&active, end)?;
        let mut w = Writer {
            config,
            segments,
            sink,
            next_seq,
            shared,
            buf: Vec::with_capacity(1 << 20),
            _lock: lock,
        };
        // Segments recovered fully settled go now.
        w.compact();
        Ok(w)
    }

    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            if self.commit(group) {
                return;
            }
        }
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn active(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn rotate_if_due(&mut self) {
        let (bytes, live) = {
            let a = self.active();
            (a.bytes, a.live)
        };
        let due = bytes >= self.config.segment_bytes || (live == 0 && bytes >= IDLE_ROTATE);
        if !due {
            return;
        }
        let path = self.config.dir.join(segment_name(self.next_seq));
        let opened = File::create(&path)
            .and_then(|f| f.sync_all())
            .and_then(|_| sync_dir(&self.config.dir))
            .and_then(|_| Sink::open(&path, 0));
        match opened {
            Ok(sink) => {
                // The old segment is cut back to its records.
                std::mem::replace(&mut self.sink, sink).cut();
                self.segments.push(Segment {
                    base: self.next_seq,
                    path,
                    bytes: 0,
                    live: 0,
                });
                self.compact();
            }
            // Keep writing to the current segment; it only grows longer.
            Err(e) => tracing::warn!(error = %e, "cannot start a new spool segment"),
        }
    }

    /// Deletes the oldest segments while nothing in them is pending.
    fn compact(&mut self) {
        while self.segments.len() > 1 && self.segments[0].live == 0 {
            if let Err(e) = std::fs::remove_file(&self.segments[0].path) {
                tracing::warn!(segment = %self.segments[0].path.display(), error = %e, "cannot delete a settled spool segment");
                break;
            }
            self.segments.remove(0);
        }
        self.shared
            .bytes
            .store(self.total_bytes(), Ordering::Relaxed);
    }

    fn segment_of(&mut self, seq: u64) -> Option<&mut Segment> {
        let i = self.segments.partition_point(|s| s.base <= seq);
        i.checked_sub(1).map(|i| &mut self.segments[i])
    }

    /// Writes one group; true when a `Stop` was in it.
    fn commit(&mut self, group: Vec<Msg>) -> bool {
        self.rotate_if_due();
        self.buf.clear();
        let max = self.config.max_bytes;
        let mut projected = self.total_bytes();
        let mut appended = Vec::new();
        let mut settled = Vec::new();
        let mut stop = false;
        for msg in group {
            match msg {
                Msg::Append { body, event, reply } => {
                    let len = segment::framed_len(body.len()) as u64;
                    if projected + len > max {
                        let _ = reply.send(Err(SpoolError::Full {
                            bytes: projected,
                            max,
                        }));
                        continue;
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    segment::encode(&mut self.buf, seq, Kind::Event, &body);
                    projected += len;
                    appended.push((seq, event, reply));
                }
                Msg::Settle { seqs, reply } => {
                    let body = serde_json::to_vec(&seqs).unwrap_or_default();
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    segment::encode(&mut self.buf, seq, Kind::Settled, &body);
                    projected += segment::framed_len(body.len()) as u64;
                    settled.push((seqs, reply));
                }
                Msg::Stop => stop = true,
            }
        }
        if self.buf.is_empty() {
            if stop {
                self.sink.cut();
            }
            return stop;
        }
        let written = self.sink.write(&self.buf);
        match written {
            Ok(()) => {
                let n = appended.len();
                // The sink knows where the active segment's records end.
                let end = self.sink.end();
                let a = self.active();
                a.bytes = end;
                a.live += n;
                {
                    let mut pending = self
                        .shared
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for (seq, event, _) in &appended {
                        pending.insert(*seq, event.clone());
                    }
                }
                if n > 0 {
                    self.shared.arrived.notify_one();
                }
                for (seq, _, reply) in appended {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                // The sink has cut off whatever part of the group reached
                // the file, so the next group follows the last good record.
                tracing::error!(error = %e, "spool write failed");
                for (_, _, reply) in appended {
                    let _ = reply.send(Err(SpoolError::Io(e.to_string())));
                }
            }
        }
        // Settled events are in the store whether or not their record
        // reached the disk (if not, a restart forwards them again, which
        // the store deduplicates), so their segments may go either way.
        for (seqs, reply) in settled {
            for s in &seqs {
                if let Some(seg) = self.segment_of(*s) {
                    seg.live = seg.live.saturating_sub(1);
                }
            }
            let _ = reply.send(Ok(()));
        }
        self.compact();
        if stop {
            self.sink.cut();
        } else {
            self.sink.prefill();
        }
        stop
    }
}
