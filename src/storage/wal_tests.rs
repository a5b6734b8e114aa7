//! Tests of the log in WAL mode, the log's recovered state and the snapshot scan, on both
//! engines.
//!
//! Each test is an async function of a [`Fixture`]: an engine that can be "restarted". The
//! `wal_suite!` macro turns each into a test on the memory engine and one on the disk engine in
//! a temporary directory. A restart drops the committer (which waits for its thread) and, on
//! disk, the engine, then opens the directory again and recovers the log's state from it; the
//! memory engine keeps its map, so there a restart tests what the committer recovers from the
//! engine, and the disk tests what fjall kept. What a crash loses (the writes after the last
//! fsync) is tested on [`Crashable`], a memory engine that keeps only what was persisted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot::error::TryRecvError;

use super::disk::Disk;
use super::engine::{Engine, Memory, Scan, Snapshot, Space, Write};
use super::log::{log_id_at, wal_state, Committer};
use super::record::{
    encode_entry, first_txn_record, read_entries, LogEntry, LogId, LogRead, Lsn, WalState,
    MAX_TXN_SCAN,
};
use super::snapshot::{Cursor, ShardSnapshot};
use super::store::{Mode, Store};
use crate::error::{Error, Result};

/// An engine that counts its fsyncs and makes each take a little while, as a disk does, so
/// that commits queue up behind one.
struct Counting {
    inner: Arc<dyn Engine>,
    persists: AtomicUsize,
    writes: AtomicUsize,
}

impl Counting {
    fn new(inner: Arc<dyn Engine>) -> Self {
        Self {
            inner,
            persists: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        }
    }
}

impl Engine for Counting {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(space, key)
    }
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.inner.scan_prefix(space, prefix)
    }
    fn scan_range(
        &self,
        space: Space,
        start: std::ops::Bound<Vec<u8>>,
        end: std::ops::Bound<Vec<u8>>,
    ) -> Scan<'_> {
        self.inner.scan_range(space, start, end)
    }
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        self.inner.snapshot()
    }
    fn write(&self, writes: Vec<Write>) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write(writes)
    }
    fn persist(&self) -> Result<()> {
        self.persists.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.inner.persist()
    }
}

/// A memory engine that can crash: it keeps the batches written since the last fsync apart,
/// and after [`Crashable::crash`] it writes and persists nothing more, so that
/// [`Crashable::recovered`] holds only what was persisted, as a disk after a power cut.
#[derive(Default)]
struct Crashable {
    live: Memory,
    persisted: std::sync::Mutex<Vec<Vec<Write>>>,
    unpersisted: std::sync::Mutex<Vec<Vec<Write>>>,
    crashed: std::sync::atomic::AtomicBool,
}

impl Crashable {
    fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
    }

    /// A new engine with what was persisted before the crash.
    fn recovered(&self) -> Crashable {
        let engine = Crashable::default();
        for batch in self.persisted.lock().unwrap().iter() {
            engine.write(batch.clone()).unwrap();
        }
        engine.persist().unwrap();
        engine
    }
}

impl Engine for Crashable {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.live.get(space, key)
    }
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.live.scan_prefix(space, prefix)
    }
    fn scan_range(
        &self,
        space: Space,
        start: std::ops::Bound<Vec<u8>>,
        end: std::ops::Bound<Vec<u8>>,
    ) -> Scan<'_> {
        self.live.scan_range(space, start, end)
    }
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        self.live.snapshot()
    }
    fn write(&self, writes: Vec<Write>) -> Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.unpersisted.lock().unwrap().push(writes.clone());
        self.live.write(writes)
    }
    fn persist(&self) -> Result<()> {
        if !self.crashed.load(Ordering::SeqCst) {
            let batches = std::mem::take(&mut *self.unpersisted.lock().unwrap());
            self.persisted.lock().unwrap().extend(batches);
        }
        Ok(())
    }
}

