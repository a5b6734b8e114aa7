//! The one version string ddb reports, everywhere it reports one.

/// The version string `SELECT version()` returns. Drivers parse the leading
/// `PostgreSQL <version>` to decide which features they may use, so ddb reports the PostgreSQL
/// protocol level it speaks first.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 15.0 (ddb {}) on {}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}
