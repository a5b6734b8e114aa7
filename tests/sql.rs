//! SQL behaviour, specified in sqllogictest files under `tests/sql/`, run over the PostgreSQL
//! protocol (tokio-postgres, extended protocol with binary results) against a single node,
//! against a three-shard cluster, and against a throwaway PostgreSQL, with the same
//! expectations. On the cluster the rows are spread over the shards, so the same files check
//! routing, pushdown, the merge of ordered and limited results, and the combination of partial
//! aggregates. On PostgreSQL they check the expectations themselves: a ddb answer must be
//! PostgreSQL's, or a documented difference.
//!
//! The comparison is strict:
//!
//! * Column types are always checked, one letter per column: `T` text (`text`, `varchar`,
//!   `char`), `I` integer (`smallint`, `integer`, `bigint`), `R` floating point (`real`,
//!   `double precision`), `N` `numeric`, `B` `boolean`, `D` `timestamp`, `U` `uuid` (decoded
//!   from its binary form and printed as PostgreSQL prints it). There is no wildcard,
//!   and a column of any other type fails the record.
//! * Values are compared cell by cell: each cell is normalised as sqllogictest does (trimmed,
//!   runs of white space made one space) and must match the words of the expected line that
//!   come next, and the line must end with the row. A failure names the row and column. NULL is
//!   `NULL`, an empty string `(empty)`, booleans `t`/`f`.
//!
//! Records where ddb and PostgreSQL differ on purpose are marked `skipif postgres` (a ddb-only
//! expectation) or `onlyif postgres` (PostgreSQL's answer to the same statement), each with a
//! comment naming the difference, which is in the README's list of current limits. The runners
//! label their engine `ddb` or `postgres`; the cluster runner also has the label `cluster`, for
//! what a cluster does not do yet that a single node does (`skipif cluster`/`onlyif cluster`).
//!
//! Each `.slt` file gets its own fresh node, cluster, or PostgreSQL database. Errors are
//! reported as `SQLSTATE <code>: <message>` so a file can assert the code:
//! `statement error 23505`. `SLT=name` runs only the files whose path contains `name`.
//! Without PostgreSQL's server binaries the PostgreSQL runner fails, unless
//! `DDB_TEST_SKIP_POSTGRES=1` is set (see `tests/common/postgres.rs`).

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use common::{TestCluster, TestNode};
use postgres::Postgres;
use sqllogictest::{AsyncDB, ColumnType, DBOutput, Normalizer};
use tokio_postgres::types::Type;

/// A connection to the engine under test, labelled with its name for `skipif`/`onlyif`.
struct Db {
    client: tokio_postgres::Client,
    engine: &'static str,
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

/// The type of a result column, as a `query` record spells it: one letter per column.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    Text,
    Integer,
    Float,
    Numeric,
    Bool,
    Timestamp,
    Uuid,
}

/// A `uuid` result in its binary form (16 bytes), printed as PostgreSQL prints it.
struct Uuid(String);