/// The apply takes no fsync of its own: a crash can lose it, and then the entries are pending
/// again after the restart and applied again, from the log, which the crash did not lose.
#[tokio::test]
async fn effects_lost_in_a_crash_are_applied_again_from_the_log() {
    let engine = Arc::new(Crashable::default());
    let c = Committer::start_wal(engine.clone(), WalState::default());
    let receivers: Vec<_> = (1..=3)
        .map(|i| c.submit(i, put("k", &i.to_string())).unwrap())
        .collect();
    durable(&c, 3).await;
    assert_eq!(commit_to(&c, 3).await.unwrap(), 3);
    for rx in receivers {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(engine.get(Space::Data, b"k").unwrap(), Some(b"3".to_vec()));
    engine.crash();
    drop(c);

    let engine = Arc::new(engine.recovered());
    let state = wal_state(engine.as_ref()).unwrap();
    assert_eq!(state.applied, LogId::default());
    assert_eq!(state.last, LogId::new(1, 3));
    assert_eq!(engine.get(Space::Data, b"k").unwrap(), None);
    let c = Committer::start_wal(engine.clone(), state);
    assert_eq!(commit_to(&c, 3).await.unwrap(), 3);
    assert_eq!(engine.get(Space::Data, b"k").unwrap(), Some(b"3".to_vec()));
}

/// In Direct mode an acknowledged commit is durable with its effects, so a crash loses none.
#[tokio::test]
async fn direct_commits_survive_a_crash_with_their_effects() {
    let engine = Arc::new(Crashable::default());
    let c = Committer::start(engine.clone(), 1);
    for i in 1..=3u64 {
        c.commit(i, put(&format!("k{i}"), "v")).await.unwrap();
    }
    engine.crash();
    drop(c);
    let engine = Arc::new(engine.recovered());
    let state = wal_state(engine.as_ref()).unwrap();
    assert_eq!(
        (state.applied, state.last),
        (LogId::new(1, 3), LogId::new(1, 3))
    );
    assert_eq!(engine.get(Space::Data, b"k3").unwrap(), Some(b"v".to_vec()));
}

/// An engine that a test can restart.
trait Fixture {
    fn engine(&self) -> Arc<dyn Engine>;
    /// Reopens the engine; every committer over it must have been dropped.
    fn restart(&mut self);
}

struct InMemory(Arc<Memory>);

impl Fixture for InMemory {
    fn engine(&self) -> Arc<dyn Engine> {
        self.0.clone()
    }
    fn restart(&mut self) {}
}

struct OnDisk {
    dir: tempfile::TempDir,
    engine: Option<Arc<Disk>>,
}

impl Fixture for OnDisk {
    fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone().expect("engine open")
    }
    fn restart(&mut self) {
        let engine = self.engine.take().expect("engine open");
        assert_eq!(Arc::strong_count(&engine), 1, "the engine is still in use");
        drop(engine);
        self.engine = Some(Arc::new(Disk::open(self.dir.path()).unwrap()));
    }
}

/// A WAL-mode committer over the fixture's engine, on the state recovered from it.
fn wal(f: &dyn Fixture) -> Committer {
    let engine = f.engine();
    let state = wal_state(engine.as_ref()).unwrap();
    Committer::start_wal(engine, state)
}

fn put(key: &str, value: &str) -> Vec<Write> {
    vec![Write::Put(
        Space::Data,
        key.as_bytes().to_vec(),
        value.as_bytes().to_vec(),
    )]
}

fn entry(epoch: u64, lsn: Lsn, key: &str, value: &str) -> LogEntry {
    LogEntry {
        lsn,
        epoch,
        txn: lsn,
        writes: put(key, value),
    }
}

