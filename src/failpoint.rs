//! Crash points for testing two-phase commit (DESIGN §12).
//!
//! A crash point is a named place in the code where a test can make the node die as `kill -9`
//! would: no clean-up, no flush, no answer. They are compiled in only with the `failpoints`
//! feature, which the test build turns on (`cargo test --features failpoints`); a release build
//! has none. A node started with `FAILPOINTS=name=1*return` crashes the first time it reaches
//! `name` (the syntax is the `fail` crate's).
//!
//! The points: `gateway-after-some-prepares`, `gateway-after-all-prepares`,
//! `gateway-after-anchor-commit`, `gateway-after-some-commits` (in the gateway's commit),
//! `participant-after-prepare` (after a participant's prepared entry is durable, before it
//! votes), `anchor-before-commit` (the anchor was asked to commit, before its commit entry is
//! written), `anchor-after-commit` (after the anchor's commit entry is durable, before it
//! answers), `participant-after-commit-received` (a prepared participant was told to commit,
//! before it applies the commit) and `recovery-before-apply` (recovery learned an in-doubt
//! transaction's outcome from its anchor, before applying it). `store-before-publish` (a new
//! node's empty store is built, before it is renamed into place). `promote-before-take-over` (a replica
//! the map made primary stopped its replica driver, before it takes its log over). `server-before-listen` (a node
//! starting, before it binds its ports) is used with the `fail` crate's `sleep(MS)` action
//! instead, which delays the node there and goes on, so a test can have a node that is
//! deterministically slow to answer. `executor-after-write` (an `INSERT` wrote a row and holds
//! its lock) is used with the `panic` action, to test that a panicking statement fails alone.

/// Kills the process when the named crash point is switched on; otherwise does nothing.
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        tracing::error!("failpoint {name}: crashing");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
