//! Session parameters: what `SET`, `SHOW` and `RESET` read and change.
//!
//! Drivers and tools set parameters at connect time (pgjdbc sends `extra_float_digits = 3`,
//! psql its `application_name`, pools `RESET ALL`) and read some back (`SHOW
//! standard_conforming_strings`, `SHOW transaction isolation level`). Each parameter here is
//! one ddb either **honours** (the three timeouts, `default_transaction_read_only`,
//! `search_path` for `current_schema()`, `application_name`) or whose every accepted value
//! **means what ddb already does** (`client_encoding` UTF8, `DateStyle` ISO output,
//! `standard_conforming_strings` on, `extra_float_digits` 1–3: ddb always prints the
//! shortest exact float, which is what PostgreSQL 12+ prints for every positive value). A
//! value ddb would have to ignore to accept is refused (22023 or 0A000), so a `SET` that
//! succeeds is never a silent no-op. Unknown names are 42704, as in PostgreSQL; dotted names
//! (`myapp.tenant`) are custom placeholders that hold any text, as PostgreSQL's are.
//!
//! The isolation parameters are special: ddb runs every transaction serializable (strict
//! two-phase locking is stronger than every level PostgreSQL offers), so any level is accepted
//! and `SHOW` reports the level the transaction really gets: `serializable`.
//!
//! **Transactions.** A `SET` inside a block lasts past `COMMIT` but is undone by `ROLLBACK`
//! (the values at `BEGIN` come back), and `SET LOCAL` lasts until the block ends either way,
//! as in PostgreSQL. Outside a block `SET LOCAL` has no effect (PostgreSQL warns; ddb has no
//! channel for warnings yet).
//!
//! **Reporting.** PostgreSQL tells the client the values of a fixed set of parameters
//! (`ParameterStatus`) at startup and whenever one changes; [`Settings::reported_changes`]
//! gives the changed ones since it was last asked, for the front end to send before
//! `ReadyForQuery`.
//!
//! **Lengths.** `application_name` is cut to its first 63 bytes (NAMEDATALEN − 1, at a
//! character boundary), as PostgreSQL cuts it. Any other value longer than
//! [`MAX_VALUE_BYTES`] is refused with 22023: a reported value travels in a `ParameterStatus`
//! message, which a client (libpq, pgwire) refuses past 30,000 bytes, and no parameter needs
//! more.
//!
//! This is a pure value: no I/O, no clock; the session owns one per connection.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::SetValue;

/// The longest value a parameter takes, in bytes (see the module notes).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// The longest `application_name`: PostgreSQL's NAMEDATALEN − 1.
const MAX_NAME_BYTES: usize = 63;

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// How a parameter's values are checked and spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Any text (`application_name`).
    Text,
    /// A schema list (`search_path`): kept as written, comma-separated.
    SearchPath,
    /// `UTF8` and its aliases (and `SQL_ASCII`, which passes bytes through unchanged).
    Encoding,
    /// ISO output with any field order.
    DateStyle,
    /// A time zone name.
    TimeZone,
    /// `extra_float_digits` 1..=3.
    FloatDigits,
    /// A boolean that ddb supports only when on.
    OnlyOn,
    /// A boolean.
    Bool,
    /// Milliseconds, 0 for none, with PostgreSQL's units.
    Duration,
    /// An isolation level: always in effect as `serializable`.
    Isolation,
    /// Read-only: reported and shown, never set.
    Fixed,
}

/// A known parameter.
struct Param {
    /// The canonical spelling (what `SHOW ALL` and `ParameterStatus` use).
    name: &'static str,
    kind: Kind,
    /// Whether PostgreSQL reports it with `ParameterStatus`.
    report: bool,
    description: &'static str,
}

const fn param(name: &'static str, kind: Kind, report: bool, description: &'static str) -> Param {
    Param {
        name,
        kind,
        report,
        description,
    }
}

