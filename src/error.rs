//! The one error type of ddb, classified by what the caller should do next.
//!
//! Every layer returns [`Error`]. Its variant says how the caller reacts: report bad input, retry
//! the transaction, refuse, give up on an unreachable peer, or report corruption. It is
//! serializable so it crosses the internal RPC unchanged, and it is mapped to a PostgreSQL
//! SQLSTATE ([`Error::sqlstate`]) and to a CLI exit code ([`Error::exit_code`]) in exactly one
//! place each. `anyhow` is used only at the CLI edge.

use serde::{Deserialize, Serialize};

/// SQLSTATE codes that ddb produces. Names follow PostgreSQL's `errcodes.txt`.
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_COLUMN: &str = "42701";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const GROUPING_ERROR: &str = "42803";
    pub const INVALID_TABLE_DEFINITION: &str = "42P16";
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    pub const INDETERMINATE_DATATYPE: &str = "42P18";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const INVALID_BINARY_REPRESENTATION: &str = "22P03";
    pub const GENERATED_ALWAYS: &str = "428C9";
    pub const SEQUENCE_GENERATOR_LIMIT_EXCEEDED: &str = "2200H";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_ROW_COUNT: &str = "2201W";
    pub const INVALID_OFFSET: &str = "2201X";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "40003";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const QUERY_CANCELED: &str = "57014";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const DATA_CORRUPTED: &str = "XX001";
    pub const INTERNAL_ERROR: &str = "XX000";
    /// A read or write of the node's disk failed (PostgreSQL's `io_error`).
    pub const IO_ERROR: &str = "58030";
    /// The disk holding the data is full.
    pub const DISK_FULL: &str = "53100";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    pub const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const DUPLICATE_CURSOR: &str = "42P03";
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
}

/// The SQLSTATEs of failures after which nothing of the transaction happened and running it
/// again may succeed: a serialization failure, a deadlock, too few in-sync copies for a write.
const RETRYABLE: [&str; 4] = [
    sqlstate::SERIALIZATION_FAILURE,
    sqlstate::DEADLOCK_DETECTED,
    sqlstate::INSUFFICIENT_RESOURCES,
    sqlstate::CANNOT_CONNECT_NOW,
];

/// A ddb error. The variant is the caller's next move; the text says what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// A SQL statement is wrong for the data or the schema: the client must change it (syntax,
    /// unknown names, types, constraints). The SQLSTATE says what is wrong. Exit code 6.
    #[error("{message}")]
    Sql { code: String, message: String },
    /// The transaction was rolled back and none of it happened; running it again may succeed
    /// (a serialization failure, a deadlock, too few in-sync copies). Exit code 6.
    #[error("{message}")]
    Retry { code: String, message: String },
    /// The transaction may or may not have committed (SQLSTATE 40003): a participant or the
    /// anchor stopped answering after the decision was sent. Never retried blindly. Exit code 5.
    #[error("{0}")]
    UnknownOutcome(String),
    /// Bad input to a command: a flag, a file, an address. Exit code 2.
    #[error("{0}")]
    InvalidInput(String),
    /// A node or the cluster could not be reached. Exit code 3.
    #[error("{0}")]
    Unreachable(String),
    /// A safety check refused the operation. Exit code 4.
    #[error("{0}")]
    Refused(String),
    /// The operation timed out and its outcome is unknown. Exit code 5.
    #[error("{0}")]
    Timeout(String),
    /// Stored data or a frame from the network could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The node is shutting down and does not take new work.
    #[error("{0}")]
    ShuttingDown(String),
    /// An I/O error on this node (disk, socket): SQLSTATE 58030, as PostgreSQL's `io_error`.
    #[error("I/O error: {0}")]
    Io(String),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
    /// The disk of this node is full (SQLSTATE 53100, as PostgreSQL's `disk_full`): the write
    /// that found it so failed, and the node stops taking writes as after any failed write.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// A statement broke a constraint (23xxx): an [`Error::Sql`] with the fields PostgreSQL's
    /// error response names the constraint by (asyncpg's `constraint_name`, `table_name`).
    /// Exit code 6.
    #[error("{}", .0.message)]
    Constraint(Box<Violation>),
}

/// What a constraint violation names, as PostgreSQL's `ErrorResponse` fields do: the detail
/// line (`Key (id)=(1) already exists.`), the schema, table, column and constraint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub column: Option<String>,
    pub constraint: Option<String>,
}

