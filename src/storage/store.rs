//! A node's store: the engine and the group committer over it, on a locked data directory.
//!
//! It is opened once per node; the directory lock (`ddb.lock`) keeps a second process from
//! opening the same data, which would corrupt it.

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
        let engine: Arc<dyn Engine> = Arc::new(disk::Disk::open(&dir.join("store"))?);
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
