//! The log's records as they are stored, and the state of a log read back from the engine.
//!
//! An entry is stored in [`Space::Log`] under its LSN (8 bytes big-endian, so the log scans in
//! LSN order) as a postcard-encoded [`LogEntry`]. Three keys of [`Space::Meta`] say where the log
//! stands:
//!
//! * `applied_lsn`: the last entry whose effects are in the `data` and `txn` spaces. It is
//!   written in the same engine batch as those effects, so a reader (a snapshot) always sees
//!   effects and applied LSN agree.
//! * `log_base`: the (epoch, LSN) of the last entry dropped from the front of the log (absent:
//!   nothing dropped, the base is (0, 0)). The log holds the entries from `base.lsn + 1` on,
//!   densely; the base is what the next entry's previous-entry check compares against once its
//!   predecessor is gone. The base moves in the same batch as the entries it drops.
//! * `snapshot_install`: present while a snapshot is being installed. The data is then half a
//!   snapshot, and the store must fetch a snapshot again before it serves or applies anything.
//!
//! A store written in Direct mode (one copy) has applied == last and no base, so it reads back
//! as a WAL-mode log with nothing pending: the format is the same in both modes, and data
//! directories written before WAL mode existed open unchanged.
//!
//! The last entry of the log is found without a backward scan: the log is dense from its first
//! entry, so point reads that gallop forward from the applied LSN (always in the log, or the
//! base) and then bisect find it in O(log n) reads.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::engine::{Engine, Scan, Snapshot, Space};
use crate::error::{Error, Result};

/// A log sequence number: dense, starting at 1.
pub type Lsn = u64;

/// The meta key under which the last applied LSN is stored.
pub const APPLIED_LSN_KEY: &[u8] = b"applied_lsn";

/// The meta key of the log's base: the [`LogId`] of the last entry dropped from its front.
pub const LOG_BASE_KEY: &[u8] = b"log_base";

/// The meta key present while a snapshot is being installed.
pub const SNAPSHOT_INSTALL_KEY: &[u8] = b"snapshot_install";

/// One committed transaction, as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub lsn: Lsn,
    /// The shard epoch under which the entry was written (fences old primaries; DESIGN §3).
    pub epoch: u64,
    /// The transaction id, 0 for node-internal writes.
    pub txn: u64,
    pub writes: Vec<super::engine::Write>,
}

impl LogEntry {
    /// The entry's identity in the log.
    pub fn id(&self) -> LogId {
        LogId {
            epoch: self.epoch,
            lsn: self.lsn,
        }
    }

    /// Whether the entry writes [`Space::Txn`]: a two-phase commit record (a prepare or a
    /// decision), which replication treats apart from plain commits (DESIGN §6.1).
    pub fn writes_txn(&self) -> bool {
        self.writes.iter().any(|w| w.space() == Space::Txn)
    }
}

/// An entry's identity: the epoch it was written under and its LSN (DESIGN §6.1). (0, 0) stands
/// before the first entry of every log. Ordered by epoch, then LSN, as Raft compares logs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    pub epoch: u64,
    pub lsn: Lsn,
}

impl LogId {
    /// The identity `(epoch, lsn)`.
    pub fn new(epoch: u64, lsn: Lsn) -> Self {
        Self { epoch, lsn }
    }

    fn encode(self) -> Vec<u8> {
        let mut bytes = self.epoch.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.lsn.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let a: [u8; 16] = bytes
            .try_into()
            .map_err(|_| Error::Corrupt("log_base is not 16 bytes".into()))?;
        let (epoch, lsn) = a.split_at(8);
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
        Ok(Self {
            epoch: word(epoch),
            lsn: word(lsn),
        })
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {})", self.epoch, self.lsn)
    }
}

/// The state of a log, as recovered at open and as kept by a WAL-mode committer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalState {
    /// The last entry whose effects are applied (its epoch read from the log, or the base).
    pub applied: LogId,
    /// The last entry in the log; the base when the log is empty.
    pub last: LogId,
    /// The entry just before the log's first one: the last entry dropped from its front, or
    /// (0, 0). The log holds `base.lsn + 1 ..= last.lsn`.
    pub base: LogId,
    /// A snapshot install was begun and not finished: the data is half a snapshot, and the
    /// store must install a snapshot again before it serves or applies anything.
    pub installing_snapshot: bool,
}

impl WalState {
    /// The LSN of the log's first entry (one past `last` when the log is empty).
    pub fn first(&self) -> Lsn {
        self.base.lsn + 1
    }

    /// The entries appended but not applied: they wait for `commit_to`.
    pub fn pending(&self) -> std::ops::RangeInclusive<Lsn> {
        self.applied.lsn + 1..=self.last.lsn
    }
}

