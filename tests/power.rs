//! Power loss: a node whose data directory is on a filesystem that forgets everything not
//! fsynced (tests/common/powerfs.rs) loses power under a write load from several clients; after
//! the cut and a restart every acknowledged row is there, with its value, and every transaction
//! is whole. `kill -9` alone cannot show this: a killed process's writes are still in the page
//! cache and reach the disk anyway, so a node that never fsyncs would pass.
//!
//! Needs root and `/dev/fuse` (CI has both); it fails, rather than skips, without them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::powerfs::{Entries, PowerFs};
use common::TestNode;

fn mount(path: &Path, entries: Entries) -> PowerFs {
    std::fs::create_dir_all(path).expect("mount point");
    PowerFs::mount(path, entries).unwrap_or_else(|e| {
        panic!("cannot mount the power-cut filesystem on {path:?} (needs root and /dev/fuse): {e}")
    })
}

fn fsync_dir(path: &Path) {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// The harness's own check: the filesystem keeps exactly what was synced, so the test below
/// can fail. Directory entries the strict way: only a directory's fsync makes them durable.
#[test]
fn the_test_filesystem_keeps_only_what_was_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("m");
    let fs = mount(&root, Entries::PerDirectory);

    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::create_dir(root.join("lost-dir")).unwrap();
    fsync_dir(&root);
    fsync_dir(&root.join("d"));
    // root/lost-dir is durable, but not what was created inside it.
    std::fs::write(root.join("lost-dir/f"), b"x").unwrap();

    let mut a = std::fs::File::create(root.join("d/a")).unwrap();
    a.write_all(b"synced").unwrap();
    a.sync_data().unwrap();
    fsync_dir(&root.join("d"));
    a.write_all(b" and not synced").unwrap();

    // t is synced at 10,000 bytes; truncated below, but that is never synced.
    let mut t = std::fs::File::create(root.join("d/t")).unwrap();
    t.write_all(&vec![7u8; 10_000]).unwrap();
    t.sync_all().unwrap();
    fsync_dir(&root.join("d"));
    // A synced file, renamed below without syncing the directory: it keeps its old name.
    std::fs::write(root.join("d/old"), b"renamed").unwrap();
    std::fs::File::open(root.join("d/old"))
        .unwrap()
        .sync_all()
        .unwrap();
    fsync_dir(&root.join("d"));
    // From here on d is not synced again.
    std::fs::rename(root.join("d/old"), root.join("d/new")).unwrap();

    t.set_len(100).unwrap();
    t.write_all(b"tail").unwrap();
    assert_eq!(std::fs::metadata(root.join("d/t")).unwrap().len(), 10_004);

    // Synced data under an entry that never was.
    let mut b = std::fs::File::create(root.join("d/b")).unwrap();
    b.write_all(b"orphan").unwrap();
    b.sync_all().unwrap();

    let (image, lost) = fs.power_cut();
    assert!(lost > 0, "the cut dropped nothing");
    // No power: nothing is read or written any more.
    assert!(std::fs::read(root.join("d/a")).is_err());
    drop((a, b, t));
    fs.unmount().expect("unmount");

    let fs = PowerFs::mount_image(&root, image).expect("remount");
    assert_eq!(std::fs::read(root.join("d/a")).unwrap(), b"synced");
    assert!(!root.join("d/b").exists(), "an entry never synced survived");
    assert!(root.join("lost-dir").is_dir());
    assert!(!root.join("lost-dir/f").exists());
    assert_eq!(std::fs::read(root.join("d/old")).unwrap(), b"renamed");
    assert!(!root.join("d/new").exists());
    assert_eq!(std::fs::read(root.join("d/t")).unwrap(), vec![7u8; 10_000]);
    fs.unmount().expect("unmount");
}

/// Directory entries the journaling way: any fsync makes every earlier entry change durable,
/// and nothing after it.
#[test]
fn a_journaled_filesystem_keeps_the_entries_before_the_last_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("m");
    let fs = mount(&root, Entries::Journaled);
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/unsynced"), b"data never synced").unwrap();
    std::fs::write(root.join("d/old"), b"x").unwrap();
    let mut f = std::fs::File::create(root.join("d/synced")).unwrap();
    f.write_all(b"synced").unwrap();
    // A file's fsync: its data, and every entry change so far (d, unsynced, old, synced).
    f.sync_data().unwrap();
    std::fs::rename(root.join("d/old"), root.join("d/new")).unwrap();
    std::fs::write(root.join("d/late"), b"late").unwrap();
    let (image, _) = fs.power_cut();
    drop(f);
    fs.unmount().expect("unmount");

    let fs = PowerFs::mount_image(&root, image).expect("remount");
    assert_eq!(std::fs::read(root.join("d/synced")).unwrap(), b"synced");
    assert_eq!(std::fs::read(root.join("d/unsynced")).unwrap(), b"");
    assert!(root.join("d/old").exists() && !root.join("d/new").exists());
    assert!(!root.join("d/late").exists());
    fs.unmount().expect("unmount");
}

/// What the writers did to one key.
#[derive(Default)]
struct Ledger {
    /// Acknowledged before the power was cut: must be there, with this payload.
    acked: BTreeMap<i64, String>,
    /// Sent, whatever the answer: may be there (with this payload).
    attempted: BTreeMap<i64, String>,
    /// Two-row transactions sent: both rows or neither.
    pairs: Vec<(i64, i64)>,
}