fn data(f: &dyn Fixture, key: &str) -> Option<String> {
    f.engine()
        .get(Space::Data, key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// Waits until the durable watch reaches `lsn`.
async fn durable(c: &Committer, lsn: Lsn) -> LogId {
    let mut rx = c.durable().unwrap();
    let id = *rx.wait_for(|id| id.lsn >= lsn).await.unwrap();
    id
}

async fn append(c: &Committer, entries: Vec<LogEntry>) -> Result<LogId> {
    c.append(entries)?.await.unwrap()
}

async fn commit_to(c: &Committer, lsn: Lsn) -> Result<Lsn> {
    c.commit_to(lsn)?.await.unwrap()
}

async fn many_submits_share_few_fsyncs_and_wait_for_their_commit(f: &mut dyn Fixture) {
    let engine = Arc::new(Counting::new(f.engine()));
    let c = Committer::start_wal(engine.clone(), WalState::default());
    let receivers: Vec<_> = (0..200)
        .map(|i| c.submit(i, put(&format!("k{i:03}"), "v")).unwrap())
        .collect();
    assert_eq!(durable(&c, 200).await, LogId::new(1, 200));
    let groups = c.stats.groups.load(Ordering::Relaxed);
    assert!(groups < 100, "{groups} fsyncs for 200 queued commits");
    assert_eq!(engine.persists.load(Ordering::Relaxed) as u64, groups);
    // Durable, but not committed: nobody has heard back, and no row is there.
    let mut receivers = receivers;
    for rx in &mut receivers {
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }
    assert_eq!(data(f, "k000"), None);
    assert_eq!(commit_to(&c, 200).await.unwrap(), 200);
    // Applying takes no fsync of its own.
    assert_eq!(engine.persists.load(Ordering::Relaxed) as u64, groups);
    for (i, rx) in receivers.into_iter().enumerate() {
        assert_eq!(rx.await.unwrap().unwrap(), i as u64 + 1);
    }
    assert_eq!(data(f, "k199").as_deref(), Some("v"));
}

async fn effects_appear_only_at_commit_to_and_in_lsn_order(f: &mut dyn Fixture) {
    let c = wal(f);
    let mut first = c.submit(1, put("a", "1")).unwrap();
    let second = c.submit(2, put("a", "2")).unwrap();
    c.set_epoch(2);
    let mut third = c.submit(3, put("b", "3")).unwrap();
    durable(&c, 3).await;
    assert_eq!(data(f, "a"), None);
    assert_eq!(super::log::applied_lsn(f.engine().as_ref()).unwrap(), 0);
    assert!(matches!(first.try_recv(), Err(TryRecvError::Empty)));

    assert_eq!(commit_to(&c, 2).await.unwrap(), 2);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    // Entry 2 was applied after entry 1, so its value of `a` won.
    assert_eq!(data(f, "a").as_deref(), Some("2"));
    assert_eq!(data(f, "b"), None);
    assert!(matches!(third.try_recv(), Err(TryRecvError::Empty)));
    let state = c.log_state().unwrap();
    assert_eq!(
        (state.applied, state.last),
        (LogId::new(1, 2), LogId::new(2, 3))
    );

    // A lower commit LSN changes nothing.
    assert_eq!(commit_to(&c, 1).await.unwrap(), 2);
    assert_eq!(commit_to(&c, 3).await.unwrap(), 3);
    assert_eq!(third.await.unwrap().unwrap(), 3);
    assert_eq!(data(f, "b").as_deref(), Some("3"));
    assert_eq!(super::log::applied_lsn(f.engine().as_ref()).unwrap(), 3);
}

async fn commit_to_never_applies_past_the_last_entry(f: &mut dyn Fixture) {
    let c = wal(f);
    append(&c, vec![entry(1, 1, "a", "1"), entry(1, 2, "b", "2")])
        .await
        .unwrap();
    assert_eq!(commit_to(&c, 10).await.unwrap(), 2);
    assert_eq!(
        append(&c, vec![entry(1, 3, "c", "3")]).await.unwrap().lsn,
        3
    );
    // The earlier commit LSN of 10 does not carry over to entries appended after it.
    assert_eq!(data(f, "c"), None);
    assert_eq!(c.log_state().unwrap().applied, LogId::new(1, 2));
    assert_eq!(commit_to(&c, 3).await.unwrap(), 3);
    assert_eq!(data(f, "c").as_deref(), Some("3"));
}

async fn a_long_way_to_commit_is_applied_in_bounded_batches_in_order(f: &mut dyn Fixture) {
    let engine = Arc::new(Counting::new(f.engine()));
    let c = Committer::start_wal(engine.clone(), WalState::default());
    let entries = (1..=1300)
        .map(|l| entry(1, l, "k", &l.to_string()))
        .collect();
    append(&c, entries).await.unwrap();
    let before = engine.writes.load(Ordering::Relaxed);
    assert_eq!(commit_to(&c, 1300).await.unwrap(), 1300);
    // 1300 entries, at most 512 per batch.
    assert_eq!(engine.writes.load(Ordering::Relaxed) - before, 3);
    assert_eq!(data(f, "k").as_deref(), Some("1300"));
    assert_eq!(c.log_state().unwrap().applied, LogId::new(1, 1300));
}

async fn an_append_and_its_commit_in_one_group_apply_from_memory(f: &mut dyn Fixture) {
    let c = wal(f);
    // Queued back to back, these usually share a group: the commit applies entries that are
    // not in the engine yet.
    let appended = c
        .append(vec![entry(3, 1, "a", "1"), entry(3, 2, "a", "2")])
        .unwrap();
    let committed = c.commit_to(2).unwrap();
    assert_eq!(appended.await.unwrap().unwrap(), LogId::new(3, 2));
    assert_eq!(committed.await.unwrap().unwrap(), 2);
    assert_eq!(data(f, "a").as_deref(), Some("2"));
    assert_eq!(c.log_state().unwrap().applied, LogId::new(3, 2));
}

async fn pending_entries_survive_a_restart_and_apply_once(f: &mut dyn Fixture) {
    {
        let c = wal(f);
        c.submit(1, put("a", "1")).unwrap();
        c.submit(2, put("b", "2")).unwrap();
        let deletes_b = vec![Write::Delete(Space::Data, b"b".to_vec())];
        c.set_epoch(2);
        c.submit(3, deletes_b).unwrap();
        durable(&c, 3).await;
        assert_eq!(commit_to(&c, 1).await.unwrap(), 1);
    }
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert_eq!(state.applied, LogId::new(1, 1));
    assert_eq!(state.last, LogId::new(2, 3));
    assert_eq!(state.pending(), 2..=3);
    // Recovery applies nothing by itself.
    let c = wal(f);
    assert_eq!(data(f, "a").as_deref(), Some("1"));
    assert_eq!(data(f, "b"), None);
    assert_eq!(c.log_state().unwrap(), state);
    // Entry 2 puts b and entry 3 deletes it: applied once each, in order, b is gone.
    assert_eq!(commit_to(&c, 3).await.unwrap(), 3);
    assert_eq!(data(f, "b"), None);
    assert_eq!(commit_to(&c, 3).await.unwrap(), 3);
    drop(c);
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert_eq!(
        (state.applied, state.last),
        (LogId::new(2, 3), LogId::new(2, 3))
    );
    assert_eq!(state.pending().count(), 0);
}

async fn direct_commits_recover_with_nothing_pending(f: &mut dyn Fixture) {
    {
        let c = Committer::start(f.engine(), 1);
        c.set_epoch(4);
        for i in 0..5u64 {
            c.commit(i, put(&format!("k{i}"), "v")).await.unwrap();
        }
        // WAL-mode operations are refused by a Direct-mode committer.
        assert!(matches!(c.commit_to(5), Err(Error::Internal(_))));
        assert!(matches!(c.append(Vec::new()), Err(Error::Internal(_))));
        assert!(c.durable().is_err());
    }
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert_eq!(state.applied, LogId::new(4, 5));
    assert_eq!(state.last, LogId::new(4, 5));
    assert_eq!(state.base, LogId::default());
    // The same store goes on in WAL mode from there.
    let c = wal(f);
    c.set_epoch(5);
    c.submit(9, put("k9", "v")).unwrap();
    assert_eq!(durable(&c, 6).await, LogId::new(5, 6));
    assert_eq!(commit_to(&c, 6).await.unwrap(), 6);
    assert_eq!(data(f, "k9").as_deref(), Some("v"));
}

async fn a_replica_append_must_continue_the_log(f: &mut dyn Fixture) {
    let c = wal(f);
    let last = append(&c, vec![entry(1, 1, "a", "1"), entry(1, 2, "b", "2")])
        .await
        .unwrap();
    assert_eq!(last, LogId::new(1, 2));
    let refusals = [
        (vec![entry(1, 2, "x", "x")], "overlaps"),
        (vec![entry(1, 4, "x", "x")], "gap"),
        (vec![entry(1, 3, "x", "x"), entry(1, 5, "x", "x")], "gap"),
        (
            vec![entry(1, 1, "x", "x"), entry(1, 2, "x", "x")],
            "overlaps",
        ),
    ];
    for (entries, why) in refusals {
        let err = append(&c, entries).await.unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    // Nothing of a refused append was written.
    assert_eq!(c.log_state().unwrap().last, LogId::new(1, 2));
    let LogRead::Entries(entries) = read_entries(f.engine().as_ref(), 1, usize::MAX).unwrap()
    else {
        panic!("the log is not truncated");
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1], entry(1, 2, "b", "2"));
    assert_eq!(
        append(&c, vec![entry(2, 3, "c", "3")]).await.unwrap(),
        LogId::new(2, 3)
    );
    assert_eq!(append(&c, Vec::new()).await.unwrap(), LogId::new(2, 3));
}

async fn truncate_after_drops_an_unapplied_suffix_only(f: &mut dyn Fixture) {
    let c = wal(f);
    let entries = (1..=4)
        .map(|l| entry(1, l, &format!("k{l}"), "old"))
        .collect();
    append(&c, entries).await.unwrap();
    commit_to(&c, 2).await.unwrap();
    let err = c.truncate_after(1).await.unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert_eq!(c.log_state().unwrap().last, LogId::new(1, 4));

    assert_eq!(c.truncate_after(2).await.unwrap(), LogId::new(1, 2));
    assert_eq!(*c.durable().unwrap().borrow(), LogId::new(1, 2));
    assert_eq!(
        read_entries(f.engine().as_ref(), 3, usize::MAX).unwrap(),
        LogRead::Entries(Vec::new())
    );
    // The new primary's entries take the dropped LSNs.
    append(&c, vec![entry(2, 3, "k3", "new")]).await.unwrap();
    commit_to(&c, 3).await.unwrap();
    assert_eq!(data(f, "k3").as_deref(), Some("new"));
    assert_eq!(data(f, "k4"), None);

    // A primary's own entries dropped before they committed: their submitters hear that the
    // outcome is unknown.
    c.set_epoch(2);
    let dropped = c.submit(9, put("k9", "v")).unwrap();
    durable(&c, 4).await;
    assert_eq!(c.truncate_after(3).await.unwrap(), LogId::new(2, 3));
    let err = dropped.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::UnknownOutcome(_)), "{err}");
    drop(c);
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert_eq!(
        (state.applied, state.last),
        (LogId::new(2, 3), LogId::new(2, 3))
    );
}

