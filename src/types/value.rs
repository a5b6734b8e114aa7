//! SQL data types and values.
//!
//! A [`DataType`] is what a column or an expression is declared or inferred to be; a [`Value`] is
//! what a row holds at run time. Integers of every width are held as `i64` and floats of every
//! width as `f64`, so values of different widths compare, hash and encode alike (a key `7` stored
//! from an `INT` column and one from a `BIGINT` column land on the same shard); the declared type
//! is enforced when a value is assigned to a column ([`Value::coerce_to`]) and when a result is
//! sent to a client.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::error::{sqlstate, Error, Result};

/// A SQL data type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    Bool,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    /// Unbounded text.
    Text,
    /// Text of at most `n` characters.
    Varchar(Option<u32>),
    /// Text of exactly `n` characters, blank-padded.
    Char(u32),
    /// A date and time without time zone, microsecond precision.
    Timestamp,
    /// The type of an untyped `NULL` or of a parameter whose type could not be inferred.
    Unknown,
    /// A 128-bit universally unique identifier. (Last: stored schemas encode types by position.)
    Uuid,
}

impl DataType {
    /// Whether the type is one of the integer types.
    pub fn is_integer(&self) -> bool {
        matches!(self, DataType::SmallInt | DataType::Int | DataType::BigInt)
    }

    /// Whether the type is numeric (integer or floating point).
    pub fn is_numeric(&self) -> bool {
        self.is_integer() || self.is_float()
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(&self) -> bool {
        matches!(self, DataType::Real | DataType::Double)
    }

    /// Whether the type is a text type.
    pub fn is_text(&self) -> bool {
        matches!(
            self,
            DataType::Text | DataType::Varchar(_) | DataType::Char(_)
        )
    }

    /// The rank of a numeric type in the promotion order smallint < int < bigint < real < double.
    fn numeric_rank(&self) -> u8 {
        match self {
            DataType::SmallInt => 1,
            DataType::Int => 2,
            DataType::BigInt => 3,
            DataType::Real => 4,
            DataType::Double => 5,
            _ => 0,
        }
    }

    /// The type of an arithmetic result over two numeric types: the wider of the two.
    pub fn promote(a: &DataType, b: &DataType) -> DataType {
        if a.numeric_rank() >= b.numeric_rank() {
            a.clone()
        } else {
            b.clone()
        }
    }

    /// Whether values of the two types can be compared with each other.
    pub fn comparable(a: &DataType, b: &DataType) -> bool {
        a == &DataType::Unknown
            || b == &DataType::Unknown
            || (a.is_numeric() && b.is_numeric())
            || (a.is_text() && b.is_text())
            || a == b
    }

    /// The PostgreSQL type OID, used in row descriptions so drivers decode values natively.
    pub fn pg_oid(&self) -> u32 {
        match self {
            DataType::Bool => 16,
            DataType::SmallInt => 21,
            DataType::Int => 23,
            DataType::BigInt => 20,
            DataType::Real => 700,
            DataType::Double => 701,
            DataType::Text | DataType::Unknown => 25,
            DataType::Varchar(_) => 1043,
            DataType::Char(_) => 1042,
            DataType::Timestamp => 1114,
            DataType::Uuid => 2950,
        }
    }

    /// The inclusive range of an integer type.
    fn integer_range(&self) -> (i64, i64) {
        match self {
            DataType::SmallInt => (i16::MIN as i64, i16::MAX as i64),
            DataType::Int => (i32::MIN as i64, i32::MAX as i64),
            _ => (i64::MIN, i64::MAX),
        }
    }

    /// Checks that an integer fits the type (SQLSTATE 22003 otherwise).
    pub fn check_integer(&self, v: i64) -> Result<i64> {
        let (lo, hi) = self.integer_range();
        if v < lo || v > hi {
            return Err(Error::sql(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("{self} out of range: {v}"),
            ));
        }
        Ok(v)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Bool => write!(f, "boolean"),
            DataType::SmallInt => write!(f, "smallint"),
            DataType::Int => write!(f, "integer"),
            DataType::BigInt => write!(f, "bigint"),
            DataType::Real => write!(f, "real"),
            DataType::Double => write!(f, "double precision"),
            DataType::Text => write!(f, "text"),
            DataType::Varchar(None) => write!(f, "character varying"),
            DataType::Varchar(Some(n)) => write!(f, "character varying({n})"),
            DataType::Char(n) => write!(f, "character({n})"),
            DataType::Timestamp => write!(f, "timestamp without time zone"),
            DataType::Uuid => write!(f, "uuid"),
            DataType::Unknown => write!(f, "unknown"),
        }
    }
}

