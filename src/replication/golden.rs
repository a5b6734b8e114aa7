//! Golden-script tests of the replication cores (the scripts are in
//! `src/replication/testscripts/`).
//!
//! A script plays one shard: a [`Primary`] named by `primary`, and [`Replica`]s by name.
//! Nothing connects them but the script: `ship` builds the next batch of the stream the primary
//! asked for and hands it to the replica, whose acks and refusals wait in its outbox until
//! `deliver` (or `drop`) — so a script can lose, delay and reorder exactly where the protocol is
//! delicate. `ack`, `batch` and `old-primary` inject messages by hand. Time is the runner's
//! clock, moved by `tick`.
//!
//! After every command the runner checks what the cores promise: the commit LSN never falls;
//! every replica that is a counted member (committed set or pending addition) has persisted
//! the primary's entries up to the commit LSN; no replica has applied beyond the primary's
//! commit LSN or an entry that differs from the primary's. (In `async` mode only the first:
//! there replicas lag, and a promotion may lose what they lack.) A script that breaks one of them
//! fails, unless it expects the failure with `!`.
//!
//! Commands (`E.L` is a log id; a log is `E.L-L/…`, runs of one epoch; lists are separated by `/`):
//!
//! ```text
//! primary epoch=E in-sync=N/… [mode=sync|async] [min=K] [timeout=MS] [retention=K]
//!         [history=E@L/…] [log=…] [start=L] [commit=L]
//!                                        build the primary "p" (replaces an earlier one)
//! replica NAME [epoch=E] [log=…] [applied=L]
//!                                        build a replica from its disk
//! write [n=K] [decision=L/…]             append K entries and report them durable
//! open NAME [last=E.L]                   NAME connects (last defaults to its log's last)
//! ship NAME [n=K] [commit=L]             the next K durable entries of NAME's stream (all by
//!                                        default; 0 is a heartbeat), or its snapshot
//! persist NAME [upto=E.L]                NAME's log is durable (up to its last by default)
//! deliver NAME [n=K]                     K messages of NAME's outbox reach the primary (all)
//! drop NAME                              NAME's outbox is lost
//! lost NAME                              the primary's session to NAME is gone (what is in
//!                                        the outbox may still arrive: `drop` loses it)
//! crash NAME                             NAME restarts from its disk (unpersisted entries lost)
//! epoch NAME E                           NAME learns epoch E from the map
//! batch NAME session=S epoch=E prev=E.L [log=…] [commit=L]
//!                                        a batch by hand (a stale primary's, say)
//! ack NAME session=S E.L                 an ack by hand
//! tick MS
//! changed [epoch=E] in-sync=N/…          the map committed the in-sync set
//! failed add|remove NODE                 the map did not take the proposal
//! truncate                               truncate the primary's log as far as it allows
//! truncate NAME retention=K              NAME truncates its log as far as it allows, keeping
//!                                        K entries behind its applied LSN
//! status                                 the primary's state
//! rstatus NAME                           a replica's state
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{ArgumentConsumer, Command};

use super::primary::{Action as PAction, Change, Config, Event as PEvent, Mode, Primary};
use super::replica::{Action as RAction, Event as REvent, Reject, Replica};
use super::{EpochHistory, LogId};
use crate::storage::Lsn;

type Res<T> = Result<T, Box<dyn Error>>;

/// What the primary asked to send to a replica.
#[derive(Clone, Copy, Debug)]
enum Stream {
    /// The log from `next`, the entry before it being `prev`.
    Log {
        session: u64,
        next: Lsn,
        prev: LogId,
    },
    Snapshot {
        session: u64,
    },
}

#[derive(Default)]
struct Runner {
    now: u64,
    primary: Option<Primary>,
    /// The primary's log: entry `lsn` at index `lsn - 1`.
    log: Vec<LogId>,
    streams: BTreeMap<String, Stream>,
    replicas: BTreeMap<String, Replica>,
    /// Replies waiting to reach the primary.
    outbox: BTreeMap<String, Vec<RAction>>,
    last_commit: Lsn,
}