/// The result type used throughout ddb.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A SQL error with the given SQLSTATE, classified by it: a retryable code gives
    /// [`Error::Retry`], 40003 gives [`Error::UnknownOutcome`], anything else [`Error::Sql`].
    pub fn sql(code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        if RETRYABLE.contains(&code) {
            return Error::Retry {
                code: code.to_string(),
                message,
            };
        }
        if code == sqlstate::TRANSACTION_RESOLUTION_UNKNOWN {
            return Error::UnknownOutcome(message);
        }
        Error::Sql {
            code: code.to_string(),
            message,
        }
    }

    /// The node cannot serve this yet (SQLSTATE 57P03, PostgreSQL's `cannot_connect_now`): it
    /// is starting, or recovering its log. Nothing was done; retry shortly.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Error::sql(sqlstate::CANNOT_CONNECT_NOW, message)
    }

    /// A serialization failure (SQLSTATE 40001): the transaction was rolled back and may be retried.
    pub fn serialization(message: impl Into<String>) -> Self {
        Error::sql(sqlstate::SERIALIZATION_FAILURE, message)
    }

    /// An unknown outcome (SQLSTATE 40003): the transaction may have committed.
    pub fn unknown_outcome(message: impl Into<String>) -> Self {
        Error::UnknownOutcome(message.into())
    }

    /// A construct that ddb does not support (SQLSTATE 0A000); `what` names it.
    pub fn unsupported(what: impl std::fmt::Display) -> Self {
        Error::sql(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{what} is not supported"),
        )
    }

    /// The error of a feature ddb has not built yet (0A000), in words that say so.
    pub fn not_built_yet(what: impl std::fmt::Display) -> Self {
        Error::sql(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{what} are not supported yet"),
        )
    }

    /// The error of a statement whose execution panicked (XX000), from the panic's payload. The
    /// session catches the panic, so the statement fails and the connection and node go on.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Error::Internal(format!("the statement failed on a bug: {what}"))
    }

    /// The PostgreSQL SQLSTATE for this error. The one place where errors become SQLSTATEs.
    pub fn sqlstate(&self) -> &str {
        match self {
            Error::Sql { code, .. } | Error::Retry { code, .. } => code,
            Error::Constraint(v) => &v.code,
            Error::UnknownOutcome(_) => sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
            Error::InvalidInput(_) => sqlstate::INVALID_PARAMETER_VALUE,
            Error::Unreachable(_) => sqlstate::CONNECTION_FAILURE,
            Error::Refused(_) => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            Error::Timeout(_) => sqlstate::QUERY_CANCELED,
            Error::Corrupt(_) => sqlstate::DATA_CORRUPTED,
            Error::ShuttingDown(_) => sqlstate::ADMIN_SHUTDOWN,
            Error::Io(_) => sqlstate::IO_ERROR,
            Error::Internal(_) => sqlstate::INTERNAL_ERROR,
            Error::DiskFull(_) => sqlstate::DISK_FULL,
        }
    }

    /// The CLI exit code for this error (DESIGN §10.1). The one place where errors become exit codes.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Sql { .. } | Error::Retry { .. } | Error::Constraint(_) => 6,
            Error::UnknownOutcome(_) => 5,
            Error::InvalidInput(_) => 2,
            Error::Unreachable(_) | Error::ShuttingDown(_) => 3,
            Error::Refused(_) => 4,
            Error::Timeout(_) => 5,
            Error::Corrupt(_) | Error::Io(_) | Error::Internal(_) | Error::DiskFull(_) => 1,
        }
    }

    /// Whether a client may retry the whole transaction and expect it to succeed: nothing of
    /// it happened. False for an unknown outcome, which may have committed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Retry { .. })
    }

    /// Whether this is a serialization failure (40001), a node not ready yet (57P03, refused
    /// before anything was done), a replica's refusal ([`Error::replica_refusal`], 25006, at
    /// the log's gate) or a lock wait that timed out (55P03):
    /// the refusal of a participant or an anchor that wrote nothing, so the transaction is
    /// definitely rolled back there. Narrower than [`Error::is_retryable`] on purpose: a
    /// two-phase commit may treat only these answers from the anchor as a definite abort.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Retry { code, .. } => {
                code == sqlstate::SERIALIZATION_FAILURE
                    || code == sqlstate::CANNOT_CONNECT_NOW
                    || code == sqlstate::READ_ONLY_SQL_TRANSACTION
            }
            Error::Sql { code, .. } => code == sqlstate::LOCK_NOT_AVAILABLE,
            _ => false,
        }
    }

    /// Whether this is a node not ready to serve (57P03): refused before anything was done,
    /// because the node is starting or recovering, or its shard's primary is moving.
    pub fn is_not_ready(&self) -> bool {
        matches!(self, Error::Retry { code, .. } if code == sqlstate::CANNOT_CONNECT_NOW)
    }

    /// A replica's refusal of a write (25006, "writes go to its primary"), which reaches a
    /// gateway only when it routed by a map that named the node primary: the map is stale, or
    /// the node is being promoted. Nothing was done; routing it again may succeed.
    pub fn replica_refusal(message: impl Into<String>) -> Self {
        Error::Retry {
            code: sqlstate::READ_ONLY_SQL_TRANSACTION.to_string(),
            message: message.into(),
        }
    }

    /// Whether this is [`Error::replica_refusal`] (a user's `READ ONLY` transaction refusing a
    /// write is an `Error::Sql` with the same SQLSTATE, and is not retried).
    pub fn is_replica_refusal(&self) -> bool {
        matches!(self, Error::Retry { code, .. } if code == sqlstate::READ_ONLY_SQL_TRANSACTION)
    }

    /// Whether the outcome of the transaction is unknown: it may have committed.
    pub fn is_unknown_outcome(&self) -> bool {
        matches!(self, Error::UnknownOutcome(_))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::StorageFull => Error::DiskFull(err.to_string()),
            _ => Error::Io(err.to_string()),
        }
    }
}