async fn truncate_before_keeps_the_base_across_a_restart(f: &mut dyn Fixture) {
    {
        let c = wal(f);
        let epochs = [1, 1, 2, 2, 2];
        let entries = (1..=5)
            .zip(epochs)
            .map(|(l, e)| entry(e, l, "k", &l.to_string()))
            .collect();
        append(&c, entries).await.unwrap();
        commit_to(&c, 4).await.unwrap();
        // Entry 5 is not applied: it may not be dropped from the front.
        let err = c.truncate_before(6).await.unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err}");
        assert_eq!(c.truncate_before(4).await.unwrap(), LogId::new(2, 3));
        // Before the log's first entry: nothing to do.
        assert_eq!(c.truncate_before(2).await.unwrap(), LogId::new(2, 3));
    }
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert_eq!(state.base, LogId::new(2, 3));
    assert_eq!(state.first(), 4);
    assert_eq!(state.applied, LogId::new(2, 4));
    assert_eq!(state.last, LogId::new(2, 5));
    let engine = f.engine();
    assert_eq!(
        read_entries(engine.as_ref(), 3, usize::MAX).unwrap(),
        LogRead::Truncated {
            base: LogId::new(2, 3)
        }
    );
    let LogRead::Entries(entries) = read_entries(engine.as_ref(), 4, usize::MAX).unwrap() else {
        panic!("entry 4 is in the log");
    };
    assert_eq!(entries.iter().map(|e| e.lsn).collect::<Vec<_>>(), [4, 5]);
    // The previous-entry check reads identities from the log and its base.
    let ids: Vec<_> = (2..=6)
        .map(|l| log_id_at(engine.as_ref(), l).unwrap())
        .collect();
    let some = |e, l| Some(LogId::new(e, l));
    assert_eq!(ids, [None, some(2, 3), some(2, 4), some(2, 5), None]);
    drop(engine);
    let c = wal(f);
    // Dropping up to the applied entry itself leaves it as the base.
    assert_eq!(c.truncate_before(5).await.unwrap(), LogId::new(2, 4));
    assert_eq!(commit_to(&c, 5).await.unwrap(), 5);
    assert_eq!(data(f, "k").as_deref(), Some("5"));
}