/// The parameters ddb knows, sorted by lower-case name.
const PARAMS: &[Param] = &[
    param(
        "application_name",
        Kind::Text,
        true,
        "Sets the application name to be reported in statistics and logs.",
    ),
    param(
        "client_encoding",
        Kind::Encoding,
        true,
        "Sets the client's character set encoding (ddb: UTF8).",
    ),
    param(
        "DateStyle",
        Kind::DateStyle,
        true,
        "Sets the display format for date and time values (ddb: ISO).",
    ),
    param(
        "default_transaction_isolation",
        Kind::Isolation,
        false,
        "The isolation level of new transactions (ddb: always serializable).",
    ),
    param(
        "default_transaction_read_only",
        Kind::Bool,
        true,
        "Sets the default read-only status of new transactions.",
    ),
    param(
        "extra_float_digits",
        Kind::FloatDigits,
        false,
        "Sets the number of digits displayed for floating-point values (ddb: shortest exact).",
    ),
    param(
        "idle_in_transaction_session_timeout",
        Kind::Duration,
        false,
        "Closes a session idle in a transaction block for longer than this (0: never).",
    ),
    param(
        "in_hot_standby",
        Kind::Fixed,
        true,
        "Shows whether hot standby is currently active.",
    ),
    param(
        "integer_datetimes",
        Kind::Fixed,
        true,
        "Shows whether datetimes are integer based.",
    ),
    param(
        "IntervalStyle",
        Kind::Fixed,
        true,
        "Sets the display format for interval values.",
    ),
    param(
        "is_superuser",
        Kind::Fixed,
        true,
        "Shows whether the current user is a superuser.",
    ),
    param(
        "lock_timeout",
        Kind::Duration,
        false,
        "Sets the maximum allowed duration of any wait for a lock (0: the node's bound).",
    ),
    param(
        "max_identifier_length",
        Kind::Fixed,
        false,
        "Shows the maximum identifier length.",
    ),
    param(
        "search_path",
        Kind::SearchPath,
        false,
        "Sets the schema search order for names that are not schema-qualified.",
    ),
    param(
        "server_encoding",
        Kind::Fixed,
        true,
        "Shows the server (database) character set encoding.",
    ),
    param(
        "server_version",
        Kind::Fixed,
        true,
        "Shows the PostgreSQL level ddb is compatible with.",
    ),
    param(
        "server_version_num",
        Kind::Fixed,
        false,
        "Shows the PostgreSQL level ddb is compatible with, as an integer.",
    ),
    param(
        "session_authorization",
        Kind::Fixed,
        true,
        "Shows the session user name.",
    ),
    param(
        "standard_conforming_strings",
        Kind::OnlyOn,
        true,
        "Causes '...' strings to treat backslashes literally (ddb: on).",
    ),
    param(
        "statement_timeout",
        Kind::Duration,
        false,
        "Sets the maximum allowed duration of any statement (0: none).",
    ),
    param(
        "TimeZone",
        Kind::TimeZone,
        true,
        "Sets the time zone for displaying and interpreting time stamps.",
    ),
    param(
        "transaction_isolation",
        Kind::Isolation,
        false,
        "Shows the current transaction's isolation level (ddb: serializable).",
    ),
    param(
        "transaction_read_only",
        Kind::Bool,
        false,
        "Shows whether the current transaction is read-only.",
    ),
];

use crate::version::{SERVER_VERSION, SERVER_VERSION_NUM};

/// The column `SHOW name` returns: the parameter's canonical name (custom ones lower-case).
pub fn column_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("timezone") {
        return "TimeZone".into();
    }
    match find(name) {
        Some(p) => p.name.to_string(),
        None => name.to_lowercase(),
    }
}

fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

fn unknown(name: &str) -> Error {
    Error::sql(
        sqlstate::UNDEFINED_OBJECT,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

fn invalid(name: &str, value: &str, why: &str) -> Error {
    Error::sql(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\": {why}"),
    )
}

/// One connection's parameters.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What `RESET` returns to: built-in defaults, then the startup packet's values.
    defaults: BTreeMap<String, String>,
    /// Session values set with `SET` (canonical names, or lower-case custom names).
    session: BTreeMap<String, String>,
    /// `SET LOCAL` values of the open block.
    local: BTreeMap<String, String>,
    /// The session values when the open block began: `ROLLBACK` restores them.
    at_begin: Option<BTreeMap<String, String>>,
    /// The reported values the client was last told.
    reported: BTreeMap<&'static str, String>,
}

