//! Transactions: the lock manager, its waiting wrapper, and local transactions.

pub mod lock;
pub mod lock_table;
pub mod transaction;

pub use transaction::{Intent, Transaction, TxnManager};
