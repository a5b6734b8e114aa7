//! `ddb promote NODE`: makes a replica the primary of its shard (DESIGN §6.2), by a
//! switchover while the primary serves, or with `--force` by a failover when it is down.
//!
//! **Switchover** (no `--force`; both nodes answer):
//!
//! 1. The checks from the map below, and both nodes answer.
//! 2. **Hand over**: the primary stops taking writes (they are refused with 57P03, retryable),
//!    lets the commits in flight finish for at most `--drain-ms`, and once its log's last
//!    entry is committed and NODE holds it (or at the bound, with what NODE holds: the
//!    stragglers past it were never committed and their clients get 57P03) proposes "epoch
//!    e+1 begins after what NODE holds, with NODE as primary", committing nothing past that
//!    point from then on. The primary runs this itself: a CLI killed meanwhile changes
//!    nothing about it, and a re-run joins it (or finds NODE already the primary). A
//!    switchover that cannot finish (NODE left the in-sync set, did not catch up in async
//!    mode, the map refused) lets writes in again and says why.
//! 3. **Wait** until NODE has followed the map and takes writes. The old primary becomes its
//!    replica (its log's unreplicated tail, if any, is dropped: it was never committed).
//!    `pause_ms` is the time from the hand-over request to NODE taking writes.
//!
//! **Failover** (`--force`), the steps, each checked before the next:
//!
//! 1. **Checks from the map**: NODE is a replica of a replicated shard, the primary is the one
//!    `--expected-primary` names (if given), and in `sync` mode NODE is in the in-sync set (so
//!    it holds every committed entry) unless `--allow-data-loss`. In `async` mode a promotion
//!    may lose what the primary committed and no replica holds: ddb prints a lower bound (how
//!    far the most advanced replica it can reach is ahead of NODE) and refuses without
//!    `--allow-data-loss`. Whenever NODE may lack entries (`async`, or out of sync), a replica
//!    that answers and holds a two-phase commit record past NODE's last entry makes ddb
//!    refuse, `--allow-data-loss` or not, and name that replica: losing the record would
//!    leave a transaction committed on some shards only.
//! 2. **Checks of the nodes**: NODE answers; the primary does not (a live primary is moved by
//!    a switchover: a forced promotion of a primary that still serves would let it answer
//!    reads until it hears of the new map, as ddb keeps no leases yet).
//! 3. **Fence**: NODE takes the new epoch durably, so it refuses the old primary's entries
//!    from then on, and answers its last entry L.
//! 4. **Promote**: the map change "epoch e+1 begins at L+1 with NODE as primary", validated
//!    by the map against epoch e, so of two promotions of a shard only the first applies.
//! 5. **Wait** until NODE has followed the map and committed its log's tail, when it takes
//!    writes (its `applied_lsn` reaches L).
//!
//! A re-run after the CLI was killed converges: the fence is idempotent for the same epoch,
//! and once the map names NODE the primary, the re-run says so (refused: it already is).
//! `--dry-run` runs the checks and changes nothing. The result has the §10.1 fields: `shard`,
//! `old_primary`, `new_primary`, `epoch`, `pause_ms` (from the fence to NODE taking writes)
//! and `lost_entries` (0 when NODE was in sync; else the lower bound, NULL if unknown).

use std::time::{Duration, Instant};

use clap::Args;

use super::console::note;
use super::global::GlobalArgs;
use super::nodes::{col, probe, Targets};
use super::output::{Format, Printer};
use crate::cluster::map::{Change, ClusterMap, Mode};
use crate::cluster::ring::ShardId;
use crate::error::Error;
use crate::protocol::{NodeStatus, Replicate, ReplicateReply, Request, Response};
use crate::replication::LogId;
use crate::storage::log::Lsn;
use crate::types::value::{DataType, Value};
use crate::types::QueryResult;

/// Arguments of `ddb promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The replica to make its shard's primary
    pub node: String,
    /// The primary is down: fence NODE and promote it (failover)
    #[arg(long)]
    pub force: bool,
    /// Promote even when committed writes may be lost (NODE not in sync, or async replication)
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Refuse unless the shard's primary is this node
    #[arg(long, value_name = "NODE")]
    pub expected_primary: Option<String>,
    /// Run the checks, print the plan, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for NODE to take writes, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Switchover: how long the old primary lets the commits in flight finish, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub drain_ms: u64,
}