impl goldenscript::Runner for Runner {
    fn run(&mut self, command: &Command) -> Res<String> {
        let mut args = command.consume_args();
        let out = match command.name.as_str() {
            "primary" => self.build_primary(&mut args)?,
            "replica" => {
                let name = pos(&mut args, "name")?;
                let epoch = args.lookup_parse("epoch")?.unwrap_or(0);
                let log = match args.lookup("log") {
                    Some(a) => parse_log(&a.value)?,
                    None => Vec::new(),
                };
                let applied = args.lookup_parse("applied")?.unwrap_or(0);
                let (history, last) = history_of(&log)?;
                let replica = Replica::new(epoch, history, last, applied)?;
                self.replicas.insert(name.clone(), replica);
                self.outbox.insert(name, Vec::new());
                String::new()
            }
            "write" => {
                let n: u64 = args.lookup_parse("n")?.unwrap_or(1);
                let decisions = match args.lookup("decision") {
                    Some(a) => list_of(&a.value)?,
                    None => Vec::new(),
                };
                let epoch = self.primary()?.history().last_epoch();
                let first = self.log.len() as Lsn + 1;
                for lsn in first..first + n {
                    self.log.push(LogId::new(epoch, lsn));
                }
                let up_to = self.log.last().copied().unwrap_or(LogId::ZERO);
                let now_ms = self.now;
                self.tell_primary(PEvent::Durable {
                    up_to,
                    decisions,
                    now_ms,
                })?
            }
            "open" => {
                let node = pos(&mut args, "name")?;
                let last = match args.lookup("last") {
                    Some(a) => parse_id(&a.value)?,
                    None => self.replica(&node)?.last(),
                };
                self.tell_primary(PEvent::Opened { node, last })?
            }
            "ship" => {
                let node = pos(&mut args, "name")?;
                let n: Option<u64> = args.lookup_parse("n")?;
                let commit = args.lookup_parse("commit")?;
                self.ship(&node, n, commit)?
            }
            "persist" => {
                let node = pos(&mut args, "name")?;
                let up_to = match args.lookup("upto") {
                    Some(a) => parse_id(&a.value)?,
                    None => self.replica(&node)?.last(),
                };
                self.tell_replica(&node, REvent::Persisted { up_to })?
            }
            "deliver" => {
                let node = pos(&mut args, "name")?;
                let n: Option<usize> = args.lookup_parse("n")?;
                self.deliver(&node, n)?
            }
            "drop" => {
                let node = pos(&mut args, "name")?;
                let lost = self.outbox.get_mut(&node).map(std::mem::take);
                format!("{node}: {} message(s) lost", lost.map_or(0, |l| l.len()))
            }
            "lost" => {
                let node = pos(&mut args, "name")?;
                let session = match self.streams.remove(&node) {
                    Some(Stream::Log { session, .. } | Stream::Snapshot { session }) => session,
                    None => return Err(format!("{node} has no session").into()),
                };
                self.tell_primary(PEvent::Lost { node, session })?
            }
            "crash" => {
                let node = pos(&mut args, "name")?;
                let r = self.replica(&node)?;
                let persisted = r.persisted();
                let mut history = r.history().clone();
                history.truncate_after(persisted.lsn);
                let restarted = Replica::new(r.epoch(), history, persisted, r.applied())?;
                self.replicas.insert(node.clone(), restarted);
                format!("{node}: restarted at {persisted}")
            }
            "epoch" => {
                let node = pos(&mut args, "name")?;
                let epoch: u64 = pos(&mut args, "epoch")?.parse()?;
                self.tell_replica(&node, REvent::Epoch { epoch })?
            }
            "batch" => {
                let node = pos(&mut args, "name")?;
                let session = args.lookup_parse("session")?.ok_or("session not given")?;
                let epoch = args.lookup_parse("epoch")?.ok_or("epoch not given")?;
                let prev = parse_id(&args.lookup("prev").ok_or("prev not given")?.value)?;
                let entries = match args.lookup("log") {
                    Some(a) => parse_log(&a.value)?,
                    None => Vec::new(),
                };
                let commit = args.lookup_parse("commit")?.unwrap_or(0);
                let event = REvent::Batch {
                    session,
                    epoch,
                    prev,
                    entries,
                    commit,
                };
                self.tell_replica(&node, event)?
            }
            "ack" => {
                let node = pos(&mut args, "name")?;
                let session = args.lookup_parse("session")?.ok_or("session not given")?;
                let up_to = parse_id(&pos(&mut args, "log id")?)?;
                self.tell_primary(PEvent::Acked {
                    node,
                    session,
                    up_to,
                })?
            }
            "tick" => {
                let ms: u64 = pos(&mut args, "milliseconds")?.parse()?;
                self.now += ms;
                let now_ms = self.now;
                let mut s = format!("now={now_ms}\n");
                s.push_str(&self.tell_primary(PEvent::Tick { now_ms })?);
                s
            }
            "changed" => {
                let epoch = match args.lookup_parse("epoch")? {
                    Some(e) => e,
                    None => self.primary()?.history().last_epoch(),
                };
                let in_sync = names(&args.lookup("in-sync").ok_or("in-sync not given")?.value);
                self.tell_primary(PEvent::InSyncChanged { epoch, in_sync })?
            }
            "failed" => {
                let kind = pos(&mut args, "add or remove")?;
                let node = pos(&mut args, "node")?;
                let change = match kind.as_str() {
                    "add" => Change::Add(node),
                    "remove" => Change::Remove(node),
                    other => return Err(format!("unknown change {other}").into()),
                };
                self.tell_primary(PEvent::ProposalFailed { change })?
            }
            "truncate" => match args.next_pos().map(|a| a.value.clone()) {
                Some(node) => {
                    let retention = args
                        .lookup_parse("retention")?
                        .ok_or("retention not given")?;
                    self.truncate_replica(&node, retention)?
                }
                None => {
                    let through = self.primary()?.truncate_through(&[]);
                    let mut s = format!("p: truncate through {through}\n");
                    s.push_str(&self.tell_primary(PEvent::Truncated { through })?);
                    s
                }
            },
            "status" => self.status()?,
            "rstatus" => {
                let node = pos(&mut args, "name")?;
                let r = self.replica(&node)?;
                format!(
                    "{node}: epoch={} last={} persisted={} matched={} commit={} applied={}",
                    r.epoch(),
                    r.last(),
                    r.persisted(),
                    r.matched(),
                    r.commit(),
                    r.applied()
                )
            }
            name => return Err(format!("unknown command {name}").into()),
        };
        args.reject_rest()?;
        self.check()?;
        Ok(ensure_newline(out))
    }
}

