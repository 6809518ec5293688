//! The spool's tests: what survives a restart or a crash, a second
//! process, a full spool, torn and flipped records, and a property test
//! of random operations against a model.

use std::collections::BTreeSet;
use std::io::Write;

use proptest::prelude::*;

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let p = std::env::temp_dir().join(format!("ferry-spool-{}", Uuid::new_v4()));
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(n: usize, size: usize) -> SpooledEvent {
    SpooledEvent {
        event_id: Uuid::new_v4(),
        integration_id: Uuid::nil(),
        received_at: n as i64,
        idempotency_key: Some(format!("k{n}")),
        job: Some(EventJob {
            tenant: "t".into(),
            connector: "webhook".into(),
            revision: 1,
            max_attempts: 3,
            payload: "x".repeat(size),
        }),
        held: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn config(dir: &Path, max: u64, segment: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: max,
        segment_bytes: segment,
    }
}

fn ids(spool: &Spool) -> Vec<Uuid> {
    spool
        .pending(usize::MAX)
        .iter()
        .map(|(_, e)| e.event_id)
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn appended_events_survive_a_restart_and_settled_ones_do_not() {
    let dir = Dir::new();
    rt().block_on(async {
        let (spool, rec) = Spool::open(config(&dir.0, 1 << 20, 4096)).expect("open");
        assert_eq!(rec.pending, 0);
        let mut seqs = Vec::new();
        let mut all = Vec::new();
        for i in 0..50 {
            let e = event(i, 100);
            all.push(e.event_id);
            seqs.push(spool.append(e).await.expect("append"));
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        spool.settle(seqs[..20].to_vec()).await.expect("settle");
        assert_eq!(ids(&spool), all[20..].to_vec());
        let stats = spool.stats();
        assert_eq!(stats.depth, 30);
        assert_eq!(stats.oldest_received_at, Some(20));
        spool.close();

        let (spool, rec) = Spool::open(config(&dir.0, 1 << 20, 4096)).expect("reopen");
        assert_eq!(rec.pending, 30);
        assert!(rec.damage.is_empty());
        assert_eq!(ids(&spool), all[20..].to_vec());
        // New appends continue the sequence.
        let next = spool.append(event(99, 10)).await.expect("append");
        assert!(next > *seqs.last().expect("seq"));
        spool.close();
    });
}

/// The files of a running spool, as a crash would leave them: every group
/// answered is on disk, with the zeros the writer fills in ahead of its
/// records after it.
#[test]
fn a_crash_leaves_zeros_ahead_that_recovery_reads_as_unused_space() {
    let (live, copy) = (Dir::new(), Dir::new());
    rt().block_on(async {
        let (spool, _) = Spool::open(config(&live.0, 1 << 24, 1 << 22)).expect("open");
        let mut all = Vec::new();
        for i in 0..25 {
            let e = event(i, 100 + 37 * i);
            all.push(e.event_id);
            spool.append(e).await.expect("append");
        }
        std::fs::create_dir_all(&copy.0).expect("dir");
        let file = segment_files(&live.0).pop().expect("segment");
        let mut bytes = std::fs::read(&file).expect("read");
        let records = segment::scan(&bytes).end;
        assert!(bytes[records..].iter().all(|&b| b == 0));
        if bytes.len() == records {
            // A file system without direct I/O: no zeros ahead, so add
            // what a direct writer leaves.
            bytes.resize(records + (1 << 20), 0);
        }
        std::fs::write(copy.0.join(file.file_name().expect("name")), &bytes).expect("copy");
        spool.close();

        let (spool, rec) = Spool::open(config(&copy.0, 1 << 24, 1 << 22)).expect("recover");
        assert!(rec.damage.is_empty(), "{:?}", rec.damage);
        assert_eq!(ids(&spool), all);
        // The next record goes right after the last one, not after the zeros.
        let e = event(25, 10);
        all.push(e.event_id);
        spool.append(e).await.expect("append");
        spool.close();
        let file = segment_files(&copy.0).pop().expect("segment");
        let bytes = std::fs::read(&file).expect("read");
        assert_eq!(segment::scan(&bytes).end, bytes.len(), "cut back at close");
        let (spool, rec) = Spool::open(config(&copy.0, 1 << 24, 1 << 22)).expect("reopen");
        assert!(rec.damage.is_empty());
        assert_eq!(ids(&spool), all);
        spool.close();
    });
}

#[test]
fn a_second_process_cannot_open_the_same_spool() {
    let dir = Dir::new();
    let (spool, _) = Spool::open(config(&dir.0, 1 << 20, 4096)).expect("open");
    match Spool::open(config(&dir.0, 1 << 20, 4096)) {
        Err(OpenError::Locked(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened twice"),
    }
    spool.close();
    let (again, _) = Spool::open(config(&dir.0, 1 << 20, 4096)).expect("free once closed");
    again.close();
}

#[test]
fn settled_segments_are_deleted_and_bytes_shrink() {
    let dir = Dir::new();
    rt().block_on(async {
        let (spool, _) = Spool::open(config(&dir.0, 1 << 20, 4096)).expect("open");
        let mut seqs = Vec::new();
        for i in 0..100 {
            seqs.push(spool.append(event(i, 200)).await.expect("append"));
        }
        let before = spool.stats().bytes;
        assert!(segment_files(&dir.0).len() > 3, "rotation made segments");
        spool.settle(seqs.clone()).await.expect("settle");
        // One more group rotates the now idle segment away.
        let last = spool.append(event(100, 10)).await.expect("append");
        spool.settle(vec![last]).await.expect("settle");
        let after = spool.stats().bytes;
        assert!(after < before / 4, "bytes {before} -> {after}");
        assert!(segment_files(&dir.0).len() <= 2);
        spool.close();
    });
}

#[test]
fn a_full_spool_refuses_and_accepts_again_once_drained() {
    let dir = Dir::new();
    rt().block_on(async {
        let (spool, _) = Spool::open(config(&dir.0, 8192, 4096)).expect("open");
        let mut seqs = Vec::new();
        let full = loop {
            match spool.append(event(seqs.len(), 500)).await {
                Ok(s) => seqs.push(s),
                Err(e) => break e,
            }
        };
        assert!(matches!(full, SpoolError::Full { max: 8192, .. }), "{full}");
        assert!(seqs.len() >= 8, "only {} fit", seqs.len());
        assert!(spool.stats().bytes <= 8192);
        spool.settle(seqs.clone()).await.expect("settle");
        spool
            .append(event(0, 500))
            .await
            .expect("room again after draining");
        spool.close();
    });
}

/// Ten events of the same size in one closed segment: their ids and the file.
async fn ten_events(dir: &Path) -> (Vec<Uuid>, PathBuf) {
    let (spool, _) = Spool::open(config(dir, 1 << 20, 1 << 20)).expect("open");
    let mut all = Vec::new();
    for i in 0..10 {
        let e = event(i, 50);
        all.push(e.event_id);
        spool.append(e).await.expect("append");
    }
    spool.close();
    (all, segment_files(dir).pop().expect("segment"))
}

#[test]
fn a_torn_tail_is_reported_and_cut_off_and_the_rest_kept() {
    let dir = Dir::new();
    rt().block_on(async {
        let (all, file) = ten_events(&dir.0).await;
        let len = std::fs::metadata(&file).expect("meta").len();
        // Cut the last record in half.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open")
            .set_len(len - 30)
            .expect("truncate");

        let (spool, rec) = Spool::open(config(&dir.0, 1 << 20, 1 << 20)).expect("reopen");
        assert_eq!(rec.damage.len(), 1);
        assert!(rec.damage[0].1.tail);
        assert_eq!(ids(&spool), all[..9].to_vec());
        assert_eq!(spool.stats().damaged, 1);
        spool
            .append(event(10, 50))
            .await
            .expect("append after recovery");
        spool.close();

        // Reported once: the segment was rewritten without the damage.
        let (spool, rec) = Spool::open(config(&dir.0, 1 << 20, 1 << 20)).expect("reopen");
        assert!(rec.damage.is_empty());
        assert_eq!(spool.pending(usize::MAX).len(), 10);
        spool.close();
        let aside = std::fs::read_dir(&dir.0)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
            .count();
        assert_eq!(aside, 1, "the damaged file is kept aside");
    });
}

#[test]
fn a_flipped_byte_loses_one_record_only() {
    let dir = Dir::new();
    rt().block_on(async {
        let (all, file) = ten_events(&dir.0).await;
        let mut bytes = std::fs::read(&file).expect("read");
        let one = bytes.len() / 10;
        bytes[one * 4 + one / 2] ^= 0xff; // inside the fifth record
        std::fs::write(&file, &bytes).expect("write");

        let (spool, rec) = Spool::open(config(&dir.0, 1 << 20, 1 << 20)).expect("reopen");
        assert_eq!(rec.damage.len(), 1);
        assert!(!rec.damage[0].1.tail);
        let mut want = all.clone();
        want.remove(4);
        assert_eq!(ids(&spool), want);
        spool.close();
    });
}

/// A model test: any sequence of appends, forwards (settles), torn writes
/// at a crash and restarts recovers exactly the events that were
/// acknowledged and not settled, in order.
#[derive(Debug, Clone)]
enum Op {
    Append { size: usize },
    Forward { n: usize },
    CrashWithTornWrite { garbage: Vec<u8> },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..600).prop_map(|size| Op::Append { size }),
        2 => (0usize..8).prop_map(|n| Op::Forward { n }),
        1 => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|garbage| Op::CrashWithTornWrite { garbage }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn spool_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = Dir::new();
        let cfg = config(&dir.0, 16 << 10, 2048);
        rt().block_on(async {
            let (mut spool, _) = Spool::open(cfg.clone()).expect("open");
            // The model: acknowledged, unsettled events in acceptance order.
            let mut model: Vec<(u64, Uuid)> = Vec::new();
            let mut settled: BTreeSet<Uuid> = BTreeSet::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Append { size } => {
                        let e = event(i, size);
                        let id = e.event_id;
                        match spool.append(e).await {
                            Ok(seq) => model.push((seq, id)),
                            Err(SpoolError::Full { .. }) => {}
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                    Op::Forward { n } => {
                        let batch = spool.pending(n);
                        let seqs: Vec<u64> = batch.iter().map(|(s, _)| *s).collect();
                        for (_, e) in &batch {
                            settled.insert(e.event_id);
                        }
                        spool.settle(seqs).await.expect("settle");
                        model.retain(|(_, id)| !settled.contains(id));
                    }
                    Op::CrashWithTornWrite { garbage } => {
                        spool.close();
                        let file = segment_files(&dir.0).pop().expect("segment");
                        std::fs::OpenOptions::new()
                            .append(true)
                            .open(&file)
                            .and_then(|mut f| f.write_all(&garbage))
                            .expect("tear");
                        let (s, rec) = Spool::open(cfg.clone()).expect("recover");
                        // Random bytes are never a record with a good
                        // checksum; zeros are unused space, not damage.
                        prop_assert_eq!(
                            rec.damage.is_empty(),
                            garbage.iter().all(|&b| b == 0)
                        );
                        spool = s;
                    }
                    Op::Restart => {
                        spool.close();
                        spool = Spool::open(cfg.clone()).expect("reopen").0;
                    }
                }
                let got: Vec<Uuid> = ids(&spool);
                let want: Vec<Uuid> = model.iter().map(|(_, id)| *id).collect();
                prop_assert_eq!(got, want);
                prop_assert!(spool.stats().bytes <= cfg.max_bytes + 4096);
            }
            spool.close();
            Ok(())
        })?;
    }
}