/// How a writer ended.
#[derive(Debug)]
enum End {
    /// Failed after the cut: it was writing when the power went.
    AfterCut,
    /// Failed while the power was on (the error is printed by the assertion).
    Before(#[allow(dead_code)] String),
    /// Ran out of iterations without seeing the cut.
    Exhausted,
}

const WRITERS: i64 = 6;
const ROUNDS: i64 = 3;
/// Acknowledged rows per round before the cut.
const ACKED_PER_ROUND: usize = 600;

async fn writer(
    port: u16,
    round: i64,
    w: i64,
    ledger: Arc<Mutex<Ledger>>,
    cut: Arc<AtomicBool>,
) -> End {
    let c = match common::try_connect(port).await {
        Ok(c) => c,
        Err(e) => return End::Before(format!("connect: {e}")),
    };
    for i in 0..200_000i64 {
        let id = (round * WRITERS + w) * 1_000_000 + i;
        let payload = format!("r{round} w{w} #{i}");
        // Alternate autocommit inserts and two-row explicit transactions.
        let (result, rows) = if i % 2 == 0 {
            ledger.lock().unwrap().attempted.insert(id, payload.clone());
            let r = c
                .execute("INSERT INTO t VALUES ($1, $2)", &[&id, &payload])
                .await
                .map(|_| ());
            (r, vec![id])
        } else {
            let id2 = id + 500_000;
            {
                let mut l = ledger.lock().unwrap();
                l.attempted.insert(id, payload.clone());
                l.attempted.insert(id2, payload.clone());
                l.pairs.push((id, id2));
            }
            let r = c
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO t VALUES ({id}, '{payload}'); \
                     INSERT INTO t VALUES ({id2}, '{payload}'); COMMIT"
                ))
                .await;
            (r, vec![id, id2])
        };
        // Read after the answer: an acknowledgment seen before the flag was set came from a
        // node that had synced before the cut, which comes after the flag.
        let after_cut = cut.load(Ordering::SeqCst);
        match result {
            Ok(()) if !after_cut => {
                let mut l = ledger.lock().unwrap();
                for id in rows {
                    l.acked.insert(id, payload.clone());
                }
            }
            Ok(()) => {}
            Err(_) if after_cut => return End::AfterCut,
            Err(e) => return End::Before(e.to_string()),
        }
    }
    End::Exhausted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rows_survive_a_power_cut_during_a_write_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Journaled entries: fjall syncs the directories it creates files in, but not the parent
    // of a directory it creates (`keyspaces/N`, or ddb's `store/`), which the strict model
    // would lose whole.
    let mut fs = mount(&dir, Entries::Journaled);
    let mut node = TestNode::start_at(&dir, &[]);
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)")
        .await
        .unwrap();
    drop(c);

    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    for round in 0..ROUNDS {
        let cut = Arc::new(AtomicBool::new(false));
        let before = ledger.lock().unwrap().acked.len();
        let syncs_before = fs.stats().file_syncs;
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(node.sql_port, round, w, ledger.clone(), cut.clone())))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ledger.lock().unwrap().acked.len() < before + ACKED_PER_ROUND {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} rows acknowledged in 60 s; log:\n{}",
                ledger.lock().unwrap().acked.len() - before,
                node.log_tail()
            );
            assert!(
                writers.iter().all(|w| !w.is_finished()),
                "a writer stopped before the cut; log:\n{}",
                node.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // The power goes: the flag first, then the disk, then the process.
        cut.store(true, Ordering::SeqCst);
        let (image, lost) = fs.power_cut();
        let syncs = fs.stats().file_syncs - syncs_before;
        node.kill();
        for (w, task) in writers.into_iter().enumerate() {
            let end = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a writer did not stop after the cut")
                .expect("writer task panicked");
            assert!(
                matches!(end, End::AfterCut),
                "round {round}: writer {w} was not writing when the power went: {end:?}"
            );
        }
        eprintln!(
            "round {round}: {} rows acknowledged, {syncs} file syncs, {lost} unsynced bytes \
             dropped at the cut; files left: {:?}",
            ledger.lock().unwrap().acked.len() - before,
            image.files()
        );
        fs.unmount().expect("unmount after the cut");
        fs = PowerFs::mount_image(&dir, image).expect("mount what survived");
        node.restart();

        let c = node.connect().await;
        let rows = c
            .query("SELECT id, payload FROM t", &[])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: reading the rows back after the cut failed ({}); {} rows \
                     were acknowledged",
                    e.as_db_error().map_or(e.to_string(), |d| format!(
                        "{}: {}",
                        d.code().code(),
                        d.message()
                    )),
                    ledger.lock().unwrap().acked.len()
                )
            });
        let present: BTreeMap<i64, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let l = ledger.lock().unwrap();
        let lost: Vec<_> = l
            .acked
            .iter()
            .filter(|(id, payload)| present.get(id) != Some(payload))
            .map(|(id, payload)| (id, payload, present.get(id)))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged rows lost or changed by the power cut, e.g. \
             (id, written, found) {:?}",
            lost.len(),
            l.acked.len(),
            &lost[..lost.len().min(5)]
        );
        let phantom: Vec<_> = present
            .iter()
            .filter(|(id, payload)| l.attempted.get(id) != Some(payload))
            .collect();
        assert!(
            phantom.is_empty(),
            "rows that were never written: {phantom:?}"
        );
        let present_ids: BTreeSet<i64> = present.keys().copied().collect();
        for (a, b) in &l.pairs {
            assert_eq!(
                present_ids.contains(a),
                present_ids.contains(b),
                "round {round}: half of the transaction ({a}, {b}) survived"
            );
        }
    }
    drop(node);
    fs.unmount().expect("unmount");
}
