//! The gateway's commit: one phase on a single written shard, two-phase commit across several.
//!
//! [`Commit::run`] drives the pure [`Coordinator`] of [`crate::txn::twopc`]: it
//! carries out the actions the coordinator returns (prepares, the anchor's commit, commit and
//! abort messages, releasing read-only parts) and feeds it the answers, as they arrive, until it
//! finishes. Crash points (compiled only for tests) sit between the steps.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::peers::call;
use super::txn::{ClusterTxn, Part};
use crate::cluster::map::ClusterMap;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::failpoint::crash_point;
use crate::protocol::{ShardOp, ShardReply};
use crate::txn::twopc::{Action, AnchorReply, Coordinator, Finish, Vote};
use crate::txn::{Transaction, TwoPhase};

/// How long the client's answer waits for the other participants to have let go of the
/// transaction (applied the commit, or released a read-only part) once the outcome is known.
/// DESIGN §7: they commit and release their locks, then the client is answered, so that the
/// client's next transaction never loses wait-die to its own previous one's locks. The outcome
/// is decided before this wait, so past the bound (a slow or lost participant, which learns the
/// outcome from the anchor) the client is answered anyway.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// The state of one commit as the driver carries it out: the coordinator, the outcome once
/// known, and the time of the steps.
struct Run {
    coord: Coordinator,
    started: Instant,
    result: Option<Result<()>>,
    /// The participants being released or aborted, to wait for before the answer.
    settling: Vec<tokio::task::JoinHandle<()>>,
    /// Microseconds of the prepare and decide steps, counted if the transaction commits (the
    /// last step, telling the others, is counted by `finish_commit`).
    steps: [u64; 2],
}

/// The messages one pass over the coordinator's actions collects, to send together.
#[derive(Default)]
struct Round {
    prepares: Vec<ShardId>,
    commits: Vec<ShardId>,
}

/// The commit of one cluster transaction: the driver owns the transaction while it carries out
/// what the coordinator says.
pub(super) struct Commit {
    txn: Box<ClusterTxn>,
}

impl Commit {
    /// The commit of `txn`, to be run to its end.
    pub(super) fn new(txn: Box<ClusterTxn>) -> Self {
        Commit { txn }
    }

    /// Commits: one phase if one shard was written, two-phase commit otherwise (see
    /// [`crate::txn::twopc`]); this drives the [`Coordinator`] and carries out its actions.
    pub(super) async fn run(mut self) -> Result<()> {
        let mut read_only: Vec<ShardId> = self
            .txn
            .parts
            .keys()
            .copied()
            .filter(|s| !self.txn.written.contains(s))
            .collect();
        if self.txn.parts.len() > 1 && !read_only.is_empty() {
            // Across shards, what was read must still stand when the transaction commits:
            // a shard whose primary moved since (or is handing over) may have taken writes
            // the reads here missed. Checked before anything is prepared, so a refusal rolls
            // everything back.
            if let Err(e) = self.release_readers(&read_only).await {
                let released = self.txn.release_all();
                settle(released, None).await;
                return Err(e);
            }
            read_only.clear();
        }
        let (coord, mut queue) = Coordinator::start(&self.txn.written, &read_only);
        let mut run = Run {
            coord,
            started: Instant::now(),
            result: None,
            settling: Vec::new(),
            steps: [0; 2],
        };
        while !queue.is_empty() {
            let mut round = Round::default();
            for action in std::mem::take(&mut queue) {
                queue.extend(self.carry_out(action, &mut run, &mut round).await);
            }
            if !round.prepares.is_empty() {
                queue.extend(self.prepare(&round.prepares, &mut run).await);
            }
            if !round.commits.is_empty() {
                let applied = self.commit_others(&round.commits, run.coord);
                settle(std::mem::take(&mut run.settling), Some(applied)).await;
                return self.finished(run.result);
            }
        }
        settle(std::mem::take(&mut run.settling), None).await;
        self.finished(run.result)
    }

    /// Every part was committed, released or handed to recovery: nothing is left to roll back
    /// (an unknown outcome in particular must not be rolled back here).
    fn finished(&mut self, result: Option<Result<()>>) -> Result<()> {
        self.txn.finished = true;
        self.txn.parts.clear();
        result.unwrap_or_else(|| {
            Err(Error::Internal(
                "the commit ended without an outcome".into(),
            ))
        })
    }