async fn read_entries_is_bounded_by_bytes(f: &mut dyn Fixture) {
    let c = wal(f);
    let value = "x".repeat(100);
    let entries: Vec<_> = (1..=10).map(|l| entry(1, l, "k", &value)).collect();
    let size = encode_entry(&entries[0]).unwrap().len();
    append(&c, entries.clone()).await.unwrap();
    let engine = f.engine();
    let read = |from, max| match read_entries(engine.as_ref(), from, max).unwrap() {
        LogRead::Entries(e) => e,
        LogRead::Truncated { base } => panic!("truncated at {base}"),
    };
    assert_eq!(read(1, usize::MAX), entries);
    assert_eq!(read(1, 2 * size + size / 2), entries[..2]);
    assert_eq!(read(3, 2 * size), entries[2..4]);
    // The first entry moves even when it is larger than the bound.
    assert_eq!(read(10, 1), entries[9..]);
    assert_eq!(read(11, usize::MAX), Vec::new());
}

async fn the_first_txn_record_of_a_range_is_found(f: &mut dyn Fixture) {
    let c = wal(f);
    let mut entries: Vec<_> = (1..=10).map(|l| entry(1, l, "k", "v")).collect();
    for lsn in [4, 7] {
        entries[lsn as usize - 1].writes =
            vec![Write::Put(Space::Txn, b"g".to_vec(), b"d".to_vec())];
    }
    append(&c, entries).await.unwrap();
    let engine = f.engine();
    let first = |after, upto| first_txn_record(engine.as_ref(), after, upto).unwrap();
    assert_eq!(first(0, 10), Some(4));
    assert_eq!(first(4, 10), Some(7));
    assert_eq!(first(4, 6), None);
    assert_eq!(first(7, 20), None, "past the log's end");
    assert_eq!(first(3, 4), Some(4));
    assert_eq!(
        first(u64::MAX, u64::MAX),
        None,
        "no overflow at the end of the LSNs"
    );
    let long = first_txn_record(engine.as_ref(), 0, MAX_TXN_SCAN + 1);
    assert!(matches!(long, Err(Error::InvalidInput(_))), "{long:?}");
}

