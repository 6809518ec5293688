//! The spool's on-disk record format and the scan that recovers it.
//!
//! A segment is a file of records, each
//!
//! ```text
//! magic "FRY1" | len: u32 LE | crc32c: u32 LE | seq: u64 LE | kind: u8 | body
//!                 \_______________ crc covers len and everything after ___/
//! ```
//!
//! where `len` counts `seq`, `kind` and `body`. The magic lets a scan find
//! the next record after a damaged one; the checksum tells a torn or
//! flipped record from a good one. Nothing is trusted that the checksum
//! does not cover.

use crc::{Crc, Table, CRC_32_ISCSI};

pub const MAGIC: [u8; 4] = *b"FRY1";
pub const HEADER: usize = 12;
/// `seq` and `kind`, the part of `len` that is not body.
const FIXED: usize = 9;
/// Larger claims in a header are damage, not records.
pub const MAX_RECORD: usize = 64 << 20;

/// Slice-by-16 tables: the CRC is on every accepted event's path.
const CRC: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An accepted event.
    Event = 1,
    /// Events now in the store, or dropped after a failed late verification.
    Settled = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Event),
            2 => Some(Kind::Settled),
            _ => None,
        }
    }
}

/// Appends one framed record to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, kind: Kind, body: &[u8]) {
    let len = (FIXED + body.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    let mut digest = CRC.digest();
    digest.update(&out[start + 4..start + 8]);
    digest.update(&out[start + HEADER..]);
    let crc = digest.finalize().to_le_bytes();
    out[start + 8..start + 12].copy_from_slice(&crc);
}

pub fn framed_len(body_len: usize) -> usize {
    HEADER + FIXED + body_len
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: usize,
    pub seq: u64,
    pub kind: Kind,
    pub body: &'a [u8],
}

/// A stretch of a segment that is not a whole, intact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: usize,
    pub bytes: usize,
    /// Nothing intact follows it: a write cut short by a crash.
    pub tail: bool,
}

/// The record at `pos`, if one is whole and intact there.
fn record_at(buf: &[u8], pos: usize) -> Option<Record<'_>> {
    let head = buf.get(pos..pos + HEADER)?;
    if head[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !(FIXED..=MAX_RECORD).contains(&len) {
        return None;
    }
    let payload = buf.get(pos + HEADER..pos + HEADER + len)?;
    let want = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let mut digest = CRC.digest();
    digest.update(&head[4..8]);
    digest.update(payload);
    if digest.finalize() != want {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[..8]);
    let kind = Kind::from_u8(payload[8])?;
    Some(Record {
        offset: pos,
        seq: u64::from_le_bytes(seq),
        kind,
        body: &payload[FIXED..],
    })
}

/// Every intact record of a segment, and every damaged stretch between or
/// after them.
pub struct Scan<'a> {
    pub records: Vec<Record<'a>>,
    pub damage: Vec<Damage>,
    /// Where the last intact record ends.
    pub end: usize,
}

/// Zeros from `pos` to the end of the segment are space the writer has
/// zero-filled ahead of its records (`super::sink`), not damage: no record
/// begins with a zero byte.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    let mut records = Vec::new();
    let mut damage = Vec::new();
    let mut pos = 0;
    let mut end = 0;
    while pos < buf.len() {
        if let Some(r) = record_at(buf, pos) {
            pos += HEADER + FIXED + r.body.len();
            end = pos;
            records.push(r);
            continue;
        }
        if buf[pos..].iter().all(|&b| b == 0) {
            break;
        }
        // Damage: resynchronise on the next intact record, if any.
        let next = (pos + 1..buf.len())
            .find(|&p| buf[p..].starts_with(&MAGIC) && record_at(buf, p).is_some());
        match next {
            Some(p) => {
                damage.push(Damage {
                    offset: pos,
                    bytes: p - pos,
                    tail: false,
                });
                pos = p;
            }
            None => {
                // The zeros after a torn write are unused space again.
                let last = buf.iter().rposition(|&b| b != 0).unwrap_or(pos);
                damage.push(Damage {
                    offset: pos,
                    bytes: last + 1 - pos,
                    tail: true,
                });
                break;
            }
        }
    }
    Scan {
        records,
        damage,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, 1, Kind::Event, b"first");
        encode(&mut buf, 2, Kind::Event, b"second");
        encode(&mut buf, 3, Kind::Settled, b"[1]");
        buf
    }

    #[test]
    fn round_trip() {
        let buf = three();
        let s = scan(&buf);
        assert!(s.damage.is_empty());
        let seqs: Vec<_> = s.records.iter().map(|r| (r.seq, r.kind, r.body)).collect();
        assert_eq!(
            seqs,
            vec![
                (1, Kind::Event, &b"first"[..]),
                (2, Kind::Event, &b"second"[..]),
                (3, Kind::Settled, &b"[1]"[..])
            ]
        );
    }

    #[test]
    fn every_truncation_keeps_the_whole_records_before_it() {
        let buf = three();
        let second_end = framed_len(5) + framed_len(6);
        for cut in 0..buf.len() {
            let s = scan(&buf[..cut]);
            let whole = [framed_len(5), second_end, buf.len()]
                .iter()
                .filter(|&&end| end <= cut)
                .count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            let valid_end: usize = s.records.iter().map(|r| framed_len(r.body.len())).sum();
            assert_eq!(s.end, valid_end, "cut at {cut}");
            // The torn part counts up to its last non-zero byte (a record
            // starts with its magic, so any torn part has one).
            let torn = buf[..cut]
                .iter()
                .rposition(|&b| b != 0)
                .filter(|&last| last >= valid_end)
                .map_or(0, |last| last + 1 - valid_end);
            assert_eq!(cut > valid_end, torn > 0, "cut at {cut}");
            assert_eq!(s.damage.iter().map(|d| d.bytes).sum::<usize>(), torn);
            assert!(s.damage.iter().all(|d| d.tail));
        }
    }

    #[test]
    fn zeros_after_the_records_are_unused_space_not_damage() {
        let mut buf = three();
        let records = buf.len();
        buf.resize(records + 10_000, 0);
        let s = scan(&buf);
        assert_eq!(s.records.len(), 3);
        assert!(s.damage.is_empty());
        assert_eq!(s.end, records);
        // A torn record before the zeros is damage of its own bytes only.
        buf[records..records + 7].copy_from_slice(b"FRY1\x05\x00\x00");
        let s = scan(&buf);
        assert_eq!(s.records.len(), 3);
        assert_eq!(
            s.damage,
            vec![Damage {
                offset: records,
                bytes: 5,
                tail: true
            }]
        );
        assert_eq!(s.end, records);
    }

    #[test]
    fn a_flipped_byte_loses_only_its_record() {
        let clean = three();
        for at in 0..clean.len() {
            let mut buf = clean.clone();
            buf[at] ^= 0x40;
            let s = scan(&buf);
            let seqs: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
            let hit = if at < framed_len(5) {
                1
            } else if at < framed_len(5) + framed_len(6) {
                2
            } else {
                3
            };
            let want: Vec<u64> = [1, 2, 3].into_iter().filter(|&q| q != hit).collect();
            assert_eq!(seqs, want, "flip at {at}");
            assert_eq!(s.damage.len(), 1, "flip at {at}");
        }
    }
}
