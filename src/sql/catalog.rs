//! The catalog: table schemas, persisted in the node's meta space.
//!
//! A table has an id (the first part of its row keys), columns, and a primary key. A table
//! declared without a primary key gets a hidden `BIGINT` row id as its key, generated on insert
//! and never shown by `SELECT *`. The catalog is loaded at start-up. On a standalone node it is
//! changed only by DDL, whose commit writes the schema in the same atomic log entry as its
//! effects; in a cluster it follows the cluster map, and records the map version it reflects
//! (a shard waits for that version before it runs a statement planned against it).
//!
//! Row ids are handed out from blocks: the high end of the current block is persisted before any
//! id from it is used, so ids are never reused after a crash (a crash may leave a gap).
//!
//! The sequences of `SERIAL` and identity columns ([`crate::types::schema::Identity`]) are
//! kept the same way on a standalone node: each has its own key in the meta space, holding the
//! first value not yet reserved, and values are handed out from a reserved block, so a crash
//! leaves a gap and never a value given twice. `setval` writes its value before it returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::error::{sqlstate, Error, Result};
use crate::storage::log::CommitReceiver;
use crate::storage::{Committer, Engine, Space, Write};
use crate::types::{DataType, Table};

/// The largest value of a sequence counting in a column of type `ty`.
fn max_of(ty: &DataType) -> i64 {
    match ty {
        DataType::SmallInt => i16::MAX as i64,
        DataType::Int => i32::MAX as i64,
        _ => i64::MAX,
    }
}

/// Row ids reserved per persisted block.
const ROWID_BLOCK: i64 = 1000;

fn table_key(name: &str) -> Vec<u8> {
    format!("table/{name}").into_bytes()
}

const NEXT_TABLE_ID_KEY: &[u8] = b"next_table_id";

fn rowid_key(table: u32) -> Vec<u8> {
    format!("rowid/{table}").into_bytes()
}

/// Where a replica's gateway keeps its own row-id blocks: beside the log, which holds only its
/// primary's entries (and with them the primary's `rowid/` blocks, which are not this node's).
fn own_rowid_key(table: u32) -> Vec<u8> {
    format!("rowid-own/{table}").into_bytes()
}

fn block_limit(bytes: Option<Vec<u8>>) -> Result<i64> {
    match bytes {
        None => Ok(1),
        Some(b) => Ok(i64::from_be_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("rowid block".into()))?,
        )),
    }
}

fn sequence_key(table: u32, name: &str) -> Vec<u8> {
    format!("sequence/{table}/{name}").into_bytes()
}

/// Values of a sequence reserved per persisted block.
const SEQUENCE_BLOCK: i64 = 100;

/// A sequence's reserved block: `next` up to (not including) `limit`; `table` is the owner's
/// id, so a table dropped and made again under the same name starts its sequence afresh.
struct SequenceBlock {
    table: u32,
    next: i64,
    limit: i64,
}

struct RowIds {
    next: i64,
    limit: i64,
}

/// The node's catalog.
pub struct Catalog {
    tables: RwLock<HashMap<String, Arc<Table>>>,
    /// Shared with the overlays of this catalog ([`Catalog::overlay`]): a row id is handed out
    /// once, whichever view of the catalog asks.
    rowids: Arc<Mutex<HashMap<u32, RowIds>>>,
    /// The highest table id handed out by [`Catalog::next_table_id`] since start-up (a table
    /// being created in a transaction block has its id before it is committed).
    reserved_table_id: Mutex<u32>,
    /// Shared with the overlays, as the row ids: the blocks of values reserved per sequence.
    sequences: Arc<Mutex<HashMap<String, SequenceBlock>>>,
    /// Serialises DDL so table ids and names are assigned one at a time.
    pub ddl: tokio::sync::Mutex<()>,
    /// The cluster map version the catalog reflects (0 on a standalone node).
    version: AtomicU64,
    version_changed: tokio::sync::Notify,
}

fn poisoned() -> Error {
    Error::Internal("catalog lock poisoned".into())
}

impl Catalog {
    /// The cluster map version the catalog reflects.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records that the catalog now reflects map `version`, and wakes those waiting for it.
    pub fn set_version(&self, version: u64) {
        self.version.store(version, Ordering::Release);
        self.version_changed.notify_waiters();
    }