    /// Carries out one action of the coordinator, or puts it in the round when it is a message
    /// sent to several participants at once. Returns the coordinator's next actions.
    async fn carry_out(&mut self, action: Action, run: &mut Run, round: &mut Round) -> Vec<Action> {
        match action {
            Action::CommitOnePhase(shard) => {
                let r = self.commit_one(shard).await;
                if r.is_ok() {
                    self.txn
                        .gw
                        .twopc
                        .stats
                        .single
                        .fetch_add(1, Ordering::Relaxed);
                }
                run.result = Some(r);
            }
            Action::Release(shard) | Action::Abort(shard) => {
                run.settling.extend(self.end_part(shard));
            }
            Action::Prepare(shard) => round.prepares.push(shard),
            Action::CommitAnchor(shard) => return self.decide(shard, run).await,
            Action::Commit(shard) => round.commits.push(shard),
            // Produced only by the commit acknowledgements, which `finish_commit` handles.
            Action::Forget(_) => {}
            Action::Finish(finish) => run.result = Some(self.outcome(finish, run.steps)),
        }
        Vec::new()
    }

    /// The commit point: asks the anchor to commit with the record, and tells the coordinator.
    async fn decide(&mut self, anchor: ShardId, run: &mut Run) -> Vec<Action> {
        crash_point("gateway-after-all-prepares");
        let t = Instant::now();
        let reply = self
            .commit_anchor(anchor, run.coord.participants(), run.started)
            .await;
        run.steps[1] += micros(t);
        if reply == AnchorReply::Committed {
            crash_point("gateway-after-anchor-commit");
        }
        run.coord.on_anchor(reply)
    }

    /// What the client is told, and the counters of a committed two-phase commit.
    fn outcome(&self, finish: Finish, steps: [u64; 2]) -> Result<()> {
        match finish {
            Finish::Committed => {
                if !self.txn.written.is_empty() {
                    let stats = &self.txn.gw.twopc.stats;
                    stats.distributed.fetch_add(1, Ordering::Relaxed);
                    stats.prepare_us.fetch_add(steps[0], Ordering::Relaxed);
                    stats.decide_us.fetch_add(steps[1], Ordering::Relaxed);
                }
                Ok(())
            }
            Finish::Aborted(reason) => Err(Error::serialization(format!(
                "the transaction was rolled back: {reason}"
            ))),
            Finish::Unknown(reason) => Err(Error::unknown_outcome(reason)),
        }
    }

    /// Phase one: sends the prepares at once and feeds the votes to the coordinator as they
    /// arrive. Returns the coordinator's next actions.
    async fn prepare(&mut self, shards: &[ShardId], run: &mut Run) -> Vec<Action> {
        // From the first prepare on, the participants' fate is decided by this driver or by
        // recovery; dropping the transaction must never roll them back.
        self.txn.finished = true;
        let t = Instant::now();
        let anchor = run.coord.anchor();
        let participants = run.coord.participants();
        let mut votes = self.send_all(
            shards,
            |_| ShardOp::Prepare {
                anchor,
                participants: participants.clone(),
            },
            |twopc, gid, txn| {
                let participants = participants.clone();
                Box::pin(async move {
                    match txn {
                        Some(txn) => twopc.prepare(gid, txn, anchor, participants).await,
                        None => Err(Error::Internal("no local part to prepare".into())),
                    }
                })
            },
        );
        let mut next = Vec::new();
        let mut yes = 0;
        while let Some((shard, node, addr, reply)) = votes.next().await {
            let vote = vote_of(self.txn.settle(shard, &node, &addr, reply).await);
            if vote == Vote::Yes {
                yes += 1;
                if yes == 1 && shards.len() > 1 {
                    crash_point("gateway-after-some-prepares");
                }
            }
            next.extend(run.coord.on_vote(shard, vote));
        }
        run.steps[0] += micros(t);
        next
    }