/// A value held in a row or computed by an expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// Any floating-point type.
    Float(f64),
    /// Any text type.
    Text(String),
    /// Microseconds since 1970-01-01 00:00:00, without time zone.
    Timestamp(i64),
    /// A UUID, its 16 bytes in network order (which is also its sort order, as in PostgreSQL).
    Uuid([u8; 16]),
}

impl Value {
    /// Whether the value is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The natural type of the value (integers are `bigint`, floats `double precision`).
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Null => DataType::Unknown,
            Value::Bool(_) => DataType::Bool,
            Value::Int(_) => DataType::BigInt,
            Value::Float(_) => DataType::Double,
            Value::Text(_) => DataType::Text,
            Value::Timestamp(_) => DataType::Timestamp,
            Value::Uuid(_) => DataType::Uuid,
        }
    }

    /// SQL comparison: `None` when either side is NULL (the result is unknown) or the values are
    /// of incomparable kinds.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Float(b)) => Some((*a as f64).total_cmp(b)),
            (Value::Float(a), Value::Int(b)) => Some(a.total_cmp(&(*b as f64))),
            (Value::Float(a), Value::Float(b)) => Some(float_cmp(*a, *b)),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Uuid(a), Value::Uuid(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A total order for sorting: NULL sorts after every other value (PostgreSQL's default for
    /// ascending order); values of different kinds sort by kind.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            _ => self
                .sql_cmp(other)
                .unwrap_or_else(|| self.kind_rank().cmp(&other.kind_rank())),
        }
    }

    fn kind_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Text(_) => 3,
            Value::Timestamp(_) => 4,
            Value::Uuid(_) => 5,
        }
    }

    /// Converts the value for storage in a column of type `ty` (assignment cast), enforcing the
    /// type's range and length. `column` names the column in errors.
    pub fn coerce_to(self, ty: &DataType, column: &str) -> Result<Value> {
        let from = self.data_type();
        match (&self, ty) {
            (Value::Null, _) => Ok(Value::Null),
            (Value::Int(_), t) if t.is_numeric() => self.cast(ty),
            (Value::Float(_), t) if t.is_numeric() => self.cast(ty),
            // Too long, unless only trailing spaces are in excess (those are cut, as in PostgreSQL).
            (Value::Text(s), DataType::Varchar(Some(n)) | DataType::Char(n))
                if s.trim_end_matches(' ').chars().count() > *n as usize =>
            {
                let name = if matches!(ty, DataType::Char(_)) {
                    "character"
                } else {
                    "character varying"
                };
                Err(Error::sql(
                    sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                    format!("value too long for type {name}({n})"),
                ))
            }
            (Value::Text(_), t) if t.is_text() => self.cast(ty),
            // Any value is assignable to a text column, through its text form.
            (
                Value::Int(_)
                | Value::Float(_)
                | Value::Bool(_)
                | Value::Timestamp(_)
                | Value::Uuid(_),
                t,
            ) if t.is_text() => self.cast(&DataType::Text)?.coerce_to(ty, column),
            (Value::Bool(_), DataType::Bool)
            | (Value::Timestamp(_), DataType::Timestamp)
            | (Value::Uuid(_), DataType::Uuid) => Ok(self),
            _ => Err(Error::sql(
                sqlstate::DATATYPE_MISMATCH,
                format!("column \"{column}\" is of type {ty} but expression is of type {from}"),
            )),
        }
    }

    /// An explicit cast (`CAST(v AS ty)`, `v::ty`), as PostgreSQL defines it for these types.
    pub fn cast(self, ty: &DataType) -> Result<Value> {
        let invalid = |what: &str, s: &str| {
            Error::sql(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type {what}: \"{s}\""),
            )
        };
        Ok(match (self, ty) {
            (Value::Null, _) => Value::Null,
            (v, DataType::Unknown) => v,
            // To integers.
            (Value::Int(i), t) if t.is_integer() => Value::Int(t.check_integer(i)?),
            // A float rounds half to even, as PostgreSQL's float8 → integer casts do (rint);
            // a decimal literal is rounded by the planner as a numeric would be
            // ([`decimal_to_integer`]).
            (Value::Float(f), t) if t.is_integer() => float_to_integer(f.round_ties_even(), t)?,
            (Value::Text(s), t) if t.is_integer() => {
                let i: i64 = s.trim().parse().map_err(|_| {
                    if s.trim()
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
                        && !s.trim().is_empty()
                    {
                        Error::sql(
                            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                            format!("value \"{s}\" is out of range for type {t}"),
                        )
                    } else {
                        invalid(&t.to_string(), &s)
                    }
                })?;
                Value::Int(t.check_integer(i)?)
            }
            (Value::Bool(b), t) if t.is_integer() => Value::Int(b as i64),
            // To floats.
            (Value::Int(i), t) if t.is_float() => Value::Float(round_real(i as f64, t)?),
            (Value::Float(f), t) if t.is_float() => Value::Float(round_real(f, t)?),
            (Value::Text(s), t) if t.is_float() => {
                let f = parse_float(s.trim()).ok_or_else(|| invalid(&t.to_string(), &s))?;
                let out_of_range = || {
                    Error::sql(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("\"{s}\" is out of range for type {t}"),
                    )
                };
                // A finite number too large for a double (`'1e309'`) parses as infinity.
                if f.is_infinite() && !s.to_ascii_lowercase().contains("inf") {
                    return Err(out_of_range());
                }
                Value::Float(round_real(f, t).map_err(|_| out_of_range())?)
            }
            // To booleans.
            (Value::Bool(b), DataType::Bool) => Value::Bool(b),
            (Value::Int(i), DataType::Bool) => Value::Bool(i != 0),
            (Value::Text(s), DataType::Bool) => {
                Value::Bool(parse_bool(&s).ok_or_else(|| invalid("boolean", &s))?)
            }
            // To timestamps.
            (Value::Timestamp(t), DataType::Timestamp) => Value::Timestamp(t),
            (Value::Text(s), DataType::Timestamp) => Value::Timestamp(parse_timestamp(&s)?),
            // To UUIDs.
            (Value::Uuid(u), DataType::Uuid) => Value::Uuid(u),
            (Value::Text(s), DataType::Uuid) => {
                Value::Uuid(parse_uuid(&s).ok_or_else(|| invalid("uuid", &s))?)
            }
            // To text.
            (v, DataType::Varchar(Some(n))) => {
                Value::Text(v.to_string().chars().take(*n as usize).collect())
            }
            (v, DataType::Char(n)) => {
                let s: String = v.to_string().chars().take(*n as usize).collect();
                let pad = (*n as usize).saturating_sub(s.chars().count());
                Value::Text(format!("{s}{}", " ".repeat(pad)))
            }
            (Value::Bool(b), t) if t.is_text() => {
                Value::Text(if b { "true" } else { "false" }.into())
            }
            (v, t) if t.is_text() => Value::Text(v.to_string()),
            (v, t) => {
                return Err(Error::sql(
                    sqlstate::DATATYPE_MISMATCH,
                    format!("cannot cast type {} to {t}", v.data_type()),
                ))
            }
        })
    }
}