    /// Waits until the catalog reflects map `version`; false if it did not within `timeout`.
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.version_changed.notified();
            if self.version() >= version {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Loads the catalog from the meta space.
    pub fn load(engine: &dyn Engine) -> Result<Self> {
        let mut tables = HashMap::new();
        for kv in engine.scan_prefix(Space::Meta, b"table/") {
            let (_, value) = kv?;
            let table: Table = postcard::from_bytes(&value)?;
            tables.insert(table.name.clone(), Arc::new(table));
        }
        Ok(Self {
            tables: RwLock::new(tables),
            rowids: Arc::new(Mutex::new(HashMap::new())),
            reserved_table_id: Mutex::new(0),
            sequences: Arc::new(Mutex::new(HashMap::new())),
            ddl: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
            version_changed: tokio::sync::Notify::new(),
        })
    }

    /// The table called `name`.
    pub fn get(&self, name: &str) -> Result<Option<Arc<Table>>> {
        Ok(self
            .tables
            .read()
            .map_err(|_| poisoned())?
            .get(name)
            .cloned())
    }

    /// Whether a table with this id exists (a statement checks it after locking the table, so a
    /// concurrent `DROP TABLE` cannot leave rows behind).
    pub fn contains_id(&self, id: u32) -> Result<bool> {
        Ok(self
            .tables
            .read()
            .map_err(|_| poisoned())?
            .values()
            .any(|t| t.id == id))
    }

    /// The names of all tables, sorted.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .tables
            .read()
            .map_err(|_| poisoned())?
            .keys()
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    /// The id the next created table gets.
    pub fn next_table_id(&self, engine: &dyn Engine) -> Result<u32> {
        let stored = match engine.get(Space::Meta, NEXT_TABLE_ID_KEY)? {
            None => 1,
            Some(b) => u32::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("next_table_id".into()))?,
            ),
        };
        // Transactions that create tables may commit in another order than they took their
        // ids, so the stored next id can lag: never hand out an id in use or already given.
        let in_use = self
            .tables
            .read()
            .map_err(|_| poisoned())?
            .values()
            .map(|t| t.id)
            .max()
            .unwrap_or(0);
        let mut reserved = self.reserved_table_id.lock().map_err(|_| poisoned())?;
        let id = stored
            .max(in_use.saturating_add(1))
            .max(reserved.saturating_add(1));
        if id == u32::MAX {
            return Err(Error::Internal("table ids exhausted".into()));
        }
        *reserved = id;
        Ok(id)
    }

    /// A view of this catalog with `change` made to its tables, for one transaction that has
    /// DDL of its own not yet committed. It shares this catalog's row ids and version; it is
    /// never persisted.
    pub fn overlay(&self, change: impl FnOnce(&mut HashMap<String, Arc<Table>>)) -> Result<Self> {
        let mut tables = self.tables.read().map_err(|_| poisoned())?.clone();
        change(&mut tables);
        Ok(Self {
            tables: RwLock::new(tables),
            rowids: self.rowids.clone(),
            reserved_table_id: Mutex::new(0),
            sequences: self.sequences.clone(),
            ddl: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(self.version()),
            version_changed: tokio::sync::Notify::new(),
        })
    }

    /// The writes that create `table` in storage.
    pub fn create_writes(&self, table: &Table) -> Result<Vec<Write>> {
        let next = table
            .id
            .checked_add(1)
            .ok_or_else(|| Error::Internal("table ids exhausted".into()))?;
        Ok(vec![
            Write::Put(
                Space::Meta,
                table_key(&table.name),
                postcard::to_stdvec(table)?,
            ),
            Write::Put(
                Space::Meta,
                NEXT_TABLE_ID_KEY.to_vec(),
                next.to_be_bytes().to_vec(),
            ),
        ])
    }

    /// The writes that remove `table` from the catalog (its rows are deleted separately).
    pub fn drop_writes(&self, table: &Table) -> Vec<Write> {
        let mut writes = vec![
            Write::Delete(Space::Meta, table_key(&table.name)),
            Write::Delete(Space::Meta, rowid_key(table.id)),
        ];
        for id in table.columns.iter().filter_map(|c| c.identity()) {
            writes.push(Write::Delete(
                Space::Meta,
                sequence_key(table.id, id.sequence),
            ));
        }
        writes
    }

    /// The table that owns the sequence `name`, and the position of its column.
    pub fn sequence_owner(&self, name: &str) -> Result<Option<(Arc<Table>, usize)>> {
        let tables = self.tables.read().map_err(|_| poisoned())?;
        for t in tables.values() {
            let owned = t
                .columns
                .iter()
                .position(|c| c.identity().is_some_and(|id| id.sequence == name));
            if let Some(i) = owned {
                return Ok(Some((t.clone(), i)));
            }
        }
        Ok(None)
    }

    /// The owner of sequence `name`, or 42P01 as PostgreSQL says it.
    fn owner(&self, name: &str) -> Result<(Arc<Table>, usize)> {
        self.sequence_owner(name)?.ok_or_else(|| {
            Error::sql(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            )
        })
    }

    /// Takes the next value of the sequence `name` (see the module notes). When a new block is
    /// reserved, its reservation is returned: it must be durable before the value is used.
    pub fn next_sequence_value(
        &self,
        engine: &dyn Engine,
        committer: &Committer,
        name: &str,
    ) -> Result<(i64, Option<CommitReceiver>)> {
        let (table, col) = self.owner(name)?;
        let max = max_of(&table.columns[col].data_type);
        let mut blocks = self.sequences.lock().map_err(|_| poisoned())?;
        let block = match blocks.get_mut(name) {
            Some(b) if b.table == table.id => b,
            _ => {
                let next = match engine.get(Space::Meta, &sequence_key(table.id, name))? {
                    None => 1,
                    Some(b) => i64::from_be_bytes(
                        b.as_slice()
                            .try_into()
                            .map_err(|_| Error::Corrupt("sequence block".into()))?,
                    ),
                };
                let fresh = SequenceBlock {
                    table: table.id,
                    next,
                    limit: next,
                };
                blocks.insert(name.to_string(), fresh);
                blocks
                    .get_mut(name)
                    .ok_or_else(|| Error::Internal("sequence block vanished".into()))?
            }
        };
        if block.next > max {
            return Err(Error::sql(
                sqlstate::SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
                format!("nextval: reached maximum value of sequence \"{name}\" ({max})"),
            ));
        }
        let mut reserved = None;
        if block.next >= block.limit {
            let limit = block.next.saturating_add(SEQUENCE_BLOCK);
            let key = sequence_key(table.id, name);
            let write = Write::Put(Space::Meta, key, limit.to_be_bytes().to_vec());
            // epoch: 1 until shard epochs reach the committer.
            reserved = Some(committer.submit(0, vec![write])?);
            block.limit = limit;
        }
        let value = block.next;
        block.next += 1;
        Ok((value, reserved))
    }

    /// Makes `next` the next value of the sequence `name` (`setval`); the write must be durable
    /// before `setval` returns. 22003 when `next` is outside the sequence's range.
    pub fn set_sequence_value(
        &self,
        committer: &Committer,
        name: &str,
        value: i64,
        next: i64,
    ) -> Result<CommitReceiver> {
        let (table, col) = self.owner(name)?;
        let max = max_of(&table.columns[col].data_type);
        if value < 1 || value > max {
            return Err(Error::sql(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!(
                    "setval: value {value} is out of bounds for sequence \"{name}\" (1..{max})"
                ),
            ));
        }
        let mut blocks = self.sequences.lock().map_err(|_| poisoned())?;
        let key = sequence_key(table.id, name);
        let write = Write::Put(Space::Meta, key, next.to_be_bytes().to_vec());
        let written = committer.submit(0, vec![write])?;
        blocks.insert(
            name.to_string(),
            SequenceBlock {
                table: table.id,
                next,
                limit: next,
            },
        );
        Ok(written)
    }

    /// Makes a committed `CREATE TABLE` visible.
    pub fn add(&self, table: Table) -> Result<()> {
        self.tables
            .write()
            .map_err(|_| poisoned())?
            .insert(table.name.clone(), Arc::new(table));
        Ok(())
    }

    /// Makes a committed `DROP TABLE` visible.
    pub fn remove(&self, name: &str) -> Result<()> {
        let removed = self.tables.write().map_err(|_| poisoned())?.remove(name);
        if let Some(t) = removed {
            self.rowids.lock().map_err(|_| poisoned())?.remove(&t.id);
            let mut blocks = self.sequences.lock().map_err(|_| poisoned())?;
            for id in t.columns.iter().filter_map(|c| c.identity()) {
                blocks.remove(id.sequence);
            }
        }
        Ok(())
    }

    /// Takes the next row id of `table`. When a new block is reserved, the reservation is
    /// submitted to the committer before the catalog lock is released, so it is durable before
    /// any commit that uses an id from the block; the returned receiver must be awaited before the
    /// id is used. On a replica (its log is its primary's: [`Committer::is_foreign`]) the block
    /// is written and made durable beside the log instead. Either way a node resumes above the
    /// higher of the two blocks, so its ids never go back, whichever role it had.
    pub fn next_rowid(
        &self,
        engine: &dyn Engine,
        committer: &Committer,
        table: u32,
    ) -> Result<(i64, Option<CommitReceiver>)> {
        let mut rowids = self.rowids.lock().map_err(|_| poisoned())?;
        let ids = match rowids.entry(table) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let persisted = block_limit(engine.get(Space::Meta, &rowid_key(table))?)?.max(
                    block_limit(engine.get(Space::Meta, &own_rowid_key(table))?)?,
                );
                e.insert(RowIds {
                    next: persisted,
                    limit: persisted,
                })
            }
        };
        let mut reserved = None;
        if ids.next >= ids.limit {
            let limit = ids.next + ROWID_BLOCK;
            if committer.is_foreign() {
                let key = own_rowid_key(table);
                engine.write(vec![Write::Put(
                    Space::Meta,
                    key,
                    limit.to_be_bytes().to_vec(),
                )])?;
                engine.persist()?;
            } else {
                let write = Write::Put(Space::Meta, rowid_key(table), limit.to_be_bytes().to_vec());
                // epoch: 1 until shard epochs reach the committer.
                reserved = Some(committer.submit(0, vec![write])?);
            }
            ids.limit = limit;
        }
        let id = ids.next;
        ids.next += 1;
        Ok((id, reserved))
    }
}