/// What the map says of the promotion.
struct Plan {
    shard: ShardId,
    epoch: u64,
    old_primary: String,
    in_sync: bool,
    mode: Mode,
}

/// Runs `ddb promote`.
pub async fn run(args: &PromoteArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = Targets::resolve(global).await?;
    let map = targets
        .map()
        .await
        .ok_or_else(|| Error::Unreachable("no node of the cluster answers with its map".into()))?;
    let plan = plan(&map, args)?;
    let cluster = targets.cluster.as_deref();
    let addr_of = |name: &str| {
        map.node(name)
            .map(|n| n.rpc_addr.clone())
            .unwrap_or_default()
    };
    let Some((client, status)) = probe(&addr_of(&args.node), cluster).await? else {
        return Err(Error::Refused(format!(
            "node {} does not answer at {}: a node that is down cannot be promoted",
            args.node,
            addr_of(&args.node)
        ))
        .into());
    };
    if !args.force {
        // The primary hands over only what NODE holds: nothing committed is lost, in async
        // mode too.
        return switchover(args, global, cluster, &map, &plan).await;
    }
    let lost = lost_bound(&targets, &map, &plan, &status).await;
    if !(plan.mode == Mode::Sync && plan.in_sync) {
        // NODE may lack entries another replica holds: never one with a two-phase commit
        // record, whose loss would commit a transaction on some shards only.
        refuse_missing_txn_record(&targets, &map, &plan, &status).await?;
    }
    if plan.mode == Mode::Async && !args.allow_data_loss {
        return Err(Error::Refused(format!(
            "shard {} replicates asynchronously: promoting {} loses what the primary {} \
             committed and {} lacks ({}); pass --allow-data-loss to promote anyway",
            plan.shard,
            args.node,
            plan.old_primary,
            args.node,
            describe_lost(lost)
        ))
        .into());
    }
    if probe(&addr_of(&plan.old_primary), cluster).await?.is_some() {
        return Err(Error::Refused(format!(
            "the primary {} of shard {} answers: --force is for a primary that is down (a live \
             one would go on answering reads until it hears of the promotion); stop it first \
             (ddb stop {})",
            plan.old_primary, plan.shard, plan.old_primary
        ))
        .into());
    }
    let mut printer = Printer::new(Format::resolve(global.format), global.quiet, true);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let lost_entries = if plan.in_sync { Some(0) } else { lost };
    if args.dry_run {
        if !global.quiet {
            note(format_args!(
                "dry run: would fence {} at epoch {}, then make it the primary of shard {} \
                 in place of {} ({}); nothing was changed",
                args.node,
                plan.epoch + 1,
                plan.shard,
                plan.old_primary,
                if plan.in_sync {
                    "it is in sync: nothing committed is lost".to_string()
                } else {
                    describe_lost(lost)
                }
            ));
        }
        printer.print(
            &result(&plan, &args.node, None, lost_entries),
            &mut out,
            &mut err,
        )?;
        return Ok(());
    }
    // Fence: from here on NODE refuses the old epoch's entries, so nothing it acknowledges
    // can be past `last`.
    let fenced = Instant::now();
    let fence = Request::Replicate(Replicate::Fence {
        shard: plan.shard,
        epoch: plan.epoch + 1,
    });
    let last = match client.call(fence).await? {
        Response::Replicated(ReplicateReply::Opened { last, .. }) => last,
        Response::Replicated(ReplicateReply::Refused(why)) => {
            return Err(Error::Refused(format!(
                "node {} refused to be fenced at epoch {}: {why:?} (another promotion of shard \
                 {} under way?)",
                args.node,
                plan.epoch + 1,
                plan.shard
            ))
            .into())
        }
        Response::Error(e) => return Err(e.into()),
        other => {
            return Err(Error::Corrupt(format!("unexpected answer to a fence: {other:?}")).into())
        }
    };
    // NODE's log may hold a tail of an older epoch past where a later epoch began (a
    // switchover's stragglers, a deposed primary's last entries): not part of the shard's
    // history, never committed, and answered as dropped. The new epoch begins before it, so
    // NODE cuts it when it takes over.
    let last = match map.shards.get(&plan.shard) {
        Some(info) => within_history(&info.epochs, last),
        None => last,
    };
    let change = Change::Promote {
        shard: plan.shard,
        epoch: plan.epoch,
        node: args.node.clone(),
        first_lsn: last.lsn + 1,
        allow_data_loss: args.allow_data_loss,
    };
    let proposed = match client.call(Request::Propose(change)).await {
        Ok(Response::Proposed(version)) => Ok(version),
        Ok(Response::Error(e)) | Err(e) => Err(e),
        Ok(other) => Err(Error::Corrupt(format!(
            "unexpected answer to a proposal: {other:?}"
        ))),
    };
    let version = match proposed {
        Ok(version) => version,
        Err(e) => {
            // The fence stays: say what it means for the shard and how to finish.
            note(format_args!(
                "{} is fenced at epoch {} and refuses the entries of the old primary {}, so \
                 shard {} takes no writes until a promotion completes (the map may still apply \
                 this one); re-run `ddb promote {} --force` once the map has a quorum, or \
                 `ddb promote {}` if {} answers again",
                args.node,
                plan.epoch + 1,
                plan.old_primary,
                plan.shard,
                args.node,
                args.node,
                plan.old_primary
            ));
            return Err(e.into());
        }
    };
    let pause_ms = wait_writable(args, cluster, &map, &plan, version, last.lsn, fenced).await?;
    printer.print(
        &result(&plan, &args.node, Some(pause_ms), lost_entries),
        &mut out,
        &mut err,
    )?;
    Ok(())
}