impl Runner {
    fn build_primary(&mut self, args: &mut ArgumentConsumer) -> Res<String> {
        let epoch: u64 = args.lookup_parse("epoch")?.ok_or("epoch not given")?;
        let mode = match args.lookup("mode").map(|a| a.value.clone()).as_deref() {
            None | Some("sync") => Mode::Sync,
            Some("async") => Mode::Async,
            Some(other) => return Err(format!("unknown mode {other}").into()),
        };
        let in_sync = names(&args.lookup("in-sync").ok_or("in-sync not given")?.value);
        let config = Config {
            me: "p".into(),
            epoch,
            mode,
            min_in_sync: args
                .lookup_parse("min")?
                .unwrap_or(in_sync.len().div_ceil(2)),
            ack_timeout_ms: args.lookup_parse("timeout")?.unwrap_or(1000),
            retention: args.lookup_parse("retention")?.unwrap_or(1000),
        };
        self.log = match args.lookup("log") {
            Some(a) => parse_log(&a.value)?,
            None => Vec::new(),
        };
        let history = match args.lookup("history") {
            Some(a) => {
                let mut pairs = Vec::new();
                for pair in a.value.split(['/', ',']) {
                    let (e, l) = pair.split_once('@').ok_or("history pairs are E@L")?;
                    pairs.push((e.parse()?, l.parse()?));
                }
                EpochHistory::new(pairs)?
            }
            None => history_of(&self.log)?.0,
        };
        let start = args.lookup_parse("start")?.unwrap_or(1);
        let commit = args.lookup_parse("commit")?.unwrap_or(0);
        let last = self.log.last().copied().unwrap_or(LogId::ZERO);
        let p = Primary::new(config, in_sync, history, start, last, commit, self.now)?;
        self.last_commit = commit;
        self.primary = Some(p);
        self.streams.clear();
        Ok(String::new())
    }

    fn primary(&mut self) -> Res<&mut Primary> {
        self.primary.as_mut().ok_or_else(|| "no primary yet".into())
    }

