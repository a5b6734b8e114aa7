//! Savepoints of a cluster transaction: every participant marks its writes, and a rollback to
//! the savepoint returns each of them to its mark.
//!
//! A participant's writes live in its own transaction on its shard, so a savepoint is a mark in
//! each of them ([`crate::txn::Transaction::savepoint`]), with one number: `SAVEPOINT` marks
//! every participant the transaction has (this node's own part in-process, the others with a
//! [`ShardOp::Savepoint`], all at once), and remembers which participants existed and how many
//! shards had been written. `ROLLBACK TO` sends every participant a [`ShardOp::RollbackTo`]:
//! one that existed at the savepoint returns to its mark, one opened after it drops all its
//! writes; none is released, so every lock stays (strict 2PL: see `txn::transaction`), and a
//! shard first written after the savepoint becomes a reader again, so a later `COMMIT` prepares
//! exactly the shards whose writes survived. `RELEASE` only forgets the savepoint here: the
//! marks stay on the shards until the transaction ends (they cost a few bytes, and a message
//! per participant would cost a round trip for nothing).
//!
//! A rollback to a savepoint is only sound if every participant is where the gateway believes
//! it is. That is not known after a lost connection (the shard rolled the part back when the
//! connection closed) or after a statement that was cut short (a timeout dropped it with
//! requests in flight, which may still land after the rollback). Then the transaction is
//! *broken*: `ROLLBACK TO` fails and the session rolls the whole transaction back. A shard also
//! refuses a savepoint message for a part it no longer has, rather than open an empty one.

use super::peers::call;
use super::txn::{ClusterTxn, Mark, Part};
use crate::cluster::ring::ShardId;
use crate::error::{sqlstate, Error, Result};
use crate::protocol::{ShardOp, ShardReply};

impl ClusterTxn {
    /// Records that a statement failed with `e`: an error that may have left a participant in
    /// an unknown state (a lost connection: anything but a statement's own SQL error, a
    /// constraint violation or a conflict) breaks the transaction for savepoints.
    pub(super) fn note_failure(&mut self, e: &Error) {
        if !matches!(
            e,
            Error::Sql { .. } | Error::Retry { .. } | Error::Constraint(_)
        ) && self.broken.is_none()
        {
            self.broken = Some(e.to_string());
        }
    }

    /// Refuses to work with savepoints once the participants are not known to be where the
    /// gateway believes (see the module notes).
    fn check_whole(&mut self) -> Result<()> {
        if self.in_statement {
            self.broken.get_or_insert_with(|| {
                "a statement was cut short while its requests were in flight".into()
            });
        }
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::sql(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                format!("the transaction cannot return to a savepoint ({why}); it is rolled back"),
            )),
        }
    }

    /// Takes savepoint `id` on every participant.
    pub(super) async fn savepoint(&mut self, id: u64) -> Result<()> {
        self.check_whole()?;
        let mut remote = Vec::new();
        for (&shard, part) in self.parts.iter_mut() {
            match part {
                Part::Local(t) => t.savepoint(id),
                Part::Remote { .. } => remote.push((shard, ShardOp::Savepoint { id })),
            }
        }
        self.send_all(remote).await?;
        self.savepoints.push(Mark {
            id,
            parts: self.parts.keys().copied().collect(),
            written: self.written.len(),
        });
        Ok(())
    }

    /// Returns every participant to savepoint `id` (see the module notes), keeping it.
    pub(super) async fn rollback_to(&mut self, id: u64) -> Result<()> {
        self.check_whole()?;
        let at = self.mark(id)?;
        let mut remote = Vec::new();
        for (&shard, part) in self.parts.iter_mut() {
            let savepoint = self.savepoints[at].parts.contains(&shard).then_some(id);
            match part {
                Part::Local(t) => t.rollback_to(savepoint)?,
                Part::Remote { .. } => remote.push((shard, ShardOp::RollbackTo { savepoint })),
            }
        }
        self.send_all(remote).await?;
        let written = self.savepoints[at].written;
        self.written.truncate(written);
        self.savepoints.truncate(at + 1);
        Ok(())
    }

    /// Forgets savepoint `id` and the ones after it (this node's own part drops its marks;
    /// the other shards keep theirs until the end).
    pub(super) fn release(&mut self, id: u64) -> Result<()> {
        let at = self.mark(id)?;
        if let Some(Part::Local(t)) = self.my_shard.and_then(|s| self.parts.get_mut(&s)) {
            if t.has_savepoint(id) {
                t.release(id)?;
            }
        }
        self.savepoints.truncate(at);
        Ok(())
    }

    fn mark(&self, id: u64) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|m| m.id == id)
            .ok_or_else(|| {
                Error::sql(
                    sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                    format!("savepoint {id} does not exist in transaction {}", self.id),
                )
            })
    }

    /// Sends one operation to each of several remote participants at once; every one must
    /// answer `Done`. Any failure breaks the transaction: some participants may have acted.
    async fn send_all(&mut self, ops: Vec<(ShardId, ShardOp)>) -> Result<()> {
        let mut calls = Vec::with_capacity(ops.len());
        for (shard, op) in ops {
            let Some(Part::Remote { node, addr, client }) = self.parts.get(&shard) else {
                return Err(Error::Internal("not a remote participant".into()));
            };
            let (req, node, addr, client) = (
                self.request(shard, op),
                node.clone(),
                addr.clone(),
                client.clone(),
            );
            calls.push(async move { (shard, node, addr, call(&client, req).await) });
        }
        let mut first_error = None;
        for (shard, node, addr, reply) in futures::future::join_all(calls).await {
            let reply = self.settle(shard, &node, &addr, reply).await;
            let failure = match reply {
                Ok(ShardReply::Done) => continue,
                Ok(other) => Error::Corrupt(format!("unexpected shard reply {other:?}")),
                Err(e) => e,
            };
            if self.broken.is_none() {
                self.broken = Some(failure.to_string());
            }
            first_error.get_or_insert(failure);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