impl<'a> tokio_postgres::types::FromSql<'a> for Uuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err(format!("a binary uuid of {} bytes", raw.len()).into());
        }
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Uuid(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

impl ColumnType for Column {
    fn from_char(c: char) -> Option<Self> {
        Some(match c {
            'T' => Column::Text,
            'I' => Column::Integer,
            'R' => Column::Float,
            'N' => Column::Numeric,
            'B' => Column::Bool,
            'D' => Column::Timestamp,
            'U' => Column::Uuid,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Column::Text => 'T',
            Column::Integer => 'I',
            Column::Float => 'R',
            Column::Numeric => 'N',
            Column::Bool => 'B',
            Column::Timestamp => 'D',
            Column::Uuid => 'U',
        }
    }
}

fn column_type(i: usize, ty: &Type) -> Result<Column, SqlError> {
    Ok(match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => Column::Text,
        Type::INT2 | Type::INT4 | Type::INT8 => Column::Integer,
        Type::FLOAT4 | Type::FLOAT8 => Column::Float,
        Type::NUMERIC => Column::Numeric,
        Type::BOOL => Column::Bool,
        Type::TIMESTAMP => Column::Timestamp,
        Type::UUID => Column::Uuid,
        _ => {
            return Err(SqlError(format!(
                "column {i} has type {ty}, which tests/sql.rs has no letter for"
            )))
        }
    })
}

fn cell(row: &tokio_postgres::Row, i: usize, column: &Column) -> Result<String, SqlError> {
    let bad = |e: tokio_postgres::Error| SqlError(format!("decode column {i}: {e}"));
    let ty = row.columns()[i].type_();
    let text = match (column, ty) {
        (Column::Bool, _) => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(|b| if b { "t" } else { "f" }.to_string()),
        (Column::Integer, &Type::INT2) => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        (Column::Integer, &Type::INT4) => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        (Column::Integer, _) => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        (Column::Float, &Type::FLOAT4) => row
            .try_get::<_, Option<f32>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        (Column::Float, _) => row
            .try_get::<_, Option<f64>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        // As PostgreSQL prints it: the digits of its scale, no exponent.
        (Column::Numeric, _) => row
            .try_get::<_, Option<rust_decimal::Decimal>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        (Column::Timestamp, _) => row
            .try_get::<_, Option<chrono::NaiveDateTime>>(i)
            .map_err(bad)?
            .map(|v| v.to_string()),
        (Column::Uuid, _) => row.try_get::<_, Option<Uuid>>(i).map_err(bad)?.map(|u| u.0),
        (Column::Text, _) => row.try_get::<_, Option<String>>(i).map_err(bad)?.map(|s| {
            // White space alone would normalise to nothing, and so would match no cell.
            if s.trim().is_empty() {
                "(empty)".into()
            } else {
                s
            }
        }),
    };
    Ok(text.unwrap_or_else(|| "NULL".into()))
}

/// Compares the rows with the expected lines cell by cell (see the module's prose), and says
/// on stderr where the first difference is; sqllogictest then prints both results whole.
fn cells_match(_: Normalizer, actual: &[Vec<String>], expected: &[String]) -> bool {
    if actual.len() != expected.len() {
        eprintln!("{} rows, expected {}", actual.len(), expected.len());
        return false;
    }
    for (r, (row, line)) in actual.iter().zip(expected).enumerate() {
        let mut words = line.split_ascii_whitespace();
        for (c, value) in row.iter().enumerate() {
            let cell: Vec<&str> = value.split_ascii_whitespace().collect();
            let want: Vec<&str> = words.by_ref().take(cell.len()).collect();
            if cell.is_empty() || cell != want {
                eprintln!(
                    "row {}, column {}: got `{}`, expected `{}`",
                    r + 1,
                    c + 1,
                    cell.join(" "),
                    want.join(" ")
                );
                return false;
            }
        }
        let rest: Vec<&str> = words.collect();
        if !rest.is_empty() {
            eprintln!(
                "row {}: {} cells, and the expected line goes on with `{}`",
                r + 1,
                row.len(),
                rest.join(" ")
            );
            return false;
        }
    }
    true
}

#[async_trait::async_trait]
impl AsyncDB for Db {
    type Error = SqlError;
    type ColumnType = Column;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Column>, SqlError> {
        let stmt = self.client.prepare(sql).await.map_err(sql_error)?;
        if stmt.columns().is_empty() {
            let n = self.client.execute(&stmt, &[]).await.map_err(sql_error)?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let types = stmt
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| column_type(i, c.type_()))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self.client.query(&stmt, &[]).await.map_err(sql_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut cells = Vec::with_capacity(types.len());
            for (i, column) in types.iter().enumerate() {
                cells.push(cell(row, i, column)?);
            }
            out.push(cells);
        }
        Ok(DBOutput::Rows { types, rows: out })
    }

    fn engine_name(&self) -> &str {
        self.engine
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Runs one file against ddb's SQL port `port`, with the extra `labels`; `logs` gives the
/// servers' logs for a failure.
async fn run_file(path: &std::path::Path, port: u16, labels: &[&str], logs: impl Fn() -> String) {
    let mut runner = sqllogictest::Runner::new(move || async move {
        Ok(Db {
            client: common::connect(port).await,
            engine: "ddb",
        })
    });
    for label in labels {
        runner.add_label(label);
    }
    run_with(runner, path, logs).await;
}

/// Runs one file with the strict checks of the module's prose.
async fn run_with<M: sqllogictest::MakeConnection<Conn = Db>>(
    mut runner: sqllogictest::Runner<Db, M>,
    path: &std::path::Path,
    logs: impl Fn() -> String,
) {
    runner.with_column_validator(sqllogictest::strict_column_validator);
    runner.with_validator(cells_match);
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
    assert!(
        !files.is_empty(),
        "SLT={:?} names no .slt file in {}",
        filter.unwrap_or_default(),
        dir.display()
    );
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    for f in files() {
        eprintln!("running {} on a single node", f.display());
        let node = TestNode::start();
        run_file(&f, node.sql_port, &[], || node.log_tail()).await;
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
        run_file(&f, cluster.sql_port(&gateway), &["cluster"], || {
            cluster.logs()
        })
        .await;
    });
    futures::stream::iter(runs)
        .buffer_unordered(CLUSTERS_AT_ONCE)
        .collect::<Vec<()>>()
        .await;
}

/// The expectations themselves: every file, against PostgreSQL, each in a database of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests_agree_with_postgresql() {
    let bin = match Postgres::binaries() {
        Ok(bin) => bin,
        Err(why) if std::env::var(postgres::SKIP_VAR).as_deref() == Ok("1") => {
            eprintln!(
                "\n*** SKIPPED: the .slt files were NOT checked against PostgreSQL: {why} \
                 ({}=1 is set) ***\n",
                postgres::SKIP_VAR
            );
            return;
        }
        Err(why) => panic!(
            "{why}. The .slt expectations are checked against PostgreSQL; set {}=1 to skip \
             this test on a machine without it",
            postgres::SKIP_VAR
        ),
    };
    let pg = tokio::task::spawn_blocking(move || Postgres::start(&bin))
        .await
        .expect("start PostgreSQL");
    let admin = pg.connect("postgres").await;
    for (i, f) in files().into_iter().enumerate() {
        eprintln!("running {} on PostgreSQL", f.display());
        let db = format!("slt_{i}");
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create a database");
        let pg = &pg;
        let runner = sqllogictest::Runner::new(move || {
            let db = db.clone();
            async move {
                Ok(Db {
                    client: pg.connect(&db).await,
                    engine: "postgres",
                })
            }
        });
        run_with(runner, &f, || pg.log_tail()).await;
    }
}