/// A switchover: the live primary hands the shard over to NODE (see the module's notes).
async fn switchover(
    args: &PromoteArgs,
    global: &GlobalArgs,
    cluster: Option<&str>,
    map: &ClusterMap,
    plan: &Plan,
) -> anyhow::Result<()> {
    let primary_addr = map
        .node(&plan.old_primary)
        .map(|n| n.rpc_addr.clone())
        .unwrap_or_default();
    let Some((primary, status)) = probe(&primary_addr, cluster).await? else {
        return Err(Error::Refused(format!(
            "the primary {} of shard {} does not answer at {primary_addr}: a switchover needs \
             it; if it is down, promote with --force",
            plan.old_primary, plan.shard
        ))
        .into());
    };
    let progress = status.replicas.iter().find(|r| r.node == args.node);
    let mut printer = Printer::new(Format::resolve(global.format), global.quiet, true);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    if args.dry_run {
        if !global.quiet {
            let lag = match progress {
                Some(p) if p.connected => format!("{} entries behind", p.lag),
                Some(_) => "not connected to the primary: the switchover would be refused".into(),
                None => "not known to the primary".into(),
            };
            note(format_args!(
                "dry run: would stop writes on {} (for at most {} ms of draining), let {} catch \
                 up ({lag}), then make it the primary of shard {} in epoch {}; nothing was \
                 changed",
                plan.old_primary,
                args.drain_ms,
                args.node,
                plan.shard,
                plan.epoch + 1
            ));
        }
        printer.print(&result(plan, &args.node, None, Some(0)), &mut out, &mut err)?;
        return Ok(());
    }
    let started = Instant::now();
    let request = Request::HandOver {
        shard: plan.shard,
        epoch: plan.epoch,
        to: args.node.clone(),
        drain_ms: args.drain_ms,
    };
    let done = match primary.call(request).await? {
        Response::HandedOver(done) => done,
        Response::Error(e) => return Err(e.into()),
        other => {
            return Err(
                Error::Corrupt(format!("unexpected answer to a hand-over: {other:?}")).into(),
            )
        }
    };
    if done.stragglers > 0 && !global.quiet {
        note(format_args!(
            "{} commits still in flight at the drain bound ({} ms) were refused (retryable): \
             {} did not hold them",
            done.stragglers, args.drain_ms, args.node
        ));
    }
    let pause_ms = wait_writable(
        args,
        cluster,
        map,
        plan,
        done.version,
        done.first_lsn.saturating_sub(1),
        started,
    )
    .await?;
    printer.print(
        &result(plan, &args.node, Some(pause_ms), Some(0)),
        &mut out,
        &mut err,
    )?;
    Ok(())
}

