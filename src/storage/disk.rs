//! The on-disk engine: [`Engine`] on `fjall`, an LSM tree with atomic batches across keyspaces.
//!
//! Each [`Space`] is one fjall keyspace. A batch is committed with fjall's write batch, which is
//! atomic across keyspaces; durability comes from [`Engine::persist`], which fsyncs fjall's
//! journal (`PersistMode::SyncAll`). fjall flushes only to OS buffers on its own, so nothing is
//! acknowledged to a client before the committer has called `persist`.

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::engine::{Engine, KeyValue, Space, Write};
use crate::error::Result;

/// A fjall database with one keyspace per [`Space`].
pub struct Disk {
    db: Database,
    spaces: [Keyspace; 5],
}

impl Disk {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = Database::builder(dir).open()?;
        let open = |s: Space| db.keyspace(s.name(), KeyspaceCreateOptions::default);
        let spaces = [
            open(Space::Data)?,
            open(Space::Log)?,
            open(Space::Txn)?,
            open(Space::Meta)?,
            open(Space::Raft)?,
        ];
        Ok(Self { db, spaces })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }
}

fn collect(iter: fjall::Iter, limit: usize) -> Result<Vec<KeyValue>> {
    let mut out = Vec::new();
    for guard in iter.take(limit) {
        let (k, v) = guard.into_inner()?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

impl Engine for Disk {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.space(space).get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        collect(self.space(space).prefix(prefix), usize::MAX)
    }

    fn scan_range(
        &self,
        space: Space,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        collect(self.space(space).range::<Vec<u8>, _>((start, end)), limit)
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        let mut batch = self.db.batch();
        for w in writes {
            match w {
                Write::Put(s, k, v) => batch.insert(self.space(s), k, v),
                Write::Delete(s, k) => batch.remove(self.space(s), k),
            }
        }
        batch.commit()?;
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}
