//! A node's store: the engine and the group committer over it, on a locked data directory.
//!
//! It is opened once per node; the directory lock (`ddb.lock`) keeps a second process from
//! opening the same data, which would corrupt it.
//!
//! The committer's mode is fixed when the store opens. A node of a replicated shard runs in
//! WAL mode, and says so durably in the meta space ([`MODE_KEY`], written by
//! [`Store::use_wal`] when the node joins a cluster whose `replication.factor` is 2 or more,
//! before anything is committed there), so [`Store::open`] opens it in WAL mode again after a
//! restart, before the node has read its identity or its map.
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
use super::engine::{self, Engine, Space, Write};
use super::log::{self, Committer, Lsn};
use super::record::WalState;
use crate::error::{Error, Result};

/// How the store's committer treats the log (see `storage::log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One copy: each commit's entry and effects in one write.
    Direct,
    /// Replicated: entries are appended first and applied once replication commits them.
    Wal,
}

/// The meta key that says the store's log is a replicated shard's write-ahead log (WAL mode).
pub const MODE_KEY: &[u8] = b"store_mode";

/// The value of [`MODE_KEY`] for WAL mode.
const MODE_WAL: &[u8] = b"wal";

/// The storage of a node: engine and committer.
pub struct Store {
    pub engine: Arc<dyn Engine>,
    pub committer: Committer,
    /// The data directory lock, held for the life of the store.
    _lock: Option<File>,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed, in the mode it was last set to (WAL
    /// mode once [`Store::use_wal`] ran, Direct mode otherwise). Refuses a directory that
    /// another process has open.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Mode::Direct)
    }

    /// Opens the store in `dir` with its committer in `mode` (WAL mode whatever `mode` says
    /// once [`Store::use_wal`] ran on it), creating it if needed. Refuses a
    /// directory that another process has open, and a Direct-mode open of a log that WAL mode
    /// left with unapplied entries or a half-installed snapshot (only replication can decide
    /// what becomes of them).
    pub fn open_with(dir: &Path, mode: Mode) -> Result<Self> {
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
        let mode = match engine.get(Space::Meta, MODE_KEY)? {
            Some(v) if v == MODE_WAL => Mode::Wal,
            _ => mode,
        };
        Self::with_engine(engine, Some(lock), mode)
    }

    /// A store on the in-memory engine, for tests.
    pub fn memory() -> Result<Self> {
        Self::memory_with(Mode::Direct)
    }

    /// A store on the in-memory engine with its committer in `mode`, for tests.
    pub fn memory_with(mode: Mode) -> Result<Self> {
        Self::with_engine(Arc::new(engine::Memory::new()), None, mode)
    }

    fn with_engine(engine: Arc<dyn Engine>, lock: Option<File>, mode: Mode) -> Result<Self> {
        let state = log::wal_state(engine.as_ref())?;
        let committer = match mode {
            Mode::Direct => {
                refuse_direct(&state)?;
                Committer::start(engine.clone(), state.applied.lsn + 1)
            }
            Mode::Wal => Committer::start_wal(engine.clone(), state),
        };
        Ok(Self {
            engine,
            committer,
            _lock: lock,
        })
    }

    /// Puts the store in WAL mode for good: writes [`MODE_KEY`] durably, then switches the
    /// committer (see [`Committer::switch_to_wal`]). For a node joining a replicated cluster,
    /// before it commits anything there. Idempotent.
    pub fn use_wal(&self) -> Result<()> {
        if self.committer.is_wal() {
            return Ok(());
        }
        self.engine.write(vec![Write::Put(
            Space::Meta,
            MODE_KEY.to_vec(),
            MODE_WAL.to_vec(),
        )])?;
        self.engine.persist()?;
        self.committer.switch_to_wal(self.engine.clone())
    }

    /// The LSN of the last applied commit (in Direct mode, the last durable one).
    pub fn applied_lsn(&self) -> Result<Lsn> {
        log::applied_lsn(self.engine.as_ref())
    }

    /// The state of the log: the committer's in WAL mode, read from the engine in Direct mode.
    pub fn log_state(&self) -> Result<WalState> {
        if self.committer.is_wal() {
            self.committer.log_state()
        } else {
            log::wal_state(self.engine.as_ref())
        }
    }
}

/// Refuses to commit in Direct mode over a log that WAL mode left unfinished: Direct mode
/// would give its next commit the LSN of the first unapplied entry and overwrite it.
fn refuse_direct(state: &WalState) -> Result<()> {
    if state.installing_snapshot {
        return Err(Error::Refused(
            "the store was cut short installing a replication snapshot; open it in WAL mode \
             so replication can install one again"
                .into(),
        ));
    }
    if state.last.lsn > state.applied.lsn {
        return Err(Error::Refused(format!(
            "the log holds entries {}..={} that are not applied (written in WAL mode); open the \
             store in WAL mode so replication can commit or drop them",
            state.applied.lsn + 1,
            state.last.lsn
        )));
    }
    Ok(())
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