    /// Replica `node` drops the front of its log as far as its core allows with `retention`,
    /// and is told once that is durable; prints where its log now begins.
    fn truncate_replica(&mut self, node: &str, retention: Lsn) -> Res<String> {
        let r = self.replica(node)?;
        let through = r.truncate_through(retention);
        let base = r
            .history()
            .id_at(through)
            .ok_or_else(|| format!("{node} does not know entry {through}"))?;
        let mut s = format!("{node}: truncate through {base}\n");
        s.push_str(&self.tell_replica(node, REvent::Truncated { base })?);
        let pairs = self.replica(node)?.history().pairs();
        let pairs: Vec<String> = pairs.iter().map(|p| format!("{}@{}", p.0, p.1)).collect();
        writeln!(s, "{node}: history {}", pairs.join("/"))?;
        Ok(s)
    }

    fn replica(&self, node: &str) -> Res<&Replica> {
        self.replicas
            .get(node)
            .ok_or_else(|| format!("no replica {node}").into())
    }

    /// Feeds the primary an event and prints what it does, noting the streams it opens.
    fn tell_primary(&mut self, event: PEvent) -> Res<String> {
        let actions = self.primary()?.step(event);
        let mut s = String::new();
        for action in actions {
            match &action {
                PAction::Commit { lsn } => writeln!(s, "p: commit {lsn}")?,
                PAction::Stream {
                    node,
                    session,
                    from,
                    prev,
                } => {
                    writeln!(
                        s,
                        "p → {node}: stream session={session} from={from} prev={prev}"
                    )?;
                    let stream = Stream::Log {
                        session: *session,
                        next: *from,
                        prev: *prev,
                    };
                    self.streams.insert(node.clone(), stream);
                }
                PAction::Snapshot { node, session } => {
                    writeln!(s, "p → {node}: snapshot session={session}")?;
                    let stream = Stream::Snapshot { session: *session };
                    self.streams.insert(node.clone(), stream);
                }
                PAction::Propose { epoch, change } => {
                    writeln!(s, "p: propose {} (epoch {epoch})", change_name(change))?
                }
                PAction::Fail { first, last, error } => {
                    writeln!(s, "p: fail {first}..{last} ({}): {error}", error.sqlstate())?
                }
                PAction::StepDown { epoch } => writeln!(s, "p: step down for epoch {epoch}")?,
            }
        }
        Ok(s)
    }

    /// Feeds a replica an event and prints what it does; replies wait in its outbox.
    fn tell_replica(&mut self, node: &str, event: REvent) -> Res<String> {
        let replica = self
            .replicas
            .get_mut(node)
            .ok_or_else(|| format!("no replica {node}"))?;
        let actions = replica.step(event);
        let mut s = String::new();
        for action in actions {
            match &action {
                RAction::SaveEpoch { epoch } => writeln!(s, "{node}: save epoch {epoch}")?,
                RAction::Append {
                    truncate_after,
                    entries,
                } => {
                    if let Some(after) = truncate_after {
                        writeln!(s, "{node}: truncate after {after}")?;
                    }
                    if !entries.is_empty() {
                        writeln!(s, "{node}: append {}", log_name(entries))?;
                    }
                }
                RAction::Install { at } => writeln!(s, "{node}: install snapshot at {at}")?,
                RAction::Apply { up_to } => writeln!(s, "{node}: apply up to {up_to}")?,
                RAction::Ack { session, up_to } => {
                    writeln!(s, "{node} → p: ack {up_to} session={session}")?
                }
                RAction::Refuse { session, reject } => writeln!(
                    s,
                    "{node} → p: refuse session={session}: {}",
                    reject_name(reject)
                )?,
            }
            if matches!(action, RAction::Ack { .. } | RAction::Refuse { .. }) {
                self.outbox
                    .entry(node.to_string())
                    .or_default()
                    .push(action);
            }
        }
        Ok(s)
    }

