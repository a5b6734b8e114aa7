//! The lock table: the pure [`LockManager`] driven with real waiting.
//!
//! The lock manager decides (grant, wait, die); this wrapper holds it under a mutex, parks a
//! waiting transaction on a oneshot channel, wakes the transactions that a release grants, and
//! enforces the lock-wait timeout, which backs up wait-die (a transaction whose client went idle
//! while holding locks cannot block others forever).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::lock::{Acquire, LockManager, LockMode, Resource, TxnId};
use crate::error::{Error, Result};

#[derive(Default)]
struct Inner {
    manager: LockManager,
    wakers: HashMap<TxnId, oneshot::Sender<()>>,
}

impl Inner {
    fn wake(&mut self, grants: Vec<(TxnId, Resource)>) {
        for (txn, _) in grants {
            if let Some(waker) = self.wakers.remove(&txn) {
                let _ = waker.send(());
            }
        }
    }
}

/// Why a lock could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockFailure {
    /// Wait-die chose this transaction; retrying with the same age will eventually succeed.
    Died,
    /// The lock was not granted within the lock-wait timeout.
    TimedOut,
}

/// The node's lock table.
#[derive(Default)]
pub struct LockTable {
    inner: Mutex<Inner>,
}

fn poisoned() -> Error {
    Error::Internal("lock table mutex poisoned".into())
}

impl LockTable {
    /// An empty lock table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Acquires `mode` on `resource` for `txn` (of age `ts`), waiting at most `timeout`.
    pub async fn acquire(
        &self,
        txn: TxnId,
        ts: u64,
        resource: &Resource,
        mode: LockMode,
        timeout: Duration,
    ) -> Result<std::result::Result<(), LockFailure>> {
        let rx = {
            let mut inner = self.inner.lock().map_err(|_| poisoned())?;
            match inner.manager.acquire(txn, ts, resource, mode) {
                Acquire::Granted => return Ok(Ok(())),
                Acquire::Die { .. } => return Ok(Err(LockFailure::Died)),
                Acquire::Wait => {
                    let (tx, rx) = oneshot::channel();
                    inner.wakers.insert(txn, tx);
                    rx
                }
            }
        };
        if let Ok(Ok(())) = tokio::time::timeout(timeout, rx).await {
            return Ok(Ok(()));
        }
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        inner.wakers.remove(&txn);
        if inner.manager.waiting_for(txn).is_none() {
            // Granted between the timeout firing and taking the mutex.
            return Ok(Ok(()));
        }
        let grants = inner.manager.cancel_wait(txn);
        inner.wake(grants);
        Ok(Err(LockFailure::TimedOut))
    }

    /// Releases every lock of `txn` and wakes the waiters this grants.
    pub fn release_all(&self, txn: TxnId) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.wakers.remove(&txn);
            let grants = inner.manager.release_all(txn);
            inner.wake(grants);
        }
    }

    /// Marks `txn` prepared: others may wait for it without wait-die (see
    /// [`super::lock::LockManager::mark_prepared`]).
    pub fn mark_prepared(&self, txn: TxnId) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.manager.mark_prepared(txn);
        }
    }

    /// The number of resources locked or waited for (0 when the node is idle).
    pub fn locked_resources(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.manager.locked_resources())
            .unwrap_or(0)
    }
}
