//! Rendering results for people (tables) and for scripts (JSON, NDJSON, CSV, TSV).
//!
//! Data goes to stdout; row counts and command tags go to stderr (and not at all with
//! `--quiet`), so a pipeline reads only data. A failed write of data is returned (a closed
//! stdout ends the command, see [`super::console`]); a failed write of a tag or count is
//! dropped, so a closed stderr never stops the data. JSON keeps types: integers and floats are numbers,
//! booleans are booleans, NULL is `null`; object keys are the column names in column order.
//!
//! A result is printed as its rows arrive ([`Printer::start`], [`Printer::rows`],
//! [`Printer::finish`]), so `ddb query` holds a batch, not the result: every format writes
//! each row when it comes, except `table`, which must see every row to size its columns and
//! so gathers the result first.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use serde_json::{Map, Number, Value as Json};

use crate::types::value::Value;
use crate::types::{OutputColumn, QueryResult};

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Ndjson,
    Csv,
    Tsv,
}

impl Format {
    /// The format to use: the one asked for, else a table on a terminal and TSV in a pipe.
    pub fn resolve(asked: Option<Format>) -> Format {
        asked.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Tsv
            }
        })
    }
}

/// Writes results in one format.
pub struct Printer {
    pub format: Format,
    pub quiet: bool,
    pub header: bool,
    /// How many row-returning results have been printed (to separate them).
    printed: usize,
    /// The result being printed, between `start` and `finish`.
    current: Option<Current>,
}

/// A row-returning result on its way out.
struct Current {
    names: Vec<String>,
    /// Rows kept for a table, which is drawn at the end.
    table: Vec<Vec<Value>>,
    rows: u64,
    /// Whether its header is out.
    opened: bool,
}

/// A value as JSON, keeping its type.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::Float(f) => Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(v.to_string())),
        Value::Text(s) => Json::String(s.clone()),
        Value::Timestamp(_) | Value::Uuid(_) => Json::String(v.to_string()),
    }
}

