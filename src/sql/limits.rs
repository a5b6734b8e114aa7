//! The storage engine's size limits, as SQL errors.
//!
//! fjall stores keys of 1 to 65,535 bytes and values of up to 4 GiB − 1, and panics on anything
//! else. A statement that would write such a key or value is refused here with SQLSTATE 54000
//! (`program_limit_exceeded`), naming the limit, before anything of it reaches the lock manager,
//! the engine or the committer:
//!
//! * a table's name is part of its catalog key (`table/NAME`), so `CREATE TABLE` refuses a
//!   name longer than [`MAX_TABLE_NAME`] bytes when it is planned;
//! * a row's key is `table id | token | encoded primary key` and its value the encoded row, and
//!   both are known only once the row's values are (parameters, defaults, `UPDATE` expressions),
//!   so [`row_key`] and [`row_value`] check them where `INSERT` and `UPDATE` build the row.
//!
//! The committer checks the same limits again for every request ([`crate::storage::log`]), so
//! a write that slips past these checks fails alone instead of stopping the node.

use crate::error::{sqlstate, Error, Result};
use crate::sql::rows::encode_row;
use crate::storage::keycode::RowKeys;
use crate::storage::{MAX_KEY, MAX_VALUE};
use crate::types::value::Value;
use crate::types::Table;

/// The bytes of a catalog key besides the table's name (`table/`).
const CATALOG_KEY_PREFIX: usize = "table/".len();

/// The longest table name, in bytes: its catalog key must fit the engine's key limit.
pub const MAX_TABLE_NAME: usize = MAX_KEY - CATALOG_KEY_PREFIX;

fn limit(message: String) -> Error {
    Error::sql(sqlstate::PROGRAM_LIMIT_EXCEEDED, message)
}

/// Refuses a table name that its catalog key cannot hold.
pub fn table_name(name: &str) -> Result<()> {
    if name.len() > MAX_TABLE_NAME {
        return Err(limit(format!(
            "a table name of {} bytes exceeds the maximum of {MAX_TABLE_NAME} bytes",
            name.len()
        )));
    }
    Ok(())
}

/// The storage key of `row` of `table`, or 54000 when its primary key is too long to store.
pub fn row_key(table: &Table, row: &[Value]) -> Result<Vec<u8>> {
    let key = table.row_key(row);
    if key.len() > MAX_KEY {
        return Err(limit(format!(
            "the primary key of a row of \"{}\" takes {} bytes, more than the storage engine's \
             maximum key of {MAX_KEY} bytes",
            table.name,
            key.len()
        )));
    }
    Ok(key)
}

/// The stored form of `row` of `table`, or 54000 when it is too large to store.
pub fn row_value(table: &Table, row: &[Value]) -> Result<Vec<u8>> {
    let value = encode_row(row)?;
    if value.len() > MAX_VALUE {
        return Err(limit(format!(
            "a row of \"{}\" takes {} bytes, more than the storage engine's maximum value of \
             {MAX_VALUE} bytes",
            table.name,
            value.len()
        )));
    }
    Ok(value)
}
