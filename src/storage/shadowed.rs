//! Shadowed versions in fjall's memtables, and when to rotate one so that scans stay cheap.
//!
//! fjall's memtable is a skiplist of (key, sequence number) that keeps every version written to
//! it until it is flushed (at 64 MiB), and a range scan walks all of them: its MVCC stream steps
//! through the older versions of each key it returns. So a scan's cost follows the write
//! history of its range, not the rows it returns: a 30-row table whose rows were updated
//! 160,000 times (the bank test's shape) made every scan of it walk 160,000 entries, and its
//! scans ran 2,000 times slower than on a fresh node (8,308 scans/s → 4.1,
//! `bench/scan-history.sh`). Seeking past each key does not help: fjall drains a key's
//! versions when it returns the key.
//!
//! A flush turns a memtable into a table that keeps only the newest version of each key (older
//! ones that no open snapshot can see are dropped; compaction does the same for tables), so the
//! cure is to rotate a memtable (seal it and have it flushed) once too much of it is shadowed.
//! [`Shadowed`] counts, for one keyspace's active memtable, the versions written to it and the
//! distinct keys they belong to, in groups of keys by their first [`GROUP_PREFIX`] bytes: in
//! the `data` space that is the table id of the key layout (`storage::keycode`), and a scan
//! reads one table at a time, so the garbage is counted where a scan would walk it. A group is
//! due for rotation when its shadowed versions (versions less distinct keys) exceed both
//! [`MIN_SHADOWED`] and its distinct keys. Hence:
//!
//! * a scan of a group walks at most its live keys in the memtable, as many shadowed versions
//!   again, and [`MIN_SHADOWED`]: at most about twice what it returns, plus a constant;
//! * a rotation comes at most once per [`MIN_SHADOWED`] writes, so the flushes stay few and
//!   small (a hot table of 30 rows is flushed as a table of 30 rows), and a workload that does
//!   not rewrite keys (inserts, updates spread over a large table) is never rotated early: its
//!   memtable fills up to fjall's size limit as before.
//!
//! The disk engine rotates only while it has no snapshot or scan open, and never takes a
//! snapshot while a batch is halfway into its memtables (see `storage::disk`): a flush or
//! compaction makes a sequence number of its own visible at once, and lsm-tree's compaction
//! stream tests the older of two versions against the GC watermark instead of the newer one
//! (fjall-rs/lsm-tree#321), so under open snapshots frequent flushes made the engine suite's
//! cross-space snapshot test fail in 2 of 15 runs. A memtable rotated with no reader open holds
//! only versions older than any later snapshot, so its flush drops nothing one needs; with
//! both guards the test passed 60 runs of 60.
//!
//! It is bookkeeping only: what it counts are hashes of keys (8 bytes per distinct key in the
//! memtable), which keys are durable or visible does not depend on it, and a wrong count (a hash
//! collision, a rotation fjall made on its own that we notice one batch late) only moves a
//! rotation a little earlier or later. Rotation keeps durability as it was: every write is in
//! fjall's journal, made durable by `persist` (SyncAll), before and after the flush.

use std::collections::{HashMap, HashSet};

/// Keys are grouped by this many leading bytes (the table id in the `data` space).
pub const GROUP_PREFIX: usize = 4;

/// The shadowed versions a group may hold in any case. A scan of a small table on a fresh node
/// costs about 120 µs in all (parse, plan, wire, 30 rows), and stepping over a shadowed version
/// costs about 0.5 µs, so a few hundred of them would double it: at 1024 a 30-row table scanned
/// 2.6 times slower after 160,000 updates than before (bench/scan-history.sh), at 128 it stays
/// within 2×. It also bounds how often a memtable rotates: at most once per this many writes,
/// each rotation one small flush in the background.
pub const MIN_SHADOWED: u64 = 128;

/// Versions and distinct keys written to one memtable, per group of keys.
#[derive(Debug, Default)]
pub struct Shadowed {
    /// The memtable counted: fjall's id for it. Counting restarts when the id changes.
    memtable: Option<u64>,
    groups: HashMap<[u8; GROUP_PREFIX], Group>,
}

#[derive(Debug, Default)]
struct Group {
    versions: u64,
    /// Hashes of the distinct keys (xxh3, so 8 bytes per key).
    keys: HashSet<u64>,
}