/// Waits until NODE has map `version`, has applied up to `last` and takes writes; returns the
/// milliseconds since `since`.
async fn wait_writable(
    args: &PromoteArgs,
    cluster: Option<&str>,
    map: &ClusterMap,
    plan: &Plan,
    version: u64,
    last: u64,
    since: Instant,
) -> anyhow::Result<i64> {
    let addr = map
        .node(&args.node)
        .map(|n| n.rpc_addr.clone())
        .unwrap_or_default();
    let deadline = since + Duration::from_secs(args.timeout);
    let mut why = String::from("it does not answer");
    loop {
        let writable = match probe(&addr, cluster).await? {
            Some((_, s)) if s.map_version < version => {
                why = format!("it has map version {}, not {version} yet", s.map_version);
                false
            }
            Some((_, s)) if s.applied_lsn < last => {
                why = format!("it applied up to {}, not {last} yet", s.applied_lsn);
                false
            }
            Some((_, s)) => match s.write_refusal {
                Some(refusal) => {
                    why = format!("it refuses writes: {refusal}");
                    false
                }
                None => true,
            },
            None => {
                why = String::from("it does not answer");
                false
            }
        };
        if writable {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "the map names {} the primary of shard {} (epoch {}), but it did not take \
                 writes within {} s ({why})",
                args.node,
                plan.shard,
                plan.epoch + 1,
                args.timeout
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(since.elapsed().as_millis() as i64)
}

/// The checks the map alone answers.
fn plan(map: &ClusterMap, args: &PromoteArgs) -> Result<Plan, Error> {
    let node = &args.node;
    let (shard, info) = map.shard_of_node(node).ok_or_else(|| {
        Error::Refused(format!(
            "node {node:?} is not in the cluster map of '{}'",
            map.name
        ))
    })?;
    if map.replication.factor < 2 {
        return Err(Error::Refused(format!(
            "shard {shard} has one copy (replication.factor 1): there is no replica to promote"
        )));
    }
    if info.primary == *node {
        return Err(Error::Refused(format!(
            "node {node} already is the primary of shard {shard} (epoch {})",
            info.epoch
        )));
    }
    if let Some(expected) = &args.expected_primary {
        if map.node(expected).is_none() {
            return Err(Error::Refused(format!(
                "--expected-primary {expected:?} is not a node of the cluster map of '{}'",
                map.name
            )));
        }
        if *expected != info.primary {
            return Err(Error::Refused(format!(
                "the primary of shard {shard} is {}, not {expected} (--expected-primary): \
                 the cluster changed meanwhile, or the name is not the one meant",
                info.primary
            )));
        }
    }
    let in_sync = info.in_sync.iter().any(|n| n == node);
    if !in_sync && !args.allow_data_loss {
        return Err(Error::Refused(format!(
            "node {node} is not in the in-sync set of shard {shard} ({}): it may lack committed \
             writes; promote a member of the set, or pass --allow-data-loss",
            info.in_sync.join(", ")
        )));
    }
    Ok(Plan {
        shard,
        epoch: info.epoch,
        old_primary: info.primary.clone(),
        in_sync: in_sync && map.replication.mode == Mode::Sync,
        mode: map.replication.mode,
    })
}

/// A lower bound of the entries a promotion of the node whose status is `target` loses: how
/// far the most advanced other member of the shard that answers is ahead of it (`None` when
/// none answers). What the primary alone held is not counted: it is down.
async fn lost_bound(
    targets: &Targets,
    map: &ClusterMap,
    plan: &Plan,
    target: &NodeStatus,
) -> Option<i64> {
    let info = map.shards.get(&plan.shard)?;
    let mut best = None;
    for name in info.replicas.iter().filter(|n| **n != target.name) {
        let Some(addr) = map.node(name).map(|n| n.rpc_addr.clone()) else {
            continue;
        };
        if let Ok(Some((_, s))) = probe(&addr, targets.cluster.as_deref()).await {
            best = best.max(Some(s.lsn));
        }
    }
    Some(best?.saturating_sub(target.lsn) as i64)
}

/// Refuses the promotion when a replica that answers holds a two-phase commit record (a
/// prepare or a decision) past NODE's last entry: NODE would lose it, and with it the outcome
/// other shards committed or are waiting for. Refused too when a replica ahead of NODE cannot
/// say (the check is what keeps a transaction atomic; `--allow-data-loss` does not lift it).
async fn refuse_missing_txn_record(
    targets: &Targets,
    map: &ClusterMap,
    plan: &Plan,
    target: &NodeStatus,
) -> anyhow::Result<()> {
    let Some(info) = map.shards.get(&plan.shard) else {
        return Ok(());
    };
    for name in info.replicas.iter().filter(|n| **n != target.name) {
        let Some(addr) = map.node(name).map(|n| n.rpc_addr.clone()) else {
            continue;
        };
        let Ok(Some((client, s))) = probe(&addr, targets.cluster.as_deref()).await else {
            continue;
        };
        if s.lsn <= target.lsn {
            continue;
        }
        let ask = Request::FirstTxnRecord {
            shard: plan.shard,
            after: target.lsn,
            upto: s.lsn,
        };
        let why = match client.call(ask).await {
            Ok(Response::TxnRecord(None)) => continue,
            Ok(Response::TxnRecord(Some(lsn))) => format!(
                "replica {name} holds a two-phase commit record at entry {lsn}, past {}'s last \
                 entry {}: promoting {} would lose it, and with it the outcome of a \
                 transaction across shards; promote {name} instead, or wait until {} holds it",
                target.name, target.lsn, target.name, target.name
            ),
            Ok(Response::Error(e)) => format!(
                "replica {name} is ahead of {} ({} entries) and could not say whether it holds \
                 a two-phase commit record {} lacks: {e}",
                target.name,
                s.lsn - target.lsn,
                target.name
            ),
            Ok(other) => format!("replica {name} answered {other:?}"),
            Err(e) => format!(
                "replica {name} is ahead of {} ({} entries) and did not say whether it holds \
                 a two-phase commit record {} lacks: {e}",
                target.name,
                s.lsn - target.lsn,
                target.name
            ),
        };
        return Err(Error::Refused(format!("{why} (--allow-data-loss does not lift this)")).into());
    }
    Ok(())
}

/// The last entry of a log ending at `last` that belongs to the shard's history `epochs`
/// (each epoch with the LSN it begins at): entries of an older epoch at or past the LSN where
/// a later epoch began are not part of it.
fn within_history(epochs: &[(u64, Lsn)], last: LogId) -> LogId {
    match epochs
        .iter()
        .find(|(epoch, first)| *epoch > last.epoch && *first <= last.lsn)
    {
        Some(&(_, first)) => LogId::new(last.epoch, first - 1),
        None => last,
    }
}

fn describe_lost(lost: Option<i64>) -> String {
    match lost {
        Some(n) => format!(
            "at least {n} entries, from what the replicas that answer hold; the primary's \
             unreplicated tail is not known"
        ),
        None => "how many entries is not known: no other replica answers".into(),
    }
}

fn result(plan: &Plan, node: &str, pause_ms: Option<i64>, lost: Option<i64>) -> QueryResult {
    let opt = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
    QueryResult {
        columns: vec![
            col("shard", DataType::Int),
            col("old_primary", DataType::Text),
            col("new_primary", DataType::Text),
            col("epoch", DataType::BigInt),
            col("pause_ms", DataType::BigInt),
            col("lost_entries", DataType::BigInt),
        ],
        rows: vec![vec![
            Value::Int(plan.shard.into()),
            Value::Text(plan.old_primary.clone()),
            Value::Text(node.to_string()),
            Value::Int(plan.epoch as i64 + 1),
            opt(pause_ms),
            opt(lost),
        ]],
        tag: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_past_where_a_later_epoch_began_is_not_part_of_the_history() {
        let epochs = [(1, 1), (2, 9)];
        // A tail of epoch 1 past entry 8, where epoch 2 began: cut at 8.
        assert_eq!(within_history(&epochs, LogId::new(1, 10)), LogId::new(1, 8));
        assert_eq!(within_history(&epochs, LogId::new(1, 9)), LogId::new(1, 8));
        // Within the history: kept.
        assert_eq!(within_history(&epochs, LogId::new(1, 8)), LogId::new(1, 8));
        assert_eq!(
            within_history(&epochs, LogId::new(2, 30)),
            LogId::new(2, 30)
        );
        assert_eq!(
            within_history(&[(1, 1)], LogId::new(1, 30)),
            LogId::new(1, 30)
        );
        assert_eq!(within_history(&epochs, LogId::default()), LogId::default());
    }
}
