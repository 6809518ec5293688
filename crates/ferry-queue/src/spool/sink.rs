//! How the writer puts a group of records on disk, durably, in one system
//! call where it can.
//!
//! On Linux the active segment is opened with `O_DIRECT | O_DSYNC`: a write
//! returns once its blocks are on stable storage, without the page cache
//! and its writeback in between. On this project's hosts that halves the
//! CPU each sync costs (see `BENCHMARKS.md`). Direct writes must cover
//! whole, aligned blocks, so each group is written from the start of the
//! block holding the segment's end: the part of that block already on disk
//! (`tail`, kept in memory), the new records, then zeros to the block's
//! end. The prefix of the block is the same bytes in the old and the new
//! version, so a write torn at any sector keeps every acknowledged record.
//!
//! The file is kept zero-filled ahead of the end (`PREFILL`), so that a
//! group's write only overwrites blocks the file already has: it changes no
//! metadata and is one write and one cache flush, where an extending write
//! must also write the inode. The scan (`segment::scan`) reads zeros after
//! the last record as unused space, not damage. A segment is cut back to
//! its records when it is closed.
//!
//! Where direct I/O is refused (tmpfs, some network file systems, other
//! systems), records are written at the end and `fdatasync`ed, as before.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Direct writes are aligned to, and cover whole, blocks of this size: the
/// page size, a multiple of every common logical block size.
const BLOCK: u64 = 4096;
/// Zeros written ahead of the end at a time.
const PREFILL: u64 = 64 << 10;

fn block_start(at: u64) -> u64 {
    at / BLOCK * BLOCK
}

fn round_up(at: u64) -> u64 {
    at.div_ceil(BLOCK) * BLOCK
}