/// Orders floats as PostgreSQL does: NaN is greater than every other value and equal to itself.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Rounds to single precision for `real` so stored values are what the client will read back;
/// a finite value a `real` cannot hold is out of range (22003), as in PostgreSQL.
fn round_real(f: f64, ty: &DataType) -> Result<f64> {
    if *ty != DataType::Real {
        return Ok(f);
    }
    let r = f as f32;
    let what = match (
        f.is_finite() && r.is_infinite(),
        f != 0.0 && f.is_finite() && r == 0.0,
    ) {
        (true, _) => "overflow",
        (_, true) => "underflow",
        _ => return Ok(r as f64),
    };
    Err(Error::sql(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        format!("value out of range: {what}"),
    ))
}

fn parse_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "inf" | "+infinity" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A rounded float as an integer of type `t`, or 22003 when it does not fit.
fn float_to_integer(r: f64, t: &DataType) -> Result<Value> {
    // i64::MAX as f64 rounds up to 2^63, which does not fit: the range is [-2^63, 2^63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if !(-TWO_63..TWO_63).contains(&r) {
        return Err(Error::sql(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{t} out of range"),
        ));
    }
    Ok(Value::Int(t.check_integer(r as i64)?))
}

/// A decimal literal (`2.5`, a `numeric` in PostgreSQL) as an integer of type `t`: rounded half
/// away from zero, as PostgreSQL rounds a numeric, where a float rounds half to even. ddb has no
/// `numeric` type yet and holds decimal literals as floats, so the planner calls this where a
/// literal itself is cast or assigned to an integer.
pub fn decimal_to_integer(f: f64, t: &DataType) -> Result<Value> {
    float_to_integer(f.round(), t)
}

/// Parses a timestamp literal: `YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]`, with `T` allowed as separator.
pub fn parse_timestamp(s: &str) -> Result<i64> {
    let t = s.trim();
    let formats = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ];
    for format in formats {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    // Well-formed but impossible (2024-02-30, 25:00): out of range rather than bad syntax.
    let shaped = t.len() >= 10
        && t.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if shaped {
        return Err(Error::sql(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{s}\""),
        ));
    }
    Err(Error::sql(
        sqlstate::INVALID_DATETIME_FORMAT,
        format!("invalid input syntax for type timestamp: \"{s}\""),
    ))
}

/// Converts microseconds since the epoch to a chrono timestamp.
pub fn timestamp_to_naive(micros: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(micros).map(|dt| dt.naive_utc())
}