fn csv_field(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    let s = v.to_string();
    if s.contains([',', '"', '\n', '\r']) || s.is_empty() {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn tsv_field(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    v.to_string()
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: Format, quiet: bool, header: bool) -> Self {
        Self {
            format,
            quiet,
            header,
            printed: 0,
            current: None,
        }
    }

    /// Prints one statement's whole result to `out` (data) and `err` (tags and counts).
    pub fn print(
        &mut self,
        result: &QueryResult,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> std::io::Result<()> {
        if !result.columns.is_empty() {
            self.start(&result.columns, out)?;
            self.rows(&result.rows, out)?;
        }
        self.finish(result, out, err)
    }

    /// Starts a result that returns rows with these columns. Its header (where the format
    /// has one) is written with its first rows or at its end, so a statement that fails before
    /// giving any row prints nothing.
    pub fn start(&mut self, columns: &[OutputColumn], _out: &mut dyn Write) -> std::io::Result<()> {
        self.current = Some(Current {
            names: columns.iter().map(|c| c.name.clone()).collect(),
            table: Vec::new(),
            rows: 0,
            opened: false,
        });
        Ok(())
    }

    /// Writes the separator from the previous result and the header of the current one, once.
    fn open(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let Some(current) = &mut self.current else {
            return Ok(());
        };
        if current.opened {
            return Ok(());
        }
        current.opened = true;
        if self.printed > 0 && matches!(self.format, Format::Csv | Format::Tsv | Format::Table) {
            writeln!(out)?;
        }
        self.printed += 1;
        let header = |field: fn(&Value) -> String, sep: &str| {
            current
                .names
                .iter()
                .map(|n| field(&Value::Text(n.clone())))
                .collect::<Vec<_>>()
                .join(sep)
        };
        match self.format {
            Format::Csv if self.header => writeln!(out, "{}", header(csv_field, ",")),
            Format::Tsv if self.header => writeln!(out, "{}", header(tsv_field, "\t")),
            Format::Json => write!(out, "["),
            _ => Ok(()),
        }
    }

    /// Prints the next rows of the result started last.
    pub fn rows(&mut self, rows: &[Vec<Value>], out: &mut dyn Write) -> std::io::Result<()> {
        self.open(out)?;
        let Some(current) = &mut self.current else {
            return Err(std::io::Error::other("rows before their result's columns"));
        };
        let object = |names: &[String], row: &[Value]| {
            let mut m = Map::new();
            for (name, v) in names.iter().zip(row) {
                m.insert(name.clone(), to_json(v));
            }
            Json::Object(m)
        };
        for row in rows {
            match self.format {
                Format::Table => current.table.push(row.clone()),
                Format::Json => {
                    let sep = if current.rows > 0 { "," } else { "" };
                    write!(out, "{sep}{}", object(&current.names, row))?;
                }
                Format::Ndjson => writeln!(out, "{}", object(&current.names, row))?,
                Format::Csv => writeln!(
                    out,
                    "{}",
                    row.iter().map(csv_field).collect::<Vec<_>>().join(",")
                )?,
                Format::Tsv => writeln!(
                    out,
                    "{}",
                    row.iter().map(tsv_field).collect::<Vec<_>>().join("\t")
                )?,
            }
            current.rows += 1;
        }
        Ok(())
    }

    /// Ends a result: a table is drawn now; the row count (or, for a statement without rows,
    /// its tag) goes to `err`.
    pub fn finish(
        &mut self,
        result: &QueryResult,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> std::io::Result<()> {
        self.open(out)?;
        let Some(current) = self.current.take() else {
            if !self.quiet {
                let _ = writeln!(err, "{}", result.tag);
            }
            return Ok(());
        };
        match self.format {
            Format::Table => {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(current.names.clone());
                for row in &current.table {
                    table.add_row(row.iter().map(|v| v.to_string()).collect::<Vec<_>>());
                }
                writeln!(out, "{table}")?;
            }
            Format::Json => writeln!(out, "]")?,
            _ => {}
        }
        if !self.quiet {
            let n = current.rows;
            let _ = writeln!(err, "({n} row{})", if n == 1 { "" } else { "s" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::value::DataType;
    use crate::types::OutputColumn;

    fn result() -> QueryResult {
        QueryResult {
            columns: vec![
                OutputColumn {
                    name: "id".into(),
                    data_type: DataType::Int,
                },
                OutputColumn {
                    name: "name".into(),
                    data_type: DataType::Text,
                },
                OutputColumn {
                    name: "ok".into(),
                    data_type: DataType::Bool,
                },
            ],
            rows: vec![
                vec![
                    Value::Int(1),
                    Value::Text("a,\"b\"".into()),
                    Value::Bool(true),
                ],
                vec![Value::Int(2), Value::Null, Value::Null],
            ],
            tag: "SELECT 2".into(),
        }
    }

    fn render(format: Format, header: bool) -> String {
        let mut out = Vec::new();
        let mut err = Vec::new();
        Printer::new(format, false, header)
            .print(&result(), &mut out, &mut err)
            .unwrap();
        assert_eq!(String::from_utf8(err).unwrap(), "(2 rows)\n");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_keeps_types_and_column_order() {
        assert_eq!(
            render(Format::Json, true),
            "[{\"id\":1,\"name\":\"a,\\\"b\\\"\",\"ok\":true},{\"id\":2,\"name\":null,\"ok\":null}]\n"
        );
    }

    #[test]
    fn csv_quotes_and_drops_header_on_request() {
        assert_eq!(
            render(Format::Csv, true),
            "id,name,ok\n1,\"a,\"\"b\"\"\",t\n2,,\n"
        );
        assert_eq!(render(Format::Csv, false), "1,\"a,\"\"b\"\"\",t\n2,,\n");
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        assert_eq!(render(Format::Ndjson, true).lines().count(), 2);
    }
}