/// A row's value in the snapshot tests: long enough that a batch of a few hundred bytes holds
/// only a few rows.
fn row_value(i: u32, round: &str) -> String {
    format!("{round}-{i:04}-{}", "v".repeat(40))
}

async fn a_snapshot_is_consistent_while_writes_go_on_and_spans_many_batches(f: &mut dyn Fixture) {
    let c = wal(f);
    let mut writes = Vec::new();
    for i in 0..200u32 {
        writes.extend(put(&format!("row{i:04}"), &row_value(i, "before")));
    }
    writes.push(Write::Put(Space::Txn, b"t1".to_vec(), b"prepared".to_vec()));
    c.set_epoch(7);
    let rx = c.submit(1, writes).unwrap();
    commit_to(&c, 1).await.unwrap();
    rx.await.unwrap().unwrap();
    // Appended but not committed: not in the snapshot.
    c.set_epoch(7);
    c.submit(2, put("pending", "x")).unwrap();
    durable(&c, 2).await;

    let engine = f.engine();
    let snapshot = ShardSnapshot::open(engine.as_ref()).unwrap();
    assert_eq!(snapshot.at(), LogId::new(7, 1));
    let mut cursor = Some(Cursor::start());
    let mut got = Vec::new();
    let mut batches = 0;
    let mut round = 0u32;
    while let Some(from) = cursor {
        let batch = snapshot.batch(&from, 300).unwrap();
        batches += 1;
        got.extend(batch.writes);
        cursor = batch.next;
        // Commits go on between batches: rows already sent, rows not sent yet, new rows, and
        // the txn space.
        round += 1;
        let mut writes = put("row0000", &row_value(0, "after"));
        writes.extend(put("row0199", &row_value(199, "after")));
        writes.extend(put(&format!("new{round}"), "x"));
        writes.push(Write::Put(
            Space::Txn,
            b"t1".to_vec(),
            b"committed".to_vec(),
        ));
        let lsn = 2 + round as u64;
        c.set_epoch(7);
        c.submit(lsn, writes).unwrap();
        durable(&c, lsn).await;
        commit_to(&c, lsn).await.unwrap();
    }
    assert!(batches > 20, "only {batches} batches");
    assert_eq!(
        data(f, "row0199").as_deref(),
        Some(row_value(199, "after").as_str())
    );
    let mut expected: Vec<Write> = (0..200u32)
        .flat_map(|i| put(&format!("row{i:04}"), &row_value(i, "before")))
        .collect();
    expected.push(Write::Put(Space::Txn, b"t1".to_vec(), b"prepared".to_vec()));
    assert_eq!(got, expected);
}