/// Formats a `real` as PostgreSQL's text output does (shortest form that round-trips as f32).
pub fn format_real(f: f32) -> String {
    if f.is_finite() && f != 0.0 && (f.abs() >= 1e15 || f.abs() < 1e-4) {
        format_float(f.to_string().parse::<f64>().unwrap_or(f as f64))
    } else if f.is_finite() {
        f.to_string()
    } else {
        format_float(f as f64)
    }
}

/// Formats a float as PostgreSQL's text output does (shortest round-trip form).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if f != 0.0 && (f.abs() >= 1e15 || f.abs() < 1e-4) {
        let s = format!("{f:e}");
        // Rust prints 1e20 as "1e20"; PostgreSQL prints "1e+20".
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// Parses a UUID as PostgreSQL's input accepts it: 32 hex digits, either case, optionally in
/// braces, with a hyphen allowed after any group of four digits.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    let s = match s.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => s,
    };
    let mut digits = Vec::with_capacity(32);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'-' {
            // Only after a group of four digits, never first, last or doubled.
            if digits.is_empty() || digits.len() % 4 != 0 || i + 1 == bytes.len() {
                return None;
            }
            if bytes.get(i + 1) == Some(&b'-') {
                return None;
            }
        } else {
            digits.push((b as char).to_digit(16)? as u8);
        }
        i += 1;
    }
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *o = (pair[0] << 4) | pair[1];
    }
    Some(out)
}

/// PostgreSQL's text output of a UUID: lower-case, hyphenated 8-4-4-4-12.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new random (version 4) UUID, from the operating system's random source.
pub fn random_uuid() -> Result<[u8; 16]> {
    let mut u = [0u8; 16];
    getrandom::fill(&mut u)
        .map_err(|e| Error::Io(format!("cannot read the system's random source: {e}")))?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

impl fmt::Display for Value {
    /// PostgreSQL's text output format for the value; NULL prints as `NULL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{}", if *b { "t" } else { "f" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", format_float(*x)),
            Value::Text(s) => write!(f, "{s}"),
            Value::Uuid(u) => write!(f, "{}", format_uuid(u)),
            Value::Timestamp(t) => match timestamp_to_naive(*t) {
                Some(dt) => {
                    let s = dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
                    let s = s.trim_end_matches('0').trim_end_matches('.');
                    write!(f, "{s}")
                }
                None => write!(f, "{t}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uuids_in_the_forms_postgresql_accepts() {
        let want = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        for s in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(parse_uuid(s), Some(want), "{s}");
        }
        assert_eq!(format_uuid(&want), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        for bad in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1é",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_uuids_are_version_4_and_differ() {
        let a = random_uuid().unwrap();
        let b = random_uuid().unwrap();
        assert_ne!(a, b);
        for u in [a, b] {
            assert_eq!(u[6] >> 4, 4);
            assert_eq!(u[8] >> 6, 0b10);
        }
    }

    #[test]
    fn casts_text_to_integer_with_range_checks() {
        assert_eq!(
            Value::Text(" 42 ".into()).cast(&DataType::Int),
            Ok(Value::Int(42))
        );
        let err = Value::Text("70000".into())
            .cast(&DataType::SmallInt)
            .unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::NUMERIC_VALUE_OUT_OF_RANGE);
        let err = Value::Text("abc".into()).cast(&DataType::Int).unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::INVALID_TEXT_REPRESENTATION);
    }

    #[test]
    fn timestamps_round_trip_through_text() {
        let v = Value::Text("2024-02-29 13:14:15.5".into())
            .cast(&DataType::Timestamp)
            .unwrap();
        assert_eq!(v.to_string(), "2024-02-29 13:14:15.5");
        let v = Value::Text("2024-01-01".into())
            .cast(&DataType::Timestamp)
            .unwrap();
        assert_eq!(v.to_string(), "2024-01-01 00:00:00");
    }

    #[test]
    fn varchar_assignment_refuses_long_values() {
        let err = Value::Text("abcdef".into())
            .coerce_to(&DataType::Varchar(Some(3)), "c")
            .unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::STRING_DATA_RIGHT_TRUNCATION);
        let ok = Value::Text("ab".into())
            .coerce_to(&DataType::Char(4), "c")
            .unwrap();
        assert_eq!(ok, Value::Text("ab  ".into()));
    }

    #[test]
    fn nulls_sort_last_and_compare_unknown() {
        assert_eq!(Value::Null.sql_cmp(&Value::Int(1)), None);
        assert_eq!(Value::Null.sort_cmp(&Value::Int(1)), Ordering::Greater);
        assert_eq!(
            Value::Int(2).sql_cmp(&Value::Float(2.5)),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(100.0), "100");
        assert_eq!(format_float(1e20), "1e+20");
        assert_eq!(format_float(f64::INFINITY), "Infinity");
    }
}