pub(crate) struct Sink {
    path: PathBuf,
    file: File,
    direct: bool,
    /// The segment's length in records: where the next one goes.
    end: u64,
    /// The file's length (records, padding and prefilled zeros).
    len: u64,
    /// The bytes from the start of `end`'s block to `end` (direct only).
    tail: Vec<u8>,
    /// Staging for direct writes, with room to start on a block boundary.
    stage: Vec<u8>,
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

fn open_buffered(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Whether `e` says the file (system) does not take direct writes.
fn refused(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        e.raw_os_error() == Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

impl Sink {
    /// Opens the existing segment at `path`, whose records end at `end`;
    /// everything after `end` in the file is zeros.
    pub fn open(path: &Path, end: u64) -> io::Result<Sink> {
        Sink::open_as(path, end, true)
    }

    /// As `open`; `try_direct: false` writes through the page cache.
    fn open_as(path: &Path, end: u64, try_direct: bool) -> io::Result<Sink> {
        let mut sink = Sink {
            path: path.to_path_buf(),
            file: open_buffered(path)?,
            direct: false,
            end,
            len: 0,
            tail: Vec::new(),
            stage: Vec::new(),
        };
        sink.len = sink.file.metadata()?.len();
        let from = block_start(end);
        sink.tail = vec![0; (end - from) as usize];
        sink.file.read_exact_at(&mut sink.tail, from)?;
        if !try_direct {
            return Ok(sink);
        }
        match open_direct(path) {
            Ok(f) => {
                sink.file = f;
                sink.direct = true;
            }
            Err(e) => {
                tracing::debug!(segment = %path.display(), error = %e, "no direct I/O for the spool; writing through the page cache and fdatasync");
            }
        }
        Ok(sink)
    }

    /// Where the segment's records end.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Writes `records` after the end and returns once they are on stable
    /// storage. On an error the end stays where it was and anything the
    /// write left past it is cut off.
    pub fn write(&mut self, records: &[u8]) -> io::Result<()> {
        let done = if self.direct {
            match self.write_direct(records) {
                Err(e) if refused(&e) => {
                    tracing::warn!(segment = %self.path.display(), error = %e, "the file system refuses direct writes; the spool writes through the page cache and fdatasync instead");
                    self.file = open_buffered(&self.path)?;
                    self.direct = false;
                    self.write_buffered(records)
                }
                other => other,
            }
        } else {
            self.write_buffered(records)
        };
        match done {
            Ok(()) => {
                self.end += records.len() as u64;
                Ok(())
            }
            Err(e) => {
                // The next group follows the last good record, and no part
                // of this one is left after it for a scan to find.
                self.cut();
                Err(e)
            }
        }
    }

    fn write_buffered(&mut self, records: &[u8]) -> io::Result<()> {
        self.file.write_all_at(records, self.end)?;
        self.file.sync_data()?;
        self.len = self.len.max(self.end + records.len() as u64);
        Ok(())
    }

    fn write_direct(&mut self, records: &[u8]) -> io::Result<()> {
        let from = block_start(self.end);
        let new_end = self.end + records.len() as u64;
        let span = (round_up(new_end) - from) as usize;
        let stage = aligned(&mut self.stage, span);
        let t = self.tail.len();
        stage[..t].copy_from_slice(&self.tail);
        stage[t..t + records.len()].copy_from_slice(records);
        self.file.write_all_at(stage, from)?;
        let keep = (block_start(new_end) - from) as usize;
        self.tail.clear();
        self.tail
            .extend_from_slice(&stage[keep..(new_end - from) as usize]);
        self.len = self.len.max(from + span as u64);
        Ok(())
    }

    /// Zero-fills the file ahead of the end when little is left, so that
    /// the next groups' writes change no metadata. Called after a group is
    /// answered; a failure only means later writes extend the file.
    pub fn prefill(&mut self) {
        if !self.direct || self.len >= self.end + PREFILL / 2 {
            return;
        }
        let at = round_up(self.len.max(self.end));
        let zeros = aligned(&mut self.stage, PREFILL as usize);
        match self.file.write_all_at(zeros, at) {
            Ok(()) => self.len = at + PREFILL,
            Err(e) => {
                tracing::debug!(segment = %self.path.display(), error = %e, "cannot zero-fill the spool segment ahead");
                self.cut();
            }
        }
    }

    /// Cuts the file back to its records (at close and rotation, and after
    /// a failed write).
    pub fn cut(&mut self) {
        if self.len == self.end {
            return;
        }
        match self.file.set_len(self.end) {
            Ok(()) => self.len = self.end,
            Err(e) => {
                tracing::error!(segment = %self.path.display(), error = %e, "cannot cut the spool segment back to its records; start-up will skip what follows them")
            }
        }
    }
}

/// `len` zeroed bytes of `buf` that start on a block boundary.
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let room = len + BLOCK as usize;
    buf.clear();
    buf.resize(room, 0);
    let off = buf.as_ptr().align_offset(BLOCK as usize);
    &mut buf[off..off + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_slices_start_on_a_block() {
        let mut buf = Vec::new();
        for len in [0, 1, 4096, 5000, 1 << 20] {
            let s = aligned(&mut buf, len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % BLOCK as usize, 0);
            assert!(s.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn groups_written_across_blocks_read_back_as_one_log_then_zeros() {
        for direct in [true, false] {
            groups_read_back(direct);
        }
    }

    fn groups_read_back(direct: bool) {
        let dir = std::env::temp_dir().join(format!("ferry-sink-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("seg");
        File::create(&path).expect("create");
        let mut sink = Sink::open_as(&path, 0, direct).expect("open");
        let mut want = Vec::new();
        for (i, n) in [10usize, 4086, 1, 9000, 4096, 3].into_iter().enumerate() {
            let group = vec![b'a' + i as u8; n];
            sink.write(&group).expect("write");
            sink.prefill();
            want.extend_from_slice(&group);
        }
        let got = std::fs::read(&path).expect("read");
        assert_eq!(&got[..want.len()], &want[..]);
        assert!(got[want.len()..].iter().all(|&b| b == 0));
        // Reopened at its end, it carries on where it stopped.
        let end = want.len() as u64;
        drop(sink);
        let mut sink = Sink::open_as(&path, end, direct).expect("reopen");
        sink.write(b"more").expect("write");
        want.extend_from_slice(b"more");
        sink.cut();
        assert_eq!(std::fs::read(&path).expect("read"), want);
        let _ = std::fs::remove_dir_all(dir);
    }
}
