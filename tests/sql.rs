//! SQL behaviour, specified in sqllogictest files under `tests/sql/`, run over the PostgreSQL
//! protocol (tokio-postgres, extended protocol with binary results) against a single node and
//! against a three-shard cluster, with the same expectations: on the cluster the rows are spread
//! over the shards, so the same files check routing, pushdown, the merge of ordered and limited
//! results, and the combination of partial aggregates.
//!
//! Each `.slt` file gets its own fresh node, or its own fresh cluster. Errors are reported as
//! `SQLSTATE <code>: <message>` so a file can assert the code: `statement error 23505`. `SLT=name`
//! runs only the files whose path contains `name`.

mod common;

use common::{TestCluster, TestNode};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::types::Type;

struct Ddb {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

fn sql_error(e: tokio_postgres::Error) -> SqlError {
    match e.as_db_error() {
        Some(db) => SqlError(format!("SQLSTATE {}: {}", db.code().code(), db.message())),
        None => SqlError(format!("client error: {e}")),
    }
}

fn cell(row: &tokio_postgres::Row, i: usize, ty: &Type) -> Result<String, SqlError> {
    let bad = |e: tokio_postgres::Error| SqlError(format!("decode column {i}: {e}"));
    let text = match *ty {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(|b| if b { "t" } else { "f" }.to_string()),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        Type::TIMESTAMP => row
            .try_get::<_, Option<chrono::NaiveDateTime>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        _ => row.try_get::<_, Option<String>>(i).map_err(bad)?.map(|s| {
            if s.is_empty() {
                "(empty)".into()
            } else {
                s
            }
        }),
    };
    Ok(text.unwrap_or_else(|| "NULL".into()))
}

fn column_type(ty: &Type) -> DefaultColumnType {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 => DefaultColumnType::FloatingPoint,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

#[async_trait::async_trait]
impl AsyncDB for Ddb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let stmt = self.client.prepare(sql).await.map_err(sql_error)?;
        if stmt.columns().is_empty() {
            let n = self.client.execute(&stmt, &[]).await.map_err(sql_error)?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let rows = self.client.query(&stmt, &[]).await.map_err(sql_error)?;
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut cells = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                cells.push(cell(row, i, ty)?);
            }
            out.push(cells);
        }
        Ok(DBOutput::Rows {
            types: types.iter().map(column_type).collect(),
            rows: out,
        })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Runs one file against the SQL port `port`; `logs` gives the servers' logs for a failure.
async fn run_file(path: &std::path::Path, port: u16, logs: impl Fn() -> String) {
    let mut runner = sqllogictest::Runner::new(move || async move {
        Ok(Ddb {
            client: common::connect(port).await,
        })
    });
    // Column types are checked: `query I` must return an integer column, `R` a float, `T` text.
    runner.with_column_validator(|actual, expected| {
        actual.len() == expected.len()
            && actual.iter().zip(expected).all(|(a, e)| {
                *e == DefaultColumnType::Any || *a == DefaultColumnType::Any || a == e
            })
    });
    if let Err(e) = runner.run_file_async(path).await {
        panic!("{}: {}\nlogs:\n{}", path.display(), e.display(true), logs());
    }
}

/// The `.slt` files, sorted, less those `SLT` filters out.
fn files() -> Vec<std::path::PathBuf> {
    let dir = common::repo_path("tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/sql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let filter = std::env::var("SLT").ok();
    files.retain(|f| {
        filter
            .as_ref()
            .is_none_or(|s| f.to_string_lossy().contains(s.as_str()))
    });
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    for f in files() {
        eprintln!("running {} on a single node", f.display());
        let node = TestNode::start();
        run_file(&f, node.sql_port, || node.log_tail()).await;
    }
}

/// How many files run at once against their own clusters: starting a cluster is mostly waiting
/// (for the map's Raft group and the nodes' first heartbeats), so a few overlap well.
const CLUSTERS_AT_ONCE: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests_on_a_three_shard_cluster() {
    use futures::StreamExt;
    let runs = files().into_iter().enumerate().map(|(i, f)| async move {
        // Files use different gateways, so each shard is sometimes the gateway's own.
        let gateway = format!("n{}", i % 3 + 1);
        let cluster = tokio::task::spawn_blocking(|| {
            let cluster = TestCluster::new("slt", 3);
            cluster.init();
            cluster
        })
        .await
        .expect("start a cluster");
        eprintln!(
            "running {} on a three-shard cluster through {gateway}",
            f.display()
        );
        run_file(&f, cluster.sql_port(&gateway), || cluster.logs()).await;
    });
    futures::stream::iter(runs)
        .buffer_unordered(CLUSTERS_AT_ONCE)
        .collect::<Vec<()>>()
        .await;
}