    /// Builds the next batch (or the snapshot) of `node`'s stream and hands it over.
    fn ship(&mut self, node: &str, n: Option<u64>, commit: Option<Lsn>) -> Res<String> {
        let p = self.primary.as_ref().ok_or("no primary yet")?;
        let epoch = p.history().last_epoch();
        let commit = commit.unwrap_or(p.commit());
        let durable = p.durable().lsn;
        let stream = *self
            .streams
            .get(node)
            .ok_or_else(|| format!("no stream to {node}"))?;
        match stream {
            Stream::Snapshot { session } => {
                // A snapshot is of the applied state, which is the committed prefix.
                let at = self.id(commit)?;
                let next = Stream::Log {
                    session,
                    next: at.lsn + 1,
                    prev: at,
                };
                self.streams.insert(node.to_string(), next);
                self.tell_replica(node, REvent::Snapshot { session, epoch, at })
            }
            Stream::Log {
                session,
                next,
                prev,
            } => {
                let end = match n {
                    Some(n) => (next + n).saturating_sub(1).min(durable),
                    None => durable,
                };
                let entries: Vec<LogId> = (next..=end).map(|l| self.id(l)).collect::<Res<_>>()?;
                let last = entries.last().copied().unwrap_or(prev);
                let after = Stream::Log {
                    session,
                    next: last.lsn + 1,
                    prev: last,
                };
                self.streams.insert(node.to_string(), after);
                let event = REvent::Batch {
                    session,
                    epoch,
                    prev,
                    entries,
                    commit,
                };
                self.tell_replica(node, event)
            }
        }
    }

    fn id(&self, lsn: Lsn) -> Res<LogId> {
        if lsn == 0 {
            return Ok(LogId::ZERO);
        }
        self.log
            .get(lsn as usize - 1)
            .copied()
            .ok_or_else(|| format!("the primary's log has no entry {lsn}").into())
    }

    fn deliver(&mut self, node: &str, n: Option<usize>) -> Res<String> {
        let outbox = self.outbox.entry(node.to_string()).or_default();
        let take = n.unwrap_or(outbox.len()).min(outbox.len());
        let messages: Vec<RAction> = outbox.drain(..take).collect();
        let mut s = String::new();
        for message in messages {
            let event = match message {
                RAction::Ack { session, up_to } => PEvent::Acked {
                    node: node.to_string(),
                    session,
                    up_to,
                },
                RAction::Refuse { session, reject } => PEvent::Refused {
                    node: node.to_string(),
                    session,
                    reject,
                },
                _ => continue,
            };
            s.push_str(&self.tell_primary(event)?);
        }
        if s.is_empty() {
            s = "p: no action".into();
        }
        Ok(s)
    }

    fn status(&mut self) -> Res<String> {
        let p = self.primary()?;
        let mut s = format!(
            "p: epoch={} durable={} commit={} in-sync={}",
            p.history().last_epoch(),
            p.durable(),
            p.commit(),
            join(p.in_sync())
        );
        if let Some(change) = p.proposal() {
            write!(s, " proposed={}", change_name(change))?;
        }
        write!(s, " counted={}", join(&p.counted()))?;
        match p.refuse_writes() {
            Some(e) => write!(s, "\np: refuses writes ({}): {e}", e.sqlstate())?,
            None => write!(s, "\np: takes writes")?,
        }
        let nodes: Vec<String> = self.replicas.keys().cloned().collect();
        for node in nodes {
            if let Some((session, acked)) = self.primary()?.peer(&node) {
                let session = session.map_or("none".to_string(), |s| s.to_string());
                write!(s, "\np: {node} session={session} acked={acked}")?;
            }
        }
        Ok(s)
    }

    /// The promises of the cores, checked after every command.
    fn check(&mut self) -> Res<()> {
        let Some(p) = self.primary.as_ref() else {
            return Ok(());
        };
        let commit = p.commit();
        if commit < self.last_commit {
            return Err(
                format!("the commit LSN fell from {} to {commit}", self.last_commit).into(),
            );
        }
        self.last_commit = commit;
        // In async mode replicas lag by design, and a promotion may lose what they lack.
        if p.config().mode == Mode::Async {
            return Ok(());
        }
        let committed = self.id(commit)?;
        for node in p.counted() {
            let Some(r) = self.replicas.get(&node) else {
                continue;
            };
            let holds = r.persisted().lsn >= commit && r.history().matches(committed);
            if !holds {
                return Err(format!(
                    "{node} is counted but lacks committed entry {committed} (persisted {})",
                    r.persisted()
                )
                .into());
            }
        }
        for (node, r) in &self.replicas {
            if r.applied() > commit && p.deposed().is_none() {
                return Err(format!(
                    "{node} applied up to {} beyond the commit LSN {commit}",
                    r.applied()
                )
                .into());
            }
            let applied = r.applied();
            if applied > 0 && applied <= self.log.len() as Lsn {
                let mine = self.id(applied)?;
                if r.history()
                    .epoch_at(applied)
                    .is_some_and(|e| e != mine.epoch)
                {
                    return Err(format!("{node} applied an entry that differs from {mine}").into());
                }
            }
        }
        Ok(())
    }
}