    /// Phase two, after the decision is durable at the anchor: the others apply the commit in
    /// a task of its own, and the anchor's record goes when all have. The receiver hears once
    /// every participant has answered (see [`SETTLE_WAIT`]).
    fn commit_others(
        &mut self,
        shards: &[ShardId],
        coord: Coordinator,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let acks = self.send_all(
            shards,
            |_| ShardOp::CommitPrepared,
            |twopc, gid, _| Box::pin(async move { twopc.commit_prepared(gid).await.map(|_| ()) }),
        );
        let forget = self.message_later(coord.anchor(), ShardOp::Forget);
        let guard = self.txn.gw.twopc.finishing();
        let (twopc, gid) = (self.txn.gw.twopc.clone(), self.txn.id);
        let (answered, applied) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            finish_commit(coord, acks, forget, twopc, gid, answered).await;
            drop(guard);
        });
        applied
    }

    /// One-phase commit on the only written shard.
    async fn commit_one(&mut self, shard: ShardId) -> Result<()> {
        match self.txn.parts.remove(&shard) {
            Some(Part::Local(t)) => t.commit().await,
            Some(Part::Remote { node, addr, client }) => {
                let req = self.txn.request(shard, ShardOp::Commit);
                match call(&client, req).await {
                    Ok(ShardReply::Done) => Ok(()),
                    // Fenced (another placement or epoch) before anything was committed, and
                    // the shard rolled its part back: a definite, retryable refusal.
                    Ok(ShardReply::WrongShard { version }) => {
                        self.txn.gw.wait_for_map(version).await;
                        Err(Error::serialization(format!(
                            "shard {shard} moved before the commit (its map version {version}); nothing was committed, retry the transaction"
                        )))
                    }
                    Ok(other) => Err(Error::unknown_outcome(format!("shard {shard} (node {node}) answered the commit with {other:?}; the outcome is unknown"),
                    )),
                    Err(Error::Unreachable(e)) => {
                        self.txn.gw.peers.forget(&addr).await;
                        Err(Error::unknown_outcome(format!("lost shard {shard} (node {node}) during commit; the transaction's outcome is unknown: {e}"),
                        ))
                    }
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        }
    }

    /// Asks the anchor to commit its writes with the `COMMITTED` record.
    async fn commit_anchor(
        &mut self,
        shard: ShardId,
        participants: Vec<ShardId>,
        started: Instant,
    ) -> AnchorReply {
        match self.txn.parts.remove(&shard) {
            Some(Part::Local(t)) => {
                match self
                    .txn
                    .gw
                    .twopc
                    .commit_anchor(self.txn.id, t, participants, Some(started))
                    .await
                {
                    Ok(()) => AnchorReply::Committed,
                    Err(e) if e.is_refusal() => AnchorReply::Refused(e.to_string()),
                    Err(e) => AnchorReply::Lost(e.to_string()),
                }
            }
            Some(Part::Remote { client, .. }) if client.is_closed() => {
                // The anchor dropped its part with the connection: nothing can commit it.
                AnchorReply::Refused(format!(
                    "the connection to the anchor shard {shard} closed before the commit, which rolled back its part"
                ))
            }
            Some(Part::Remote { node, addr, client }) => {
                let req = self
                    .txn
                    .request(shard, ShardOp::CommitAnchor { participants });
                let reply = call(&client, req).await;
                self.txn.parts.insert(
                    shard,
                    Part::Remote {
                        node: node.clone(),
                        addr: addr.clone(),
                        client,
                    },
                );
                match reply {
                    Ok(ShardReply::Done) => AnchorReply::Committed,
                    // Fenced before anything was done: a definite refusal.
                    Ok(ShardReply::WrongShard { version }) => AnchorReply::Refused(format!(
                        "the anchor shard {shard} moved (map version {version})"
                    )),
                    Ok(other) => AnchorReply::Lost(format!("node {node} answered {other:?}")),
                    // The anchor's own refusals are serialization failures; anything else
                    // (a lost connection, an I/O error) leaves the outcome unknown.
                    Err(e) if e.is_refusal() => AnchorReply::Refused(e.to_string()),
                    Err(e) => {
                        if matches!(e, Error::Unreachable(_)) {
                            self.txn.gw.peers.forget(&addr).await;
                        }
                        AnchorReply::Lost(format!("node {node}: {e}"))
                    }
                }
            }
            None => AnchorReply::Refused("the anchor's part is gone".into()),
        }
    }

    /// Sends a message to several participants at once: remote ones get `remote(shard)`, this
    /// node's own part runs `local` (with its transaction, taken out of the parts). The answers
    /// come back as they arrive.
    fn send_all(
        &mut self,
        shards: &[ShardId],
        remote: impl Fn(ShardId) -> ShardOp,
        local: impl FnOnce(Arc<TwoPhase>, u64, Option<Transaction>) -> LocalStep,
    ) -> FuturesUnordered<PartFuture> {
        let all = FuturesUnordered::new();
        let mut local = Some(local);
        for &shard in shards {
            match self.txn.parts.get(&shard) {
                Some(Part::Remote { node, addr, client }) => {
                    let (req, client, node, addr) = (
                        self.txn.request(shard, remote(shard)),
                        client.clone(),
                        node.clone(),
                        addr.clone(),
                    );
                    all.push(Box::pin(async move {
                        let reply = call(&client, req).await;
                        (shard, node, addr, reply)
                    }) as PartFuture);
                }
                _ if Some(shard) == self.txn.my_shard => {
                    let txn = match self.txn.parts.remove(&shard) {
                        Some(Part::Local(t)) => Some(t),
                        _ => None,
                    };
                    if let Some(local) = local.take() {
                        let step = local(self.txn.gw.twopc.clone(), self.txn.id, txn);
                        all.push(Box::pin(async move {
                            let reply = step.await.map(|()| ShardReply::Done);
                            (shard, "(this node)".to_string(), String::new(), reply)
                        }) as PartFuture);
                    }
                }
                _ => {}
            }
        }
        all
    }

    /// Ends a participant: rolls back (or aborts, if prepared) this node's part, and sends a
    /// rollback to a remote one, in a task whose handle it returns (the answer waits for it
    /// within [`SETTLE_WAIT`]; the task goes on past it).
    /// Ends the read-only parts `shards` and checks that their reads still stand (see
    /// [`ShardOp::Release`]): the first refusal, as a retryable 57P03 (nothing was done).
    async fn release_readers(&mut self, shards: &[ShardId]) -> Result<()> {
        let moved = |shard: ShardId, why: String| {
            Error::not_ready(format!(
                "shard {shard} changed its primary while this transaction read it ({why}); \
                 nothing was done; retry the transaction"
            ))
        };
        let mut refusal = None;
        let mut calls = FuturesUnordered::new();
        for &shard in shards {
            match self.txn.parts.remove(&shard) {
                Some(Part::Local(t)) => {
                    // As a participant judges a release: this node must still be the shard's
                    // primary under the epoch the transaction read it in, and not handing it
                    // over.
                    let as_read =
                        |m: &ClusterMap| m.shards.get(&shard).map(|s| (s.epoch, s.primary.clone()));
                    let now = self.txn.gw.meta.map();
                    let why = if now.as_deref().and_then(as_read) != as_read(&self.txn.map) {
                        Some("this node no longer serves it".to_string())
                    } else {
                        self.txn
                            .gw
                            .txns
                            .store
                            .committer
                            .read_refusal()
                            .map(|e| e.to_string())
                    };
                    t.rollback();
                    if let Some(why) = why {
                        refusal.get_or_insert(moved(shard, why));
                    }
                }
                Some(Part::Remote { client, node, .. }) => {
                    let req = self.txn.request(shard, ShardOp::Release);
                    calls.push(async move { (shard, node, call(&client, req).await) });
                }
                None => {}
            }
        }
        while let Some((shard, node, reply)) = calls.next().await {
            let why = match reply {
                Ok(ShardReply::Done) => continue,
                Ok(ShardReply::WrongShard { version }) => {
                    format!("node {node} no longer serves it: map version {version}")
                }
                Ok(other) => format!("node {node} answered {other:?}"),
                Err(e) => format!("node {node}: {e}"),
            };
            refusal.get_or_insert(moved(shard, why));
        }
        refusal.map_or(Ok(()), Err)
    }

    fn end_part(&mut self, shard: ShardId) -> Option<tokio::task::JoinHandle<()>> {
        match self.txn.parts.remove(&shard) {
            Some(Part::Local(t)) => {
                t.rollback();
                None
            }
            Some(Part::Remote { client, .. }) => {
                let req = self.txn.request(shard, ShardOp::Rollback);
                Some(tokio::spawn(async move {
                    let _ = call(&client, req).await;
                }))
            }
            None if Some(shard) == self.txn.my_shard => {
                let (twopc, gid) = (self.txn.gw.twopc.clone(), self.txn.id);
                Some(tokio::spawn(async move {
                    if let Err(e) = twopc.abort(gid).await {
                        tracing::warn!(gid, "aborting a prepared transaction failed: {e}");
                    }
                }))
            }
            None => None,
        }
    }

    /// A message to a participant (local or remote), to send later; `None` if there is no way
    /// to reach it.
    fn message_later(&self, shard: ShardId, op: ShardOp) -> Option<Later> {
        let gid = self.txn.id;
        match self.txn.parts.get(&shard) {
            Some(Part::Remote { client, .. }) => {
                let (req, client) = (self.txn.request(shard, op), client.clone());
                Some(Box::pin(async move {
                    if let Err(e) = call(&client, req).await {
                        tracing::debug!(gid, "2PC message to shard {shard}: {e}");
                    }
                }))
            }
            _ if Some(shard) == self.txn.my_shard && matches!(op, ShardOp::Forget) => {
                let twopc = self.txn.gw.twopc.clone();
                Some(Box::pin(async move {
                    if let Err(e) = twopc.forget(gid).await {
                        tracing::debug!(gid, "forgetting a decision record: {e}");
                    }
                }))
            }
            _ => None,
        }
    }
}

/// A participant's vote, from its answer to the prepare.
fn vote_of(reply: Result<ShardReply>) -> Vote {
    match reply {
        Ok(ShardReply::Done) => Vote::Yes,
        Ok(other) => Vote::No(format!("unexpected answer {other:?}")),
        Err(e @ Error::Unreachable(_)) => Vote::Lost(e.to_string()),
        Err(e) => Vote::No(e.to_string()),
    }
}

/// Collects the participants' commit acknowledgements (telling `answered` once all have
/// answered), and tells the anchor to drop its record once every participant has applied the
/// commit.
async fn finish_commit(
    mut coord: Coordinator,
    mut acks: FuturesUnordered<PartFuture>,
    mut forget: Option<Later>,
    twopc: Arc<TwoPhase>,
    gid: u64,
    answered: tokio::sync::oneshot::Sender<()>,
) {
    let mut answered = Some(answered);
    let t = Instant::now();
    let mut acked = 0;
    while let Some((shard, node, _addr, reply)) = acks.next().await {
        // Only a shard that says it applied the commit acknowledged it; the anchor keeps its
        // record for the others.
        let applied = matches!(reply, Ok(ShardReply::Done));
        if applied {
            acked += 1;
            if acked == 1 {
                crash_point("gateway-after-some-commits");
            }
        } else {
            tracing::warn!(
                gid,
                "shard {shard} (node {node}) did not apply the commit ({reply:?}); it will learn the outcome from the anchor"
            );
        }
        if acks.is_empty() {
            if let Some(tx) = answered.take() {
                let _ = tx.send(());
            }
        }
        for action in coord.on_commit_ack(shard, applied) {
            if let (Action::Forget(_), Some(f)) = (action, forget.take()) {
                f.await;
            }
        }
    }
    twopc
        .stats
        .finish_us
        .fetch_add(micros(t), Ordering::Relaxed);
}

/// Waits, at most [`SETTLE_WAIT`] in all, for the released and aborted participants and for
/// the phase-two acknowledgements, before the client's answer.
pub(super) async fn settle(
    released: Vec<tokio::task::JoinHandle<()>>,
    applied: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let all = async {
        for handle in released {
            let _ = handle.await;
        }
        if let Some(applied) = applied {
            let _ = applied.await;
        }
    };
    if tokio::time::timeout(SETTLE_WAIT, all).await.is_err() {
        tracing::debug!(
            "a participant took longer than {} ms to let go of a finished transaction; answering the client",
            SETTLE_WAIT.as_millis()
        );
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// A message to send later.
type Later = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// This node's own step in a 2PC message round.
type LocalStep = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;
/// A participant's answer: shard, node, address, reply.
type PartReply = (ShardId, String, String, Result<ShardReply>);
type PartFuture = std::pin::Pin<Box<dyn std::future::Future<Output = PartReply> + Send>>;