async fn a_snapshot_install_replaces_the_store_and_its_marker_survives_a_restart(
    f: &mut dyn Fixture,
) {
    // The source: another store with rows, at (3, 1).
    let source = InMemory(Arc::new(Memory::new()));
    let src = wal(&source);
    let mut writes: Vec<Write> = (0..50u32)
        .flat_map(|i| put(&format!("row{i:04}"), &row_value(i, "source")))
        .collect();
    writes.push(Write::Put(Space::Txn, b"t".to_vec(), b"record".to_vec()));
    src.set_epoch(3);
    src.submit(1, writes).unwrap();
    commit_to(&src, 1).await.unwrap();
    let snapshot = ShardSnapshot::open(source.engine().as_ref()).unwrap();
    let at = snapshot.at();
    assert_eq!(at, LogId::new(3, 1));
    let first = snapshot.batch(&Cursor::start(), 500).unwrap();

    // The target: a divergent store with rows of its own and a pending entry.
    {
        let c = wal(f);
        let many = (0..9000u32)
            .flat_map(|i| put(&format!("many{i:05}"), "x"))
            .collect();
        let mut first_entry = entry(1, 1, "mine", "1");
        first_entry.writes = many;
        append(&c, vec![first_entry, entry(1, 2, "mine", "2")])
            .await
            .unwrap();
        commit_to(&c, 1).await.unwrap();
        assert_eq!(f.engine().count(Space::Data).unwrap(), 9000);
        c.begin_snapshot().await.unwrap();
        // Cleared in several batches, all of it.
        for space in [Space::Data, Space::Txn, Space::Log] {
            assert_eq!(f.engine().count(space).unwrap(), 0, "{}", space.name());
        }
        c.install_batch(first.writes.clone()).await.unwrap();
        // Only puts into data and txn belong in a snapshot.
        let err = c
            .install_batch(
                put("x", "y")
                    .into_iter()
                    .map(|w| match w {
                        Write::Put(_, k, v) => Write::Put(Space::Meta, k, v),
                        w => w,
                    })
                    .collect(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
        // Cut short here.
    }
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert!(state.installing_snapshot);
    assert!(ShardSnapshot::open(f.engine().as_ref()).is_err());
    assert!(read_entries(f.engine().as_ref(), 1, usize::MAX).is_err());
    let c = wal(f);
    let refused = c.submit(1, put("a", "b")).unwrap().await.unwrap();
    assert!(matches!(refused, Err(Error::Refused(_))), "{refused:?}");
    assert!(matches!(
        append(&c, vec![entry(1, 1, "a", "b")]).await,
        Err(Error::Refused(_))
    ));
    assert!(matches!(commit_to(&c, 1).await, Err(Error::Refused(_))));

    // Installed again, whole.
    c.begin_snapshot().await.unwrap();
    let mut cursor = Some(Cursor::start());
    let mut batches = 0;
    while let Some(from) = cursor {
        let batch = snapshot.batch(&from, 500).unwrap();
        c.install_batch(batch.writes).await.unwrap();
        cursor = batch.next;
        batches += 1;
    }
    assert!(batches > 3, "{batches} batches");
    c.finish_snapshot(at).await.unwrap();
    let expected = WalState {
        applied: at,
        last: at,
        base: at,
        installing_snapshot: false,
    };
    assert_eq!(c.log_state().unwrap(), expected);
    assert_eq!(*c.durable().unwrap().borrow(), at);
    assert_eq!(data(f, "mine"), None);
    assert_eq!(
        data(f, "row0049").as_deref(),
        Some(row_value(49, "source").as_str())
    );
    assert_eq!(
        f.engine().get(Space::Txn, b"t").unwrap().as_deref(),
        Some(&b"record"[..])
    );
    // The log continues right after the snapshot.
    assert_eq!(
        read_entries(f.engine().as_ref(), 1, usize::MAX).unwrap(),
        LogRead::Truncated { base: at }
    );
    append(&c, vec![entry(3, 2, "next", "1")]).await.unwrap();
    commit_to(&c, 2).await.unwrap();
    drop(c);
    f.restart();
    let state = wal_state(f.engine().as_ref()).unwrap();
    assert_eq!(state.base, at);
    assert_eq!(state.applied, LogId::new(3, 2));
    assert!(!state.installing_snapshot);
    assert_eq!(data(f, "next").as_deref(), Some("1"));
}

/// A deposed primary's committer answers what waits and refuses what comes after, so no
/// client waits for a commit that node will not make; a newer epoch's submit is taken again.
async fn a_sealed_log_answers_its_waiting_submitters_and_refuses_later_ones(f: &mut dyn Fixture) {
    let c = wal(f);
    c.set_epoch(3);
    let (first, failed) = c.submit_watched(1, put("a", "1")).unwrap();
    c.seal(3, Error::not_ready("deposed")).await.unwrap();
    // Written before the seal: in the log, and its submitter hears the outcome is unknown.
    assert_eq!(durable(&c, 1).await, LogId::new(3, 1));
    assert!(matches!(failed.await.unwrap(), Error::UnknownOutcome(_)));
    // After the seal: refused, no LSN taken.
    let (second, _) = c.submit_watched(2, put("b", "2")).unwrap();
    assert!(second.await.unwrap().is_err());
    assert_eq!(c.log_state().unwrap().last, LogId::new(3, 1));
    // The first still waits for its entry to be applied or dropped.
    c.truncate_after(0).await.unwrap();
    assert!(matches!(
        first.await.unwrap(),
        Err(Error::UnknownOutcome(_))
    ));
    // Promoted again, in a newer epoch.
    c.set_epoch(4);
    let third = c.submit(3, put("c", "3")).unwrap();
    assert_eq!(durable(&c, 1).await, LogId::new(4, 1));
    assert_eq!(commit_to(&c, 1).await.unwrap(), 1);
    assert_eq!(third.await.unwrap().unwrap(), 1);
}

/// A primary handing its shard over stops taking submits but lets what waits commit; the
/// pause tells where the log ends, and a resumed log takes submits of its epoch again.
async fn a_paused_log_refuses_new_submits_and_lets_waiting_ones_commit(f: &mut dyn Fixture) {
    let c = wal(f);
    c.set_epoch(2);
    let (first, mut failed) = c.submit_watched(1, put("a", "1")).unwrap();
    let last = c.pause(2, Error::not_ready("handing over")).await.unwrap();
    assert_eq!(last, LogId::new(2, 1));
    let refused = c.submit(2, put("b", "2")).unwrap();
    assert!(refused
        .await
        .unwrap()
        .unwrap_err()
        .to_string()
        .contains("handing over"));
    // The waiting entry is not failed: it commits as before.
    assert_eq!(commit_to(&c, 1).await.unwrap(), 1);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert!(failed.try_recv().is_err());
    c.resume(2).unwrap();
    let taken = c.submit(3, put("c", "3")).unwrap();
    assert_eq!(durable(&c, 2).await, LogId::new(2, 2));
    assert_eq!(commit_to(&c, 2).await.unwrap(), 2);
    assert_eq!(taken.await.unwrap().unwrap(), 2);
}

macro_rules! wal_suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    let mut f = super::InMemory(std::sync::Arc::new(super::Memory::new()));
                    super::$test(&mut f).await;
                }
            )*
        }

        mod disk {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let engine = super::Disk::open(dir.path()).unwrap();
                    let mut f = super::OnDisk { dir, engine: Some(std::sync::Arc::new(engine)) };
                    super::$test(&mut f).await;
                }
            )*
        }
    };
}

