//! Result rows in the PostgreSQL wire format: the type OID of each ddb type, the field
//! descriptions of a result, and the encoding of rows into `DataRow` messages, in text or
//! binary per column as the client asked at `Bind`.
//!
//! Shared by the statement paths of the front end ([`super::pg`]) and by the portals that a
//! row-limited `Execute` leaves open ([`super::pg_portal`]), so a row is encoded the same way
//! whichever path carries it.

use std::sync::Arc;

use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use crate::error::Error;
use crate::types::value::{timestamp_to_naive, DataType, Value};
use crate::types::OutputColumn;

/// The pgwire type of a ddb type.
pub fn pg_type(ty: &DataType) -> Type {
    match ty {
        DataType::Bool => Type::BOOL,
        DataType::SmallInt => Type::INT2,
        DataType::Int => Type::INT4,
        DataType::BigInt => Type::INT8,
        DataType::Real => Type::FLOAT4,
        DataType::Double => Type::FLOAT8,
        DataType::Text | DataType::Unknown => Type::TEXT,
        DataType::Varchar(_) => Type::VARCHAR,
        DataType::Char(_) => Type::BPCHAR,
        DataType::Timestamp => Type::TIMESTAMP,
        DataType::Uuid => Type::UUID,
    }
}

/// `pg_type.typlen` of a ddb type: its fixed width in bytes, or -1 for a variable-width
/// (varlena) type, as PostgreSQL's `RowDescription` carries it.
pub fn type_size(ty: &DataType) -> i16 {
    match ty {
        DataType::Bool => 1,
        DataType::SmallInt => 2,
        DataType::Int | DataType::Real => 4,
        DataType::BigInt | DataType::Double | DataType::Timestamp => 8,
        DataType::Uuid => 16,
        DataType::Text | DataType::Unknown | DataType::Varchar(_) | DataType::Char(_) => -1,
    }
}

/// `pg_attribute.atttypmod` of a ddb type: the declared length plus the 4-byte header for
/// `varchar(n)` and `char(n)`, as PostgreSQL stores it; -1 (none) for every other type.
pub fn type_modifier(ty: &DataType) -> i32 {
    match ty {
        DataType::Varchar(Some(n)) | DataType::Char(n) => {
            i32::try_from(*n).map_or(-1, |n| n.saturating_add(4))
        }
        _ => -1,
    }
}

/// The field descriptions of a result's columns, in the formats the client asked for.
pub fn fields(columns: &[OutputColumn], format: Option<&Format>) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format.map(|f| f.format_for(i)).unwrap_or(FieldFormat::Text);
            FieldInfo::new(c.name.clone(), None, None, pg_type(&c.data_type), f)
                .with_type_size(type_size(&c.data_type))
                .with_type_modifier(type_modifier(&c.data_type))
        })
        .collect()
}

fn encode_value(
    enc: &mut DataRowEncoder,
    v: &Value,
    ty: &Type,
    format: FieldFormat,
) -> PgWireResult<()> {
    let opts = Default::default();
    let put_text = |enc: &mut DataRowEncoder, s: String| {
        enc.encode_field_with_type_and_format(&s, ty, format, &opts)
    };
    match (v, ty) {
        (Value::Null, _) => enc.encode_field_with_type_and_format(&None::<i32>, ty, format, &opts),
        (Value::Bool(b), &Type::BOOL) => {
            enc.encode_field_with_type_and_format(b, ty, format, &opts)
        }
        (Value::Int(i), &Type::INT2) => {
            enc.encode_field_with_type_and_format(&(*i as i16), ty, format, &opts)
        }
        (Value::Int(i), &Type::INT4) => {
            enc.encode_field_with_type_and_format(&(*i as i32), ty, format, &opts)
        }
        (Value::Int(i), &Type::INT8) => enc.encode_field_with_type_and_format(i, ty, format, &opts),
        (Value::Int(i), &Type::FLOAT8) => {
            enc.encode_field_with_type_and_format(&(*i as f64), ty, format, &opts)
        }
        (Value::Int(i), &Type::FLOAT4) => {
            enc.encode_field_with_type_and_format(&(*i as f32), ty, format, &opts)
        }
        (Value::Float(f), &Type::FLOAT8) if format == FieldFormat::Binary => {
            enc.encode_field_with_type_and_format(f, ty, format, &opts)
        }
        (Value::Float(f), &Type::FLOAT4) if format == FieldFormat::Binary => {
            enc.encode_field_with_type_and_format(&(*f as f32), ty, format, &opts)
        }
        (Value::Float(f), &Type::FLOAT4) => {
            put_text(enc, crate::types::value::format_real(*f as f32))
        }
        (Value::Timestamp(t), &Type::TIMESTAMP) if format == FieldFormat::Binary => {
            match timestamp_to_naive(*t) {
                Some(dt) => enc.encode_field_with_type_and_format(&dt, ty, format, &opts),
                None => put_text(enc, v.to_string()),
            }
        }
        // Binary: the 16 bytes, as PostgreSQL sends them.
        (Value::Uuid(u), &Type::UUID) if format == FieldFormat::Binary => {
            enc.encode_field_with_type_and_format(&u.to_vec(), &Type::BYTEA, format, &opts)
        }
        // Text format: PostgreSQL's own text output of the value.
        (v, _) => put_text(enc, v.to_string()),
    }
}

/// Encodes the rows of one result: its columns' types and formats, fixed at the start.
pub struct RowEncoder {
    encoder: DataRowEncoder,
    types: Vec<Type>,
    formats: Vec<FieldFormat>,
}

impl RowEncoder {
    /// An encoder for rows of `columns`, in the formats of `format` (text when none).
    pub fn new(columns: &[OutputColumn], format: Option<&Format>) -> (Self, Arc<Vec<FieldInfo>>) {
        let schema = Arc::new(fields(columns, format));
        let types = schema.iter().map(|f| f.datatype().clone()).collect();
        let formats = schema.iter().map(|f| f.format()).collect();
        let encoder = DataRowEncoder::new(schema.clone());
        (
            Self {
                encoder,
                types,
                formats,
            },
            schema,
        )
    }

    /// Encodes rows. A row may come from another node (a shipped statement), so its width is
    /// checked: a row of the wrong width is corrupt data, not something to guess at.
    pub fn encode(&mut self, rows: &[Vec<Value>]) -> Result<Vec<DataRow>, Error> {
        let mut encoded = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != self.types.len() {
                return Err(Error::Corrupt(format!(
                    "a result row has {} values for {} columns",
                    row.len(),
                    self.types.len()
                )));
            }
            for ((v, ty), format) in row.iter().zip(&self.types).zip(&self.formats) {
                encode_value(&mut self.encoder, v, ty, *format)
                    .map_err(|e| Error::Internal(format!("encode a result row: {e}")))?;
            }
            encoded.push(self.encoder.take_row());
        }
        Ok(encoded)
    }
}
