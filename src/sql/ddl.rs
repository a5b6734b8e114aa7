//! DDL on a standalone node: `CREATE TABLE` and `DROP TABLE` in the node's own catalog.
//!
//! The schema change is written in the same atomic log entry as its effects (the new table's
//! id, or the deletion of the dropped table's rows), so a crash never leaves half of it. In a
//! cluster the schema lives in the cluster map instead and DDL is a map change (the server's
//! backend does that); this is the path of a node that is not in a cluster.

use std::sync::Arc;

use crate::error::{sqlstate, Error, Result};
use crate::sql::catalog::Catalog;
use crate::sql::planner::Plan;
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, TxnManager};
use crate::types::QueryResult;

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
            if catalog.get(&table.name)?.is_some() {
                if *if_not_exists {
                    return Ok(QueryResult::tag("CREATE TABLE"));
                }
                return Err(Error::sql(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{}\" already exists", table.name),
                ));
            }
            let mut table = table.clone();
            table.id = catalog.next_table_id(store.engine.as_ref())?;
            // epoch: 1 until shard epochs reach the committer.
            store
                .committer
                .commit(1, 0, catalog.create_writes(&table)?)
                .await?;
            catalog.add(table)?;
            Ok(QueryResult::tag("CREATE TABLE"))
        }
        Plan::DropTable { names, if_exists } => {
            let mut tables = Vec::new();
            for name in names {
                match catalog.get(name)? {
                    Some(t) => tables.push(t),
                    None if *if_exists => {}
                    None => {
                        return Err(Error::sql(
                            sqlstate::UNDEFINED_TABLE,
                            format!("table \"{name}\" does not exist"),
                        ))
                    }
                }
            }
            let mut txn = txns.begin(None);
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