fn pos(args: &mut ArgumentConsumer, what: &str) -> Res<String> {
    Ok(args
        .next_pos()
        .ok_or_else(|| format!("{what} not given"))?
        .value
        .clone())
}

fn names(list: &str) -> BTreeSet<String> {
    list.split(['/', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn list_of(list: &str) -> Res<Vec<Lsn>> {
    Ok(list
        .split(['/', ','])
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}

fn parse_id(s: &str) -> Res<LogId> {
    let (e, l) = s.split_once('.').ok_or("a log id is E.L")?;
    Ok(LogId::new(e.parse()?, l.parse()?))
}

/// A log from runs `E.L-L` (or single ids `E.L`), which must follow each other from LSN 1.
fn parse_log(s: &str) -> Res<Vec<LogId>> {
    let mut log = Vec::new();
    for run in s.split(['/', ',']).filter(|r| !r.is_empty()) {
        let (first, last) = match run.split_once('-') {
            Some((first, last)) => (parse_id(first)?, last.parse::<Lsn>()?),
            None => {
                let id = parse_id(run)?;
                (id, id.lsn)
            }
        };
        for lsn in first.lsn..=last {
            log.push(LogId::new(first.epoch, lsn));
        }
    }
    Ok(log)
}

/// The history and the last entry of a log given in full.
fn history_of(log: &[LogId]) -> Res<(EpochHistory, LogId)> {
    let mut history = EpochHistory::default();
    let mut last = LogId::ZERO;
    for id in log {
        if id.lsn != last.lsn + 1 || id.epoch < last.epoch {
            return Err(format!("log entry {id} does not follow {last}").into());
        }
        history.note(*id);
        last = *id;
    }
    Ok((history, last))
}

fn log_name(entries: &[LogId]) -> String {
    let mut runs: Vec<(LogId, Lsn)> = Vec::new();
    for e in entries {
        match runs.last_mut() {
            Some((first, last)) if first.epoch == e.epoch && *last + 1 == e.lsn => *last = e.lsn,
            _ => runs.push((*e, e.lsn)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|(first, last)| {
            if first.lsn == *last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect();
    parts.join(",")
}

fn join(set: &BTreeSet<String>) -> String {
    let v: Vec<&str> = set.iter().map(String::as_str).collect();
    format!("({})", v.join(","))
}

fn change_name(change: &Change) -> String {
    match change {
        Change::Add(n) => format!("add {n}"),
        Change::Remove(n) => format!("remove {n}"),
    }
}

fn reject_name(reject: &Reject) -> String {
    match reject {
        Reject::StaleEpoch { known } => format!("stale epoch, I know epoch {known}"),
        Reject::Gap { last } => format!("gap, my log ends at {last}"),
        Reject::Mismatch { resume } => format!("mismatch, resume after {resume}"),
        Reject::Diverged { applied } => format!("diverged at or before applied {applied}"),
        Reject::Malformed(why) => format!("malformed: {why}"),
    }
}

fn ensure_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// One test per script, named after it.
macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        /// A script added to the directory but not to the list above would never run.
        #[test]
        fn every_script_is_listed() {
            let listed = [$(stringify!($name)),*];
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR);
            for entry in std::fs::read_dir(&dir).expect("the script directory") {
                let name = entry.expect("a directory entry").file_name();
                let name = name.to_string_lossy();
                assert!(listed.contains(&name.as_ref()), "script {name} is not listed");
            }
        }
    };
}

const DIR: &str = "src/replication/testscripts";

fn run(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(DIR)
        .join(name);
    goldenscript::run(&mut Runner::default(), path).expect("goldenscript failed");
}

scripts! {
    normal_flow,
    h01_ack_of_another_epoch,
    h02_removal_waits_for_the_map,
    h03_addition_after_catch_up,
    h04_apply_bounds,
    h06_stale_primary,
    h07_old_session_ack,
    h08_ack_after_fsync,
    h09_restarted_primary_tail,
    h10_snapshot_resets_acks,
    h11_truncation,
    h12_floor,
    h13_pending_addition_goes_silent,
    h14_async_2pc_waits_for_a_replica,
    h15_commit_bound,
    catch_up_after_divergence,
    replica_truncation,
}