impl Group {
    #[cfg(test)]
    fn shadowed(&self) -> u64 {
        self.versions - self.keys.len() as u64
    }

    fn due(&self) -> bool {
        self.versions - self.keys.len() as u64 > MIN_SHADOWED.max(self.keys.len() as u64)
    }
}

/// One key written in a batch, as [`Shadowed::record`] takes it: its group and its hash.
#[derive(Clone, Copy, Debug)]
pub struct Version {
    group: [u8; GROUP_PREFIX],
    hash: u64,
}

impl Version {
    /// The version of `key` a put or a removal adds to the memtable.
    pub fn of(key: &[u8]) -> Self {
        let mut group = [0; GROUP_PREFIX];
        let n = key.len().min(GROUP_PREFIX);
        group[..n].copy_from_slice(&key[..n]);
        Self {
            group,
            hash: xxhash_rust::xxh3::xxh3_64(key),
        }
    }
}

impl Shadowed {
    /// Counts versions written to the memtable `memtable`, and says whether it is now due for
    /// rotation. A different memtable than last time (fjall rotated it) starts a new count.
    pub fn record(&mut self, memtable: u64, versions: impl IntoIterator<Item = Version>) -> bool {
        if self.memtable != Some(memtable) {
            self.memtable = Some(memtable);
            self.groups.clear();
        }
        for v in versions {
            let group = self.groups.entry(v.group).or_default();
            group.versions += 1;
            group.keys.insert(v.hash);
        }
        self.due()
    }

    /// Whether some group holds too many shadowed versions.
    pub fn due(&self) -> bool {
        self.groups.values().any(Group::due)
    }

    /// Forgets the count: the memtable was rotated.
    pub fn rotated(&mut self) {
        self.memtable = None;
        self.groups.clear();
    }

    /// The shadowed versions of the group most shadowed: what a plain scan of it walks in vain.
    #[cfg(test)]
    pub fn most_shadowed(&self) -> u64 {
        self.groups.values().map(Group::shadowed).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(table: u32, rows: u32, n: u32) -> impl Iterator<Item = Version> {
        (0..n).map(move |i| {
            let mut key = table.to_be_bytes().to_vec();
            key.extend_from_slice(&(i % rows).to_be_bytes());
            Version::of(&key)
        })
    }

    #[test]
    fn rewriting_few_keys_is_due_once_the_shadowed_versions_pass_the_floor() {
        let mut s = Shadowed::default();
        // 30 rows, each written once, then rewritten: due after MIN_SHADOWED + 1 rewrites.
        assert!(!s.record(1, updates(7, 30, 30 + MIN_SHADOWED as u32)));
        assert_eq!(s.most_shadowed(), MIN_SHADOWED);
        assert!(s.record(1, updates(7, 30, 1)));
    }

    #[test]
    fn writes_of_distinct_keys_are_never_due() {
        let mut s = Shadowed::default();
        assert!(!s.record(1, updates(7, 1_000_000, 200_000)));
        assert_eq!(s.most_shadowed(), 0);
    }

    #[test]
    fn a_large_group_may_shadow_as_many_versions_as_it_has_keys() {
        let mut s = Shadowed::default();
        // 5000 keys, every one written twice: 5000 shadowed, not more than its keys.
        assert!(!s.record(1, updates(7, 5000, 10_000)));
        assert!(s.record(1, updates(7, 5000, 1)));
    }

    #[test]
    fn groups_are_counted_apart_so_a_big_table_does_not_hide_a_hot_one() {
        let mut s = Shadowed::default();
        assert!(!s.record(1, updates(1, 1_000_000, 100_000)));
        assert!(s.record(1, updates(2, 30, 30 + MIN_SHADOWED as u32 + 1)));
    }

    #[test]
    fn a_new_memtable_or_a_rotation_starts_the_count_again() {
        let mut s = Shadowed::default();
        assert!(s.record(1, updates(7, 30, 1000)));
        assert!(!s.record(2, updates(7, 30, 100)));
        assert_eq!(s.most_shadowed(), 100 - 30);
        s.rotated();
        assert!(!s.due());
        assert_eq!(s.most_shadowed(), 0);
    }
}