impl Settings {
    /// The parameters of a new connection of `user`.
    pub fn new(user: &str) -> Self {
        let mut defaults = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            defaults.insert(k.to_string(), v.to_string());
        };
        put("application_name", "");
        put("client_encoding", "UTF8");
        put("DateStyle", "ISO, MDY");
        put("default_transaction_isolation", "serializable");
        put("default_transaction_read_only", "off");
        put("extra_float_digits", "1");
        put("idle_in_transaction_session_timeout", "0");
        put("in_hot_standby", "off");
        put("integer_datetimes", "on");
        put("IntervalStyle", "postgres");
        put("is_superuser", "on");
        put("lock_timeout", "0");
        put("max_identifier_length", "63");
        put("search_path", "\"$user\", public");
        put("server_encoding", "UTF8");
        put("server_version", SERVER_VERSION);
        put("server_version_num", SERVER_VERSION_NUM);
        put("session_authorization", user);
        put("standard_conforming_strings", "on");
        put("statement_timeout", "0");
        put("TimeZone", "UTC");
        put("transaction_isolation", "serializable");
        put("transaction_read_only", "off");
        Self {
            defaults,
            session: BTreeMap::new(),
            local: BTreeMap::new(),
            at_begin: None,
            reported: BTreeMap::new(),
        }
    }

    /// Applies a parameter the client sent in its startup packet: it becomes the value `RESET`
    /// returns to, as in PostgreSQL.
    pub fn set_startup(&mut self, name: &str, value: &str) -> Result<()> {
        let (key, value) = self.check(name, &[SetValue::String(value.to_string())])?;
        self.defaults.insert(key, value);
        Ok(())
    }

    /// `SET [LOCAL] name = value` (`None`: `DEFAULT`). `in_block` says whether a transaction
    /// block is open (`SET LOCAL` outside one has no effect).
    pub fn set(
        &mut self,
        name: &str,
        value: Option<&[SetValue]>,
        local: bool,
        in_block: bool,
    ) -> Result<()> {
        let (key, value) = match value {
            Some(values) => self.check(name, values)?,
            None => {
                let key = self.key(name)?;
                self.settable(&key)?;
                let value = self.default_of(&key);
                (key, value)
            }
        };
        if local {
            if in_block {
                self.local.insert(key, value);
            }
        } else {
            self.local.remove(&key);
            self.session.insert(key, value);
        }
        Ok(())
    }

    /// `RESET name`.
    pub fn reset(&mut self, name: &str) -> Result<()> {
        self.set(name, None, false, false)
    }

    /// `RESET ALL`: every settable parameter back to its default.
    pub fn reset_all(&mut self) {
        self.session.clear();
        self.local.clear();
    }

    /// The value of `name` as `SHOW` prints it, with its canonical name.
    pub fn show(&self, name: &str) -> Result<(String, String)> {
        let key = self.key(name)?;
        match self.effective(&key) {
            Some(v) => Ok((key, v)),
            None => Err(unknown(name)),
        }
    }

    /// Every known parameter: name, value, description (`SHOW ALL`), custom ones included.
    pub fn show_all(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = PARAMS
            .iter()
            .map(|p| {
                let v = self.effective(p.name).unwrap_or_default();
                (p.name.to_string(), v, p.description.to_string())
            })
            .collect();
        let custom: std::collections::BTreeSet<&String> = self
            .session
            .keys()
            .chain(self.local.keys())
            .chain(self.defaults.keys())
            .filter(|k| find(k).is_none())
            .collect();
        for k in custom {
            let v = self.effective(k).unwrap_or_default();
            out.push((k.clone(), v, String::new()));
        }
        out.sort_by_key(|(n, _, _)| n.to_lowercase());
        out
    }

    /// A block begins: the session values are saved for a rollback.
    pub fn begin(&mut self) {
        self.at_begin = Some(self.session.clone());
    }

    /// The block ended: committed keeps its `SET`s, rolled back restores the values at
    /// `BEGIN`; `SET LOCAL`s end either way.
    pub fn end(&mut self, committed: bool) {
        if let Some(saved) = self.at_begin.take() {
            if !committed {
                self.session = saved;
            }
        }
        self.local.clear();
    }

    /// The reported parameters whose value the client has not been told yet (all of them at
    /// first), in PostgreSQL's order; the client counts as told from now on.
    pub fn reported_changes(&mut self) -> Vec<(String, String)> {
        let mut changed = Vec::new();
        for p in PARAMS.iter().filter(|p| p.report) {
            let v = self.effective(p.name).unwrap_or_default();
            if self.reported.get(p.name) != Some(&v) {
                self.reported.insert(p.name, v.clone());
                changed.push((p.name.to_string(), v));
            }
        }
        changed
    }

    /// The effective value of a parameter by canonical (or custom) key.
    fn effective(&self, key: &str) -> Option<String> {
        self.local
            .get(key)
            .or_else(|| self.session.get(key))
            .or_else(|| self.defaults.get(key))
            .cloned()
    }

    fn default_of(&self, key: &str) -> String {
        self.defaults.get(key).cloned().unwrap_or_default()
    }

    /// The canonical key of a name: a known parameter's spelling, or a custom dotted name.
    fn key(&self, name: &str) -> Result<String> {
        if let Some(p) = find(name) {
            return Ok(p.name.to_string());
        }
        // PostgreSQL's spellings of parameters under other names.
        if name.eq_ignore_ascii_case("timezone") {
            return Ok("TimeZone".into());
        }
        let custom = name.contains('.')
            && name
                .split('.')
                .all(|part| !part.is_empty() && !part.starts_with(|c: char| c.is_ascii_digit()));
        if custom {
            return Ok(name.to_lowercase());
        }
        Err(unknown(name))
    }

    fn settable(&self, key: &str) -> Result<()> {
        match find(key) {
            Some(p) if p.kind == Kind::Fixed => Err(Error::sql(
                sqlstate::CANT_CHANGE_RUNTIME_PARAM,
                format!("parameter \"{}\" cannot be changed", p.name),
            )),
            _ => Ok(()),
        }
    }

    /// Checks a value for `name`: its canonical key and its canonical spelling (what `SHOW`
    /// would print).
    pub fn check(&self, name: &str, values: &[SetValue]) -> Result<(String, String)> {
        let key = self.key(name)?;
        self.settable(&key)?;
        let kind = find(&key).map(|p| p.kind).unwrap_or(Kind::Text);
        let words: Vec<String> = values.iter().map(value_text).collect();
        if kind != Kind::SearchPath && kind != Kind::DateStyle && words.len() != 1 {
            return Err(invalid(&key, &words.join(", "), "it takes one value"));
        }
        let one = words.first().cloned().unwrap_or_default();
        if key == "application_name" {
            return Ok((key, clip(one, MAX_NAME_BYTES)));
        }
        let written: usize = words.iter().map(String::len).sum();
        if written > MAX_VALUE_BYTES {
            return Err(Error::sql(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "the value of parameter \"{key}\" is too long ({written} bytes; ddb takes at most {MAX_VALUE_BYTES})"
                ),
            ));
        }
        let value = match kind {
            Kind::Text | Kind::Fixed => one,
            Kind::SearchPath => values
                .iter()
                .flat_map(|v| match v {
                    // A quoted list (`SET search_path = 'a, b'`) is one value; split it.
                    SetValue::String(s) => s
                        .split(',')
                        .map(|p| p.trim().to_string())
                        .collect::<Vec<_>>(),
                    SetValue::Word { text, quoted: true } => vec![format!("\"{text}\"")],
                    other => vec![value_text(other).to_lowercase()],
                })
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
            Kind::Encoding => encoding(&key, &one)?,
            Kind::DateStyle => date_style(&key, &words)?,
            Kind::TimeZone => time_zone(&key, &one)?,
            Kind::FloatDigits => float_digits(&key, &one)?,
            Kind::OnlyOn => match boolean(&one) {
                Some(true) => "on".into(),
                Some(false) => {
                    return Err(Error::unsupported(format!(
                        "{key} = off (ddb reads backslashes in '...' literally, as on)"
                    )))
                }
                None => return Err(invalid(&key, &one, "a Boolean value is expected")),
            },
            Kind::Bool => match boolean(&one) {
                Some(b) => on_off(b).into(),
                None => return Err(invalid(&key, &one, "a Boolean value is expected")),
            },
            Kind::Duration => format_ms(parse_ms(&key, values)?),
            Kind::Isolation => isolation(&key, &one)?,
        };
        Ok((key, value))
    }

    /// `statement_timeout`, if one is set.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.duration("statement_timeout")
    }

    /// `lock_timeout`, if one is set (else the node's bound applies).
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.duration("lock_timeout")
    }

    /// `idle_in_transaction_session_timeout`, if one is set.
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        self.duration("idle_in_transaction_session_timeout")
    }

    /// Whether new transactions are read-only (`default_transaction_read_only`).
    pub fn default_read_only(&self) -> bool {
        self.effective("default_transaction_read_only").as_deref() == Some("on")
    }

    /// The first schema of `search_path` that exists (ddb has `public`, and `pg_catalog`,
    /// which every PostgreSQL database has), as `current_schema()` returns it.
    pub fn current_schema(&self) -> Option<String> {
        let path = self.effective("search_path").unwrap_or_default();
        path.split(',')
            .map(|s| s.trim())
            .map(|s| {
                s.strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or(s)
            })
            .find(|s| *s == "public" || *s == "pg_catalog")
            .map(str::to_string)
    }

    fn duration(&self, key: &str) -> Option<Duration> {
        let v = self.effective(key)?;
        let ms = parse_ms(key, &[SetValue::String(v)]).ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

fn value_text(v: &SetValue) -> String {
    match v {
        SetValue::String(s) | SetValue::Number(s) => s.clone(),
        SetValue::Word { text, .. } => text.clone(),
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// PostgreSQL's Boolean spellings (any unique prefix of on/off/true/false/yes/no, and 1/0).
fn boolean(s: &str) -> Option<bool> {
    let s = s.trim().to_lowercase();
    let prefix = |word: &str, min: usize| s.len() >= min && word.starts_with(s.as_str());
    if prefix("true", 1) || prefix("yes", 1) || s == "on" || s == "1" {
        Some(true)
    } else if prefix("false", 1) || prefix("no", 1) || prefix("off", 2) || s == "0" {
        Some(false)
    } else {
        None
    }
}

fn encoding(key: &str, v: &str) -> Result<String> {
    let norm: String = v
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_uppercase();
    match norm.as_str() {
        "UTF8" | "UNICODE" => Ok("UTF8".into()),
        "SQLASCII" => Ok("SQL_ASCII".into()),
        _ => Err(invalid(key, v, "ddb speaks only UTF8")),
    }
}

/// `DateStyle`: ddb prints ISO; the field order (used by PostgreSQL to read ambiguous dates)
/// is kept for `SHOW`.
fn date_style(key: &str, words: &[String]) -> Result<String> {
    let mut order = "MDY";
    for w in words.iter().flat_map(|w| w.split(',')) {
        match w.trim().to_uppercase().as_str() {
            "ISO" | "DEFAULT" | "" => {}
            "MDY" | "US" | "NONEURO" | "NONEUROPEAN" => order = "MDY",
            "DMY" | "EURO" | "EUROPEAN" => order = "DMY",
            "YMD" => order = "YMD",
            "SQL" | "POSTGRES" | "GERMAN" => {
                return Err(Error::unsupported(format!(
                    "{key} {} (ddb prints dates and times in ISO style only)",
                    w.trim()
                )))
            }
            _ => return Err(invalid(key, &words.join(", "), "unrecognized key word")),
        }
    }
    Ok(format!("ISO, {order}"))
}

/// A time zone name. ddb's timestamps carry no zone and `now()` is UTC, so the zone changes
/// no result; it is kept for `SHOW` and reported, which is what drivers that send one expect.
fn time_zone(key: &str, v: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-:.,<>".contains(c));
    if !ok {
        return Err(invalid(key, v, "not a time zone name"));
    }
    if v.eq_ignore_ascii_case("utc") {
        return Ok("UTC".into());
    }
    Ok(v.to_string())
}

fn float_digits(key: &str, v: &str) -> Result<String> {
    match v.trim().parse::<i32>() {
        Ok(n @ 1..=3) => Ok(n.to_string()),
        Ok(n @ -15..=0) => Err(Error::unsupported(format!(
            "{key} = {n} (ddb prints the shortest exact float, as for 1 to 3; rounded output is not built)"
        ))),
        _ => Err(invalid(key, v, "an integer from -15 to 3 is expected")),
    }
}

fn isolation(key: &str, v: &str) -> Result<String> {
    let v2 = v.trim().to_lowercase().replace('_', " ");
    match v2.as_str() {
        "serializable" | "repeatable read" | "read committed" | "read uncommitted" | "default" => {
            Ok("serializable".into())
        }
        _ => Err(invalid(key, v, "not an isolation level")),
    }
}

/// A duration in milliseconds: a bare number is milliseconds; a string may carry one of
/// PostgreSQL's units (`us`, `ms`, `s`, `min`, `h`, `d`).
fn parse_ms(key: &str, values: &[SetValue]) -> Result<u64> {
    let text = values.iter().map(value_text).collect::<Vec<_>>().join("");
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || {
        invalid(
            key,
            s,
            "a duration such as 500, '500ms', '5s' or '1min' is expected",
        )
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(bad()),
    };
    let ms = (n * factor).round();
    if !(0.0..=i32::MAX as f64).contains(&ms) {
        return Err(Error::sql(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{s} is outside the valid range for parameter \"{key}\" (0 .. 2147483647)"),
        ));
    }
    Ok(ms as u64)
}

/// A duration as PostgreSQL shows it: in the largest unit that divides it exactly.
fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Vec<SetValue> {
        vec![SetValue::String(v.into())]
    }

    fn settings() -> Settings {
        Settings::new("alice")
    }

    #[test]
    fn unknown_parameters_are_42704_and_dotted_ones_are_custom() {
        let mut st = settings();
        let e = st
            .set("no_such_thing", Some(&s("1")), false, false)
            .unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::UNDEFINED_OBJECT);
        assert_eq!(
            st.show("myapp.x").unwrap_err().sqlstate(),
            sqlstate::UNDEFINED_OBJECT
        );
        st.set("myapp.x", Some(&s("7")), false, false).unwrap();
        assert_eq!(st.show("MYAPP.X").unwrap().1, "7");
    }

    #[test]
    fn names_are_case_insensitive_and_shown_canonically() {
        let mut st = settings();
        st.set("datestyle", Some(&s("iso, dmy")), false, false)
            .unwrap();
        assert_eq!(
            st.show("DATESTYLE").unwrap(),
            ("DateStyle".into(), "ISO, DMY".into())
        );
    }

    #[test]
    fn durations_take_units_and_show_in_the_largest_exact_one() {
        let mut st = settings();
        for (input, shown) in [
            ("5s", "5s"),
            ("1500", "1500ms"),
            ("2min", "2min"),
            ("0", "0"),
        ] {
            st.set("statement_timeout", Some(&s(input)), false, false)
                .unwrap();
            assert_eq!(st.show("statement_timeout").unwrap().1, shown);
        }
        assert_eq!(st.statement_timeout(), None);
        st.set(
            "statement_timeout",
            Some(&[SetValue::Number("250".into())]),
            false,
            false,
        )
        .unwrap();
        assert_eq!(st.statement_timeout(), Some(Duration::from_millis(250)));
        let e = st
            .set("lock_timeout", Some(&s("soon")), false, false)
            .unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn rollback_undoes_set_and_local_ends_with_the_block() {
        let mut st = settings();
        st.begin();
        st.set("application_name", Some(&s("a")), false, true)
            .unwrap();
        st.set("search_path", Some(&s("pg_catalog")), true, true)
            .unwrap();
        assert_eq!(st.current_schema().as_deref(), Some("pg_catalog"));
        st.end(false);
        assert_eq!(st.show("application_name").unwrap().1, "");
        assert_eq!(st.current_schema().as_deref(), Some("public"));
        st.begin();
        st.set("application_name", Some(&s("b")), false, true)
            .unwrap();
        st.end(true);
        assert_eq!(st.show("application_name").unwrap().1, "b");
    }

    #[test]
    fn set_local_outside_a_block_changes_nothing() {
        let mut st = settings();
        st.set("application_name", Some(&s("x")), true, false)
            .unwrap();
        assert_eq!(st.show("application_name").unwrap().1, "");
    }

    #[test]
    fn values_ddb_would_ignore_are_refused() {
        let mut st = settings();
        for (name, value) in [
            ("client_encoding", "LATIN1"),
            ("extra_float_digits", "0"),
            ("standard_conforming_strings", "off"),
            ("DateStyle", "German"),
        ] {
            assert!(
                st.set(name, Some(&s(value)), false, false).is_err(),
                "{name} = {value}"
            );
        }
        st.set(
            "extra_float_digits",
            Some(&[SetValue::Number("3".into())]),
            false,
            false,
        )
        .unwrap();
        st.set("client_encoding", Some(&s("utf-8")), false, false)
            .unwrap();
        assert_eq!(st.show("client_encoding").unwrap().1, "UTF8");
    }

    #[test]
    fn fixed_parameters_cannot_be_set() {
        let mut st = settings();
        let e = st
            .set("server_version", Some(&s("9")), false, false)
            .unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::CANT_CHANGE_RUNTIME_PARAM);
    }

    #[test]
    fn every_isolation_level_is_accepted_and_serializable_is_shown() {
        let mut st = settings();
        st.set(
            "default_transaction_isolation",
            Some(&s("read committed")),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            st.show("default_transaction_isolation").unwrap().1,
            "serializable"
        );
    }

    #[test]
    fn application_name_is_cut_to_63_bytes_and_other_long_values_refused() {
        let mut st = Settings::new("u");
        st.set("application_name", Some(&s(&"é".repeat(40))), false, false)
            .unwrap();
        // 31 two-byte characters: the 32nd would pass 63 bytes.
        assert_eq!(st.show("application_name").unwrap().1, "é".repeat(31));
        st.set(
            "application_name",
            Some(&s(&"x".repeat(70_000))),
            false,
            false,
        )
        .unwrap();
        assert_eq!(st.show("application_name").unwrap().1.len(), 63);
        let long = "y".repeat(MAX_VALUE_BYTES + 1);
        let err = st
            .set("search_path", Some(&s(&long)), false, false)
            .unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        let err = st
            .set("myapp.tenant", Some(&s(&long)), false, false)
            .unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(st.set_startup("search_path", &long).is_err());
        let fits = "z".repeat(MAX_VALUE_BYTES);
        st.set("myapp.tenant", Some(&s(&fits)), false, false)
            .unwrap();
        assert_eq!(st.show("myapp.tenant").unwrap().1, fits);
    }

    #[test]
    fn reported_changes_are_told_once() {
        let mut st = settings();
        let first = st.reported_changes();
        assert!(first
            .iter()
            .any(|(k, v)| k == "server_version" && v == SERVER_VERSION));
        assert!(first
            .iter()
            .any(|(k, v)| k == "session_authorization" && v == "alice"));
        assert!(st.reported_changes().is_empty());
        st.set("application_name", Some(&s("app")), false, false)
            .unwrap();
        st.set("statement_timeout", Some(&s("1s")), false, false)
            .unwrap();
        assert_eq!(
            st.reported_changes(),
            vec![("application_name".into(), "app".into())]
        );
        st.reset_all();
        assert_eq!(
            st.reported_changes(),
            vec![("application_name".into(), "".into())]
        );
    }

    #[test]
    fn startup_values_are_what_reset_returns_to() {
        let mut st = settings();
        st.set_startup("application_name", "psql").unwrap();
        st.set("application_name", Some(&s("other")), false, false)
            .unwrap();
        st.reset("application_name").unwrap();
        assert_eq!(st.show("application_name").unwrap().1, "psql");
        assert!(st.set_startup("nonsense", "1").is_err());
    }
}