/// The key of a log entry in [`Space::Log`]: the LSN big-endian, so the log scans in order.
pub fn log_key(lsn: Lsn) -> [u8; 8] {
    lsn.to_be_bytes()
}

/// The stored form of an entry.
pub(crate) fn encode_entry(entry: &LogEntry) -> Result<Vec<u8>> {
    postcard::to_stdvec(entry).map_err(|e| Error::Internal(format!("encode log entry: {e}")))
}

fn decode_entry(lsn: Lsn, bytes: &[u8]) -> Result<LogEntry> {
    let entry: LogEntry = postcard::from_bytes(bytes)
        .map_err(|e| Error::Corrupt(format!("log entry {lsn} does not decode: {e}")))?;
    if entry.lsn != lsn {
        return Err(Error::Corrupt(format!(
            "the log entry stored at {lsn} says it is entry {}",
            entry.lsn
        )));
    }
    Ok(entry)
}

/// The write that records the log's base.
pub(crate) fn base_write(base: LogId) -> super::engine::Write {
    super::engine::Write::Put(Space::Meta, LOG_BASE_KEY.to_vec(), base.encode())
}

/// The write that records the applied LSN.
pub(crate) fn applied_write(lsn: Lsn) -> super::engine::Write {
    super::engine::Write::Put(
        Space::Meta,
        APPLIED_LSN_KEY.to_vec(),
        lsn.to_be_bytes().to_vec(),
    )
}

/// Point reads and scans, from the engine as it is now or from one snapshot of it.
pub(crate) trait Reads {
    fn read(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_>;
}

impl Reads for dyn Engine + '_ {
    fn read(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(space, key)
    }
    fn range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
        self.scan_range(space, start, end)
    }
}

impl Reads for dyn Snapshot + '_ {
    fn read(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(space, key)
    }
    fn range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
        self.scan_range(space, start, end)
    }
}

/// Reads the last applied LSN from the meta space (0 for a new store).
pub fn applied_lsn(engine: &dyn Engine) -> Result<Lsn> {
    read_applied(engine)
}

fn read_applied(r: &(impl Reads + ?Sized)) -> Result<Lsn> {
    match r.read(Space::Meta, APPLIED_LSN_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let a: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("applied_lsn is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(a))
        }
    }
}

fn read_base(r: &(impl Reads + ?Sized)) -> Result<LogId> {
    match r.read(Space::Meta, LOG_BASE_KEY)? {
        None => Ok(LogId::default()),
        Some(bytes) => LogId::decode(&bytes),
    }
}

/// The entry at `lsn`, if the log holds it.
pub(crate) fn read_entry(r: &(impl Reads + ?Sized), lsn: Lsn) -> Result<Option<LogEntry>> {
    r.read(Space::Log, &log_key(lsn))?
        .map(|bytes| decode_entry(lsn, &bytes))
        .transpose()
}

/// The identity of the entry at `lsn`, which must be the base or in the log.
pub(crate) fn id_at(r: &(impl Reads + ?Sized), base: LogId, lsn: Lsn) -> Result<LogId> {
    if lsn == base.lsn {
        return Ok(base);
    }
    match read_entry(r, lsn)? {
        Some(entry) if lsn > base.lsn => Ok(entry.id()),
        _ => Err(Error::Corrupt(format!(
            "log entry {lsn} is missing (the log starts after {base})"
        ))),
    }
}

/// The identity of the entry at `lsn` as the log knows it: the entry's own, the base's for the
/// base's LSN ((0, 0) for LSN 0), and `None` when the log no longer or not yet holds it. This
/// is the previous-entry check of an append (DESIGN §6.1): the replication core compares it
/// with the primary's (epoch, LSN) before the entries after it.
pub fn log_id_at(engine: &dyn Engine, lsn: Lsn) -> Result<Option<LogId>> {
    let snapshot = engine.snapshot()?;
    let base = read_base(snapshot.as_ref())?;
    if lsn < base.lsn {
        return Ok(None);
    }
    if lsn == base.lsn {
        return Ok(Some(base));
    }
    Ok(read_entry(snapshot.as_ref(), lsn)?.map(|e| e.id()))
}

/// Reads the state of the log of a store (see [`WalState`]).
pub fn wal_state(engine: &dyn Engine) -> Result<WalState> {
    state_of(engine)
}

/// The state of the log as `r` sees it.
pub(crate) fn state_of(r: &(impl Reads + ?Sized)) -> Result<WalState> {
    let base = read_base(r)?;
    let installing_snapshot = r.read(Space::Meta, SNAPSHOT_INSTALL_KEY)?.is_some();
    let applied_lsn = read_applied(r)?;
    if installing_snapshot {
        // The log was cleared (or is being cleared); what the keys say is stale.
        return Ok(WalState {
            applied: LogId::new(base.epoch, applied_lsn),
            last: base,
            base,
            installing_snapshot,
        });
    }
    if applied_lsn < base.lsn {
        return Err(Error::Corrupt(format!(
            "the applied LSN {applied_lsn} is before the log's base {base}"
        )));
    }
    let applied = id_at(r, base, applied_lsn)?;
    let last_lsn = last_present(r, applied_lsn)?;
    let last = id_at(r, base, last_lsn)?;
    Ok(WalState {
        applied,
        last,
        base,
        installing_snapshot,
    })
}