impl From<fjall::Error> for Error {
    fn from(err: fjall::Error) -> Self {
        match err {
            // fjall's word for "an earlier write or flush failed": say what that means.
            fjall::Error::Poisoned => Error::Io(
                "storage engine: an earlier write to disk failed (a full or failing disk; the node's log has the cause), so the node takes no more writes; free space or fix the disk, then restart the node".into(),
            ),
            fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e))
                if e.kind() == std::io::ErrorKind::StorageFull =>
            {
                Error::DiskFull(format!("storage engine: {e}"))
            }
            err => Error::Io(format!("storage engine: {err}")),
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(err: postcard::Error) -> Self {
        Error::Corrupt(format!("cannot decode: {err}"))
    }
}

/// Returns early with a SQL error: `bail_sql!(sqlstate::X, "fmt", args)`.
#[macro_export]
macro_rules! bail_sql {
    ($code:expr, $($arg:tt)*) => {
        return Err($crate::error::Error::sql($code, format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_53100_from_the_os_and_from_the_engine() {
        let full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        for e in [Error::from(full()), Error::from(fjall::Error::Io(full()))] {
            assert_eq!(e.sqlstate(), "53100", "{e}");
            assert_eq!(e.exit_code(), 1);
        }
        let other = Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(other.sqlstate(), "58030");
        // The engine's "an earlier write failed" is an I/O error, not a bug.
        assert_eq!(Error::from(fjall::Error::Poisoned).sqlstate(), "58030");
    }

    #[test]
    fn retryable_failures_are_told_apart_from_bad_input_and_unknown_outcomes() {
        let retry = Error::serialization("wait-die");
        assert!(retry.is_retryable());
        assert_eq!(retry.sqlstate(), "40001");
        assert_eq!(retry.exit_code(), 6);
        for code in ["40001", "40P01", "53000", "57P03"] {
            assert!(Error::sql(code, "x").is_retryable(), "{code}");
        }
        let unknown = Error::sql(sqlstate::TRANSACTION_RESOLUTION_UNKNOWN, "lost the anchor");
        assert!(unknown.is_unknown_outcome());
        assert!(!unknown.is_retryable());
        assert_eq!(unknown.sqlstate(), "40003");
        assert_eq!(unknown.exit_code(), 5);
        let bad = Error::sql(sqlstate::UNIQUE_VIOLATION, "duplicate key");
        assert!(!bad.is_retryable() && !bad.is_unknown_outcome());
        assert_eq!(bad.exit_code(), 6);
        assert!(!Error::Unreachable("gone".into()).is_retryable());
    }

    #[test]
    fn a_replicas_refusal_is_retried_but_a_read_only_transactions_is_not() {
        let replica = Error::replica_refusal("node n2 is a replica of shard 1");
        assert_eq!(replica.sqlstate(), "25006");
        assert!(replica.is_replica_refusal() && replica.is_refusal() && replica.is_retryable());
        let read_only = Error::sql(sqlstate::READ_ONLY_SQL_TRANSACTION, "read-only transaction");
        assert_eq!(read_only.sqlstate(), "25006");
        assert!(!read_only.is_replica_refusal() && !read_only.is_refusal());
        assert!(!read_only.is_retryable());
    }
}
