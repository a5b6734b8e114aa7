//! Transactions: the lock manager, its waiting wrapper, local transactions, and two-phase commit
//! (the pure state machines and a node's part in them).

pub mod distributed;
pub mod lock;
pub mod lock_table;
pub mod transaction;
pub mod twopc;

pub use distributed::TwoPhase;
pub use transaction::{BatchLimit, Intent, Transaction, TxnManager};