/// The last LSN of a dense log that holds `known` (or whose base is `known`): gallops forward
/// with point reads until one misses, then bisects.
fn last_present(r: &(impl Reads + ?Sized), known: Lsn) -> Result<Lsn> {
    let present = |lsn: Lsn| -> Result<bool> { Ok(r.read(Space::Log, &log_key(lsn))?.is_some()) };
    let (mut lo, mut step) = (known, 1u64);
    let mut hi = loop {
        let probe = lo.saturating_add(step);
        if !present(probe)? {
            break probe;
        }
        lo = probe;
        step = step.saturating_mul(2);
    };
    // `lo` is present (or the base), `hi` is not.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if present(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The LSN of the first entry in `(after, upto]` of the log that holds a two-phase commit
/// record (a prepare or a decision: [`LogEntry::writes_txn`]), if any. `None` also when the
/// log ends before `upto`. Refused when the log no longer holds `after + 1` (its front was
/// dropped) or when the range is longer than [`MAX_TXN_SCAN`] entries, so a question from
/// outside cannot make the node read its whole log.
pub fn first_txn_record(engine: &dyn Engine, after: Lsn, upto: Lsn) -> Result<Option<Lsn>> {
    if upto.saturating_sub(after) > MAX_TXN_SCAN {
        return Err(Error::InvalidInput(format!(
            "a scan for two-phase commit records covers at most {MAX_TXN_SCAN} entries, not \
             {after}..={upto}"
        )));
    }
    let Some(mut from) = after.checked_add(1) else {
        return Ok(None);
    };
    while from <= upto {
        let entries = match read_entries(engine, from, 4 << 20)? {
            LogRead::Entries(entries) => entries,
            LogRead::Truncated { base } => {
                return Err(Error::Refused(format!(
                    "the log was dropped up to {base}: it no longer holds entry {from}"
                )))
            }
        };
        let Some(last) = entries.last().map(|e| e.lsn) else {
            return Ok(None);
        };
        if let Some(e) = entries.iter().find(|e| e.lsn <= upto && e.writes_txn()) {
            return Ok(Some(e.lsn));
        }
        match last.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(None)
}

/// The longest range [`first_txn_record`] scans.
pub const MAX_TXN_SCAN: u64 = 1_000_000;

/// What [`read_entries`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LogRead {
    /// Entries from the LSN asked for on, in order; empty when there is nothing after the log's
    /// last entry.
    Entries(Vec<LogEntry>),
    /// The log no longer holds the LSN asked for: its front was dropped up to `base`. A reader
    /// that needs it must be sent a snapshot.
    Truncated { base: LogId },
}

/// Reads the entries from `from` on, in LSN order, up to about `max_bytes` of their stored
/// form: the first entry is always returned whole, so an entry larger than the bound still
/// moves; the ones after it only while the total stays within the bound. Entries appended but
/// not yet durable or applied are included (a primary ships them before they commit). Refused
/// on a store that is installing a snapshot.
pub fn read_entries(engine: &dyn Engine, from: Lsn, max_bytes: usize) -> Result<LogRead> {
    // One snapshot, so the base and the entries agree while the log is being truncated.
    let snapshot = engine.snapshot()?;
    if snapshot.read(Space::Meta, SNAPSHOT_INSTALL_KEY)?.is_some() {
        return Err(Error::Refused(
            "this store is installing a snapshot: its log has nothing to ship".into(),
        ));
    }
    let base = read_base(snapshot.as_ref())?;
    if from <= base.lsn {
        return Ok(LogRead::Truncated { base });
    }
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let scan = snapshot.range(
        Space::Log,
        Bound::Included(log_key(from).to_vec()),
        Bound::Unbounded,
    );
    for (expected, pair) in (from..).zip(scan) {
        let (key, value) = pair?;
        let lsn = lsn_of_key(&key)?;
        if lsn != expected {
            return Err(Error::Corrupt(format!(
                "the log has a gap: entry {lsn} follows entry {}",
                expected - 1
            )));
        }
        if !entries.is_empty() && bytes + value.len() > max_bytes {
            break;
        }
        bytes += value.len();
        entries.push(decode_entry(lsn, &value)?);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(LogRead::Entries(entries))
}

fn lsn_of_key(key: &[u8]) -> Result<Lsn> {
    let a: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt(format!("a log key is {} bytes, not 8", key.len())))?;
    Ok(u64::from_be_bytes(a))
}
