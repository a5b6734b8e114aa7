//! The one version ddb reports, everywhere it reports one.
//!
//! ddb is not PostgreSQL and never says it is. It speaks PostgreSQL's protocol (3.0) and
//! aims at the SQL of PostgreSQL 15, and drivers choose what they may send from the version
//! a server reports, so ddb reports that level where drivers read a number:
//!
//! * `server_version` (sent at startup with `ParameterStatus`, and `SHOW server_version`) is
//!   [`SERVER_VERSION`], a bare PostgreSQL-style number: pgjdbc, asyncpg, psycopg (through
//!   libpq) and node-postgres parse it as `major.minor`, and `server_version_num` is the
//!   same level as an integer ([`SERVER_VERSION_NUM`]);
//! * `version()` (and `pg_catalog.version()`) is [`version_string`], which names ddb and its
//!   own version first, and then the level it is *compatible with*. That last part is there
//!   because SQLAlchemy's PostgreSQL dialects (psycopg, psycopg2, asyncpg, pg8000) read the
//!   server version from `select pg_catalog.version()` with the pattern
//!   `.*(?:PostgreSQL|EnterpriseDB) (\d+)\.?(\d+)?(?:\.(\d+))?(?:\.\d+)?(?:devel|beta)?`
//!   (SQLAlchemy 2.0 and 2.1, `dialects/postgresql/base.py`, with `re.match`), and refuse to
//!   connect when it does not match; "compatible with PostgreSQL 15.0" matches it (checked with
//!   SQLAlchemy 2.1.9: `server_version_info` is `(15, 0)`) without claiming to be it.

/// The PostgreSQL level ddb reports as `server_version`.
pub const SERVER_VERSION: &str = "15.0";

/// [`SERVER_VERSION`] as PostgreSQL's `server_version_num` spells it.
pub const SERVER_VERSION_NUM: &str = "150000";

/// The string `SELECT version()` returns, e.g.
/// `ddb 0.1.0 on x86_64, compatible with PostgreSQL 15.0 (wire protocol 3.0)`.
pub fn version_string() -> String {
    format!(
        "ddb {} on {}, compatible with PostgreSQL {SERVER_VERSION} (wire protocol 3.0)",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}
