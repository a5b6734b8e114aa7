//! DDL on a standalone node: `CREATE TABLE` and `DROP TABLE` in the node's own catalog.
//!
//! The schema change is written in the same atomic log entry as its effects (the new table's
//! id, or the deletion of the dropped table's rows), so a crash never leaves half of it. In a
//! cluster the schema lives in the cluster map instead and DDL is a map change (the server's
//! backend does that); this is the path of a node that is not in a cluster.
//!
//! Inside a transaction block ([`run_in_txn`]) the change is buffered in the transaction (its
//! meta writes, and the deletes of a dropped table's rows) and committed or rolled back with
//! it. Until the commit it exists only for that transaction: its statements are planned
//! against an overlay of the node's catalog ([`overlay`]) in which a table it created exists
//! and one it dropped does not, while every other session plans against the node's catalog,
//! which changes only once the commit is durable and before the transaction's locks go. A
//! dropped table is locked exclusively until then (others wait for it, and then find it gone);
//! a table's *name* is locked exclusively by whoever creates or drops it, so two transactions
//! never create the same name, and one that waited for the name sees the other's outcome.
//! Savepoints cover DDL too: a rollback to one undoes the DDL after it.

use std::sync::Arc;

use crate::error::{sqlstate, Error, Result};
use crate::sql::catalog::Catalog;
use crate::sql::planner::Plan;
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, Transaction, TxnManager};
use crate::types::{QueryResult, Table};

/// A catalog change made inside a transaction block and not committed yet.
#[derive(Clone, Debug)]
pub enum Pending {
    Create(Table),
    Drop(String),
}

/// The lock that names a table. Table id 0 is never a table's (ids start at 1), so its rows
/// are free to stand for catalog names.
fn name_lock(name: &str) -> Resource {
    Resource::Row(0, format!("table/{name}").into_bytes())
}

/// The node's catalog as a transaction with `pending` changes sees it.
pub fn overlay(base: &Catalog, pending: &[Pending]) -> Result<Catalog> {
    base.overlay(|tables| {
        for change in pending {
            match change {
                Pending::Create(t) => {
                    tables.insert(t.name.clone(), Arc::new(t.clone()));
                }
                Pending::Drop(name) => {
                    tables.remove(name);
                }
            }
        }
    })
}

/// Makes committed `pending` changes part of the node's catalog (after the commit is durable,
/// before the transaction's locks are released).
pub fn apply(base: &Catalog, pending: &[Pending]) {
    for change in pending {
        let done = match change {
            Pending::Create(t) => base.add(t.clone()),
            Pending::Drop(name) => base.remove(name),
        };
        if let Err(e) = done {
            tracing::error!("cannot apply committed DDL {change:?} to the catalog: {e}");
        }
    }
}

/// Runs a DDL plan inside a transaction block: buffered in `txn`, recorded in `pending`, and
/// visible only to this transaction until it commits (see the module notes).
pub async fn run_in_txn(
    base: &Catalog,
    txn: &mut Transaction,
    pending: &mut Vec<Pending>,
    plan: &Plan,
) -> Result<QueryResult> {
    match plan {
        Plan::CreateTable {
            table,
            if_not_exists,
        } => {
            txn.lock(name_lock(&table.name), LockMode::Exclusive)
                .await?;
            // Judged after the name lock: a transaction that held it has ended.
            if overlay(base, pending)?.get(&table.name)?.is_some() {
                if *if_not_exists {
                    return Ok(QueryResult::tag("CREATE TABLE"));
                }
                return Err(duplicate(&table.name));
            }
            let mut table = table.clone();
            table.id = base.next_table_id(txn.store().engine.as_ref())?;
            txn.lock(Resource::Table(table.id), LockMode::Exclusive)
                .await?;
            for w in base.create_writes(&table)? {
                txn.put_meta(w);
            }
            pending.push(Pending::Create(table));
            Ok(QueryResult::tag("CREATE TABLE"))
        }
        Plan::DropTable { names, if_exists } => {
            for name in names {
                txn.lock(name_lock(name), LockMode::Exclusive).await?;
                let Some(t) = overlay(base, pending)?.get(name)? else {
                    if *if_exists {
                        continue;
                    }
                    return Err(undefined(name));
                };
                // Waits for every transaction using the table to finish.
                txn.lock(Resource::Table(t.id), LockMode::Exclusive).await?;
                for (key, _) in txn.scan(t.id, Intent::Write).await? {
                    txn.delete(t.id, key).await?;
                }
                for w in base.drop_writes(&t) {
                    txn.put_meta(w);
                }
                pending.push(Pending::Drop(name.clone()));
            }
            Ok(QueryResult::tag("DROP TABLE"))
        }
        _ => Err(Error::Internal("not DDL".into())),
    }
}

fn duplicate(name: &str) -> Error {
    Error::sql(
        sqlstate::DUPLICATE_TABLE,
        format!("relation \"{name}\" already exists"),
    )
}

fn undefined(name: &str) -> Error {
    Error::sql(
        sqlstate::UNDEFINED_TABLE,
        format!("table \"{name}\" does not exist"),
    )
}

/// Runs a DDL plan against the node's own catalog.
pub async fn run_local(
    catalog: &Arc<Catalog>,
    txns: &Arc<TxnManager>,
    plan: &Plan,
) -> Result<QueryResult> {
    let _ddl = catalog.ddl.lock().await;
    let store = &txns.store;
    match plan {
        Plan::CreateTable {
            table,
            if_not_exists,
        } => {
            // The name is locked while it is checked and created: a transaction block that is
            // creating or dropping it decides first.
            let mut name = txns.begin(None);
            name.lock(name_lock(&table.name), LockMode::Exclusive)
                .await?;
            if catalog.get(&table.name)?.is_some() {
                if *if_not_exists {
                    return Ok(QueryResult::tag("CREATE TABLE"));
                }
                return Err(duplicate(&table.name));
            }
            let mut table = table.clone();
            table.id = catalog.next_table_id(store.engine.as_ref())?;
            // epoch: 1 until shard epochs reach the committer.
            store
                .committer
                .commit(0, catalog.create_writes(&table)?)
                .await?;
            catalog.add(table)?;
            name.rollback();
            Ok(QueryResult::tag("CREATE TABLE"))
        }
        Plan::DropTable { names, if_exists } => {
            let mut txn = txns.begin(None);
            let mut tables = Vec::new();
            for name in names {
                txn.lock(name_lock(name), LockMode::Exclusive).await?;
                match catalog.get(name)? {
                    Some(t) => tables.push(t),
                    None if *if_exists => {}
                    None => return Err(undefined(name)),
                }
            }
            for t in &tables {
                // Waits for every transaction using the table to finish.
                txn.lock(Resource::Table(t.id), LockMode::Exclusive).await?;
                for (key, _) in txn.scan(t.id, Intent::Write).await? {
                    txn.delete(t.id, key).await?;
                }
                for w in catalog.drop_writes(t) {
                    txn.put_meta(w);
                }
            }
            // The tables leave the catalog before the exclusive locks are released, so a
            // statement waiting on them finds them gone instead of writing orphan rows.
            let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
            let after = catalog.clone();
            txn.commit_then(move || {
                for name in &names {
                    if let Err(e) = after.remove(name) {
                        tracing::error!("cannot remove dropped table {name} from the catalog: {e}");
                    }
                }
            })
            .await?;
            Ok(QueryResult::tag("DROP TABLE"))
        }
        _ => Err(Error::Internal("not DDL".into())),
    }
}
