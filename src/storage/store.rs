//! A node's store: the engine and the group committer over it, on a locked data directory.
//!
//! It is opened once per node; the directory lock (`ddb.lock`) keeps a second process from
//! opening the same data, which would corrupt it.
//!
//! A new store is built in `store.new` and renamed to `store` once fjall has created it, and
//! the rename is made durable with an fsync of the data directory. fjall's own creation is not
//! atomic: a process killed while it creates a database leaves a journal without fjall's
//! version marker, which fjall then refuses to open or to create again, so a node killed during
//! its very first start would never start. Nothing is written to `store.new` but fjall's empty
//! database (the node serves only once the store is open), so one left by a killed first start is
//! thrown away and built again.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::sync::Arc;

use super::disk;
use super::engine::{self, Engine};
use super::log::{self, Committer, Lsn};
use crate::error::{Error, Result};

/// The storage of a node: engine and committer.
pub struct Store {
    pub engine: Arc<dyn Engine>,
    pub committer: Committer,
    /// The data directory lock, held for the life of the store.
    _lock: Option<File>,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed. Refuses a directory that another process
    /// has open.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock_path = dir.join("ddb.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Refused(format!(
                    "data directory {} is in use by another ddb process",
                    dir.display()
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::Io(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )))
            }
        }
        let store = dir.join("store");
        if !store.try_exists().map_err(|e| io_error(&store, e))? {
            create(dir, &store)?;
        }
        let engine: Arc<dyn Engine> = Arc::new(disk::Disk::open(&store)?);
        Self::with_engine(engine, Some(lock))
    }

    /// A store on the in-memory engine, for tests.
    pub fn memory() -> Result<Self> {
        Self::with_engine(Arc::new(engine::Memory::new()), None)
    }

    fn with_engine(engine: Arc<dyn Engine>, lock: Option<File>) -> Result<Self> {
        let next = log::applied_lsn(engine.as_ref())? + 1;
        let committer = Committer::start(engine.clone(), next);
        Ok(Self {
            engine,
            committer,
            _lock: lock,
        })
    }

    /// The LSN of the last durable commit.
    pub fn applied_lsn(&self) -> Result<Lsn> {
        log::applied_lsn(self.engine.as_ref())
    }
}

/// Creates an empty store at `store` (in the data directory `dir`) so that it exists whole or
/// not at all: built aside, then renamed into place.
fn create(dir: &Path, store: &Path) -> Result<()> {
    let fresh = dir.join("store.new");
    if fresh.try_exists().map_err(|e| io_error(&fresh, e))? {
        tracing::warn!(
            "{} is left from a first start that did not finish; building it again",
            fresh.display()
        );
        std::fs::remove_dir_all(&fresh).map_err(|e| io_error(&fresh, e))?;
    }
    // Dropping the database waits for fjall's threads, so nothing writes under the old name
    // after the rename.
    drop(disk::Disk::open(&fresh)?);
    crate::failpoint::crash_point("store-before-publish");
    std::fs::rename(&fresh, store).map_err(|e| io_error(store, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}