wal_suite!(
    many_submits_share_few_fsyncs_and_wait_for_their_commit,
    effects_appear_only_at_commit_to_and_in_lsn_order,
    commit_to_never_applies_past_the_last_entry,
    an_append_and_its_commit_in_one_group_apply_from_memory,
    a_long_way_to_commit_is_applied_in_bounded_batches_in_order,
    pending_entries_survive_a_restart_and_apply_once,
    direct_commits_recover_with_nothing_pending,
    a_replica_append_must_continue_the_log,
    truncate_after_drops_an_unapplied_suffix_only,
    truncate_before_keeps_the_base_across_a_restart,
    read_entries_is_bounded_by_bytes,
    the_first_txn_record_of_a_range_is_found,
    a_snapshot_is_consistent_while_writes_go_on_and_spans_many_batches,
    a_snapshot_install_replaces_the_store_and_its_marker_survives_a_restart,
    a_sealed_log_answers_its_waiting_submitters_and_refuses_later_ones,
    a_paused_log_refuses_new_submits_and_lets_waiting_ones_commit,
);

/// A store that WAL mode left with unapplied entries, or cut short installing a snapshot, is
/// not opened in Direct mode, which would overwrite them; in WAL mode it opens with them.
#[tokio::test]
async fn a_store_left_unfinished_by_wal_mode_is_refused_in_direct_mode() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), Mode::Wal).unwrap();
        store.committer.submit(1, put("a", "1")).unwrap();
        durable(&store.committer, 1).await;
    }
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("1..=1"), "{err}");
    {
        let store = Store::open_with(dir.path(), Mode::Wal).unwrap();
        assert_eq!(store.log_state().unwrap().pending(), 1..=1);
        commit_to(&store.committer, 1).await.unwrap();
        store.committer.begin_snapshot().await.unwrap();
    }
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("snapshot"), "{err}");
    let store = Store::open_with(dir.path(), Mode::Wal).unwrap();
    assert!(store.log_state().unwrap().installing_snapshot);
}
