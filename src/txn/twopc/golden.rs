//! Golden-script tests of the two-phase commit cores (the scripts are in
//! `src/txn/testscripts/twopc/`).
//!
//! A script plays both deciding parts of DESIGN §7 step by step: gateways, each a
//! [`Coordinator`] for one transaction, and one anchor's [`Decisions`] table. Nothing connects
//! them but the script, which delivers each answer (or loses it) explicitly, so a script can
//! interleave a slow gateway with recovery exactly where the protocol is delicate. Time is the
//! runner's clock, moved by `tick`.
//!
//! Because the script delivers the answers, the runner checks after every command that what it
//! was told is possible: the anchor never makes two outcomes durable for one transaction (not
//! even after a record was dropped), a client told "committed" has a durable `COMMITTED`
//! record behind it, and a client told "aborted" never has one. A script that breaks one of
//! them fails, unless it expects the failure with `!`.
//!
//! Commands (`txn=` defaults to 1; shards are numbers):
//!
//! ```text
//! tick MS                                    advance the clock
//!
//! begin [txn=G] write=S… [read=S…]           a gateway starts to commit (writes in order)
//! vote [txn=G] S yes|no|lost [why=TEXT]      a participant's vote reaches the gateway
//! anchor [txn=G] committed|refused|lost [why=TEXT]
//!                                            the anchor's answer to the commit reaches it
//! ack [txn=G] S [ok=BOOL]                    a participant's answer to the commit
//! give-up [txn=G] [why=TEXT]                 the gateway gives up before the commit point
//! status [txn=G]                             the gateway's phase, votes and acks
//!
//! begin-commit [txn=G] [started=MS] [deadline=MS]
//!                                            the anchor claims the commit (compare-and-set)
//! committed [txn=G] [ok=BOOL]                the commit entry is durable (or failed)
//! resolve [txn=G]                            a participant asks the anchor for the outcome
//! aborted [txn=G] [ok=BOOL]                  the ABORTED record is durable (or failed)
//! forget [txn=G]                             drop the record
//! load [txn=G] committed|aborted [S…]        a durable record read back at startup
//! gc min-age=MS [retention=MS]               the garbage collector's candidates
//! records                                    the anchor's table
//! ```
//!
//! The default deadline and retention are the node's, [`DECISION_DEADLINE`] and
//! [`ABORTED_RETENTION`].

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{ArgumentConsumer, Command};

use super::*;
use crate::txn::distributed::{ABORTED_RETENTION, DECISION_DEADLINE};

/// One gateway's commit.
struct Gateway {
    coord: Coordinator,
    /// What the client was told, if anything yet.
    told: Option<Finish>,
    /// Whether the runner printed that the coordinator finished.
    done: bool,
}

#[derive(Default)]
struct Runner {
    now: u64,
    gateways: BTreeMap<Gid, Gateway>,
    anchor: Decisions,
    /// The first outcome the anchor made durable for each transaction, kept after its record
    /// is dropped: a later, different one is a split decision.
    durable: BTreeMap<Gid, Outcome>,
}

type Out = Result<String, Box<dyn Error>>;

impl goldenscript::Runner for Runner {
    fn run(&mut self, command: &Command) -> Out {
        let mut args = command.consume_args();
        let out = match command.name.as_str() {
            "tick" => {
                let ms: u64 = next_pos(&mut args, "milliseconds")?.parse()?;
                self.now += ms;
                format!("now={}", self.now)
            }
            "begin" => {
                let gid = txn(&mut args)?;
                let written = shards(command, &mut args, "write")?;
                let read = shards(command, &mut args, "read")?;
                if self.gateways.contains_key(&gid) {
                    return Err(format!("t{gid} already began").into());
                }
                let (coord, actions) = Coordinator::start(&written, &read);
                self.gateways.insert(
                    gid,
                    Gateway {
                        coord,
                        told: None,
                        done: false,
                    },
                );
                self.gateway_did(gid, actions)
            }
            "vote" => {
                let gid = txn(&mut args)?;
                let shard: ShardId = next_pos(&mut args, "shard")?.parse()?;
                let why = why(&mut args);
                let vote = match next_pos(&mut args, "yes, no or lost")?.as_str() {
                    "yes" => Vote::Yes,
                    "no" => Vote::No(why),
                    "lost" => Vote::Lost(why),
                    other => return Err(format!("unknown vote {other}").into()),
                };
                let actions = self.gateway(gid)?.coord.on_vote(shard, vote);
                self.gateway_did(gid, actions)
            }
            "anchor" => {
                let gid = txn(&mut args)?;
                let why = why(&mut args);
                let reply = match next_pos(&mut args, "committed, refused or lost")?.as_str() {
                    "committed" => AnchorReply::Committed,
                    "refused" => AnchorReply::Refused(why),
                    "lost" => AnchorReply::Lost(why),
                    other => return Err(format!("unknown anchor reply {other}").into()),
                };
                let actions = self.gateway(gid)?.coord.on_anchor(reply);
                self.gateway_did(gid, actions)
            }
            "ack" => {
                let gid = txn(&mut args)?;
                let shard: ShardId = next_pos(&mut args, "shard")?.parse()?;
                let ok = args.lookup_parse("ok")?.unwrap_or(true);
                let actions = self.gateway(gid)?.coord.on_commit_ack(shard, ok);
                self.gateway_did(gid, actions)
            }
            "give-up" => {
                let gid = txn(&mut args)?;
                let why = why(&mut args);
                let actions = self.gateway(gid)?.coord.abort(why);
                self.gateway_did(gid, actions)
            }
            "status" => {
                let gid = txn(&mut args)?;
                let g = self.gateway(gid)?;
                let c = &g.coord;
                let mut s = format!(
                    "t{gid} {:?} anchor=s{} participants={}",
                    c.phase,
                    c.anchor,
                    list(&c.participants())
                );
                for (shard, vote) in &c.votes {
                    write!(s, " vote(s{shard})={}", vote_name(vote))?;
                }
                for (shard, ok) in &c.acks {
                    write!(s, " ack(s{shard})={ok}")?;
                }
                if let Some(told) = &g.told {
                    write!(s, " told={}", finish_name(told))?;
                }
                s
            }
            "begin-commit" => {
                let gid = txn(&mut args)?;
                let started = args.lookup_parse("started")?;
                let deadline = args
                    .lookup_parse("deadline")?
                    .unwrap_or(DECISION_DEADLINE.as_millis() as u64);
                match self.anchor.begin_commit(gid, started, deadline, self.now) {
                    Ok(()) => format!("anchor: t{gid} claimed for commit"),
                    Err(refusal) => format!("anchor: t{gid} commit refused: {refusal:?}"),
                }
            }
            "committed" => {
                let gid = txn(&mut args)?;
                let ok = args.lookup_parse("ok")?.unwrap_or(true);
                // The request carries the participants, as the gateway knows them.
                let participants = self.gateway(gid)?.coord.participants();
                let listed = list(&participants);
                self.anchor.committed(gid, participants, ok, self.now);
                if ok {
                    self.made_durable(gid, Outcome::Committed)?;
                    format!("anchor: t{gid} COMMITTED{listed} is durable")
                } else {
                    format!("anchor: t{gid} commit entry failed")
                }
            }
            "resolve" => {
                let gid = txn(&mut args)?;
                match self.anchor.resolve(gid) {
                    Resolve::Known(outcome) => format!("anchor: t{gid} is {outcome:?}"),
                    Resolve::Pending => format!("anchor: t{gid} is being decided, ask again"),
                    Resolve::WriteAborted => format!("anchor: t{gid} has no record, write ABORTED"),
                }
            }
            "aborted" => {
                let gid = txn(&mut args)?;
                let ok = args.lookup_parse("ok")?.unwrap_or(true);
                self.anchor.aborted(gid, ok, self.now);
                if ok {
                    self.made_durable(gid, Outcome::Aborted)?;
                    format!("anchor: t{gid} ABORTED is durable")
                } else {
                    format!("anchor: t{gid} ABORTED record failed")
                }
            }
            "forget" => {
                let gid = txn(&mut args)?;
                if self.anchor.forget(gid) {
                    format!("anchor: t{gid} record deleted")
                } else {
                    format!("anchor: t{gid} has no durable record to delete")
                }
            }
            "load" => {
                let gid = txn(&mut args)?;
                let record = match next_pos(&mut args, "committed or aborted")?.as_str() {
                    "committed" => Record::Committed {
                        participants: args
                            .rest_pos()
                            .iter()
                            .map(|a| a.parse())
                            .collect::<Result<_, _>>()?,
                    },
                    "aborted" => Record::Aborted,
                    other => return Err(format!("unknown record {other}").into()),
                };
                self.made_durable(gid, record.outcome())?;
                self.anchor.load(gid, record, self.now);
                String::new()
            }
            "gc" => {
                let min_age: u64 = args.lookup_parse("min-age")?.ok_or("min-age not given")?;
                let retention = args
                    .lookup_parse("retention")?
                    .unwrap_or(ABORTED_RETENTION.as_millis() as u64);
                let mut s = String::new();
                for (gid, participants) in self.anchor.committed_older_than(min_age, self.now) {
                    writeln!(
                        s,
                        "anchor: t{gid} COMMITTED{} may go once no participant holds it prepared",
                        list(&participants)
                    )?;
                }
                for gid in self.anchor.aborted_older_than(retention, self.now) {
                    writeln!(s, "anchor: t{gid} ABORTED is past its retention")?;
                }
                if s.is_empty() {
                    s = "anchor: nothing to collect".into();
                }
                s
            }
            "records" => {
                let mut s = String::new();
                for (gid, state) in &self.anchor.records {
                    let line = match state {
                        State::Committing => "committing".to_string(),
                        State::Aborting => "aborting".to_string(),
                        State::Done {
                            record: Record::Committed { participants },
                            since,
                        } => format!("COMMITTED{} since {since}", list(participants)),
                        State::Done {
                            record: Record::Aborted,
                            since,
                        } => format!("ABORTED since {since}"),
                    };
                    writeln!(s, "anchor: t{gid} {line}")?;
                }
                if s.is_empty() {
                    s = "anchor: no records".into();
                }
                s
            }
            name => return Err(format!("unknown command {name}").into()),
        };
        args.reject_rest()?;
        self.check()?;
        Ok(ensure_newline(out))
    }
}

impl Runner {
    /// Checks, after every command, that what each client was told agrees with the anchor.
    fn check(&self) -> Result<(), Box<dyn Error>> {
        for (gid, g) in &self.gateways {
            // Only a two-phase commit has a record behind its answer.
            if g.coord.others.is_empty() {
                continue;
            }
            let durable = self.durable.get(gid);
            match (&g.told, durable) {
                (Some(Finish::Committed), Some(Outcome::Committed)) => {}
                (Some(Finish::Committed), _) => {
                    let why =
                        "the client was told committed, but the anchor has no COMMITTED record";
                    return Err(format!("t{gid}: {why}").into());
                }
                (Some(Finish::Aborted(_)), Some(Outcome::Committed)) => {
                    return Err(format!(
                        "t{gid}: the client was told aborted, but the anchor recorded COMMITTED"
                    )
                    .into())
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn gateway(&mut self, gid: Gid) -> Result<&mut Gateway, Box<dyn Error>> {
        self.gateways
            .get_mut(&gid)
            .ok_or_else(|| format!("t{gid} has not begun").into())
    }

    /// Prints the gateway's actions, and remembers what its client was told.
    fn gateway_did(&mut self, gid: Gid, actions: Vec<Action>) -> String {
        let mut s = String::new();
        for action in actions {
            let line = match &action {
                Action::CommitOnePhase(shard) => format!("s{shard} commit in one phase"),
                Action::Release(shard) => format!("s{shard} release"),
                Action::Prepare(shard) => format!("s{shard} prepare"),
                Action::CommitAnchor(shard) => format!("s{shard} commit with the COMMITTED record"),
                Action::Commit(shard) => format!("s{shard} commit"),
                Action::Abort(shard) => format!("s{shard} abort"),
                Action::Forget(shard) => format!("s{shard} forget the record"),
                Action::Finish(finish) => format!("client {}", finish_name(finish)),
            };
            let _ = writeln!(s, "t{gid} → {line}");
            if let Action::Finish(finish) = action {
                if let Some(g) = self.gateways.get_mut(&gid) {
                    g.told = Some(finish);
                }
            }
        }
        if let Some(g) = self.gateways.get_mut(&gid) {
            if g.coord.is_done() && !g.done {
                g.done = true;
                let _ = writeln!(s, "t{gid} done");
            }
        }
        s
    }

    /// Notes an outcome the anchor made durable; a different one than before is a split.
    fn made_durable(&mut self, gid: Gid, outcome: Outcome) -> Result<(), Box<dyn Error>> {
        match self.durable.get(&gid) {
            Some(&before) if before != outcome => Err(format!(
                "t{gid}: split decision, {outcome:?} made durable after {before:?}"
            )
            .into()),
            _ => {
                self.durable.insert(gid, outcome);
                Ok(())
            }
        }
    }
}

fn txn(args: &mut ArgumentConsumer) -> Result<Gid, Box<dyn Error>> {
    Ok(args.lookup_parse("txn")?.unwrap_or(1))
}

fn why(args: &mut ArgumentConsumer) -> String {
    args.lookup("why")
        .map(|a| a.value.clone())
        .unwrap_or_else(|| "no reason given".into())
}

fn next_pos(args: &mut ArgumentConsumer, what: &str) -> Result<String, Box<dyn Error>> {
    Ok(args
        .next_pos()
        .ok_or_else(|| format!("{what} not given"))?
        .value
        .clone())
}

/// Every `key=S` argument, in order (the consumer keeps only the last of repeated keys).
fn shards(
    command: &Command,
    args: &mut ArgumentConsumer,
    key: &str,
) -> Result<Vec<ShardId>, Box<dyn Error>> {
    args.lookup(key);
    command
        .args
        .iter()
        .filter(|a| a.key.as_deref() == Some(key))
        .map(|a| a.parse())
        .collect()
}

fn list(shards: &[ShardId]) -> String {
    let names: Vec<String> = shards.iter().map(|s| format!("s{s}")).collect();
    format!("({})", names.join(","))
}

fn vote_name(vote: &Vote) -> String {
    match vote {
        Vote::Yes => "yes".into(),
        Vote::No(why) => format!("no ({why})"),
        Vote::Lost(why) => format!("lost ({why})"),
    }
}

fn finish_name(finish: &Finish) -> String {
    match finish {
        Finish::Committed => "committed".into(),
        Finish::Aborted(why) => format!("aborted (40001): {why}"),
        Finish::Unknown(why) => format!("unknown (40003): {why}"),
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

const DIR: &str = "src/txn/testscripts/twopc";

fn run(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(DIR)
        .join(name);
    goldenscript::run(&mut Runner::default(), path).expect("goldenscript failed");
}

scripts! {
    commit,
    commit_one_phase,
    vote_no,
    vote_lost,
    anchor_lost,
    recovery_aborts_first,
    recovery_waits_for_commit,
    decision_deadline,
    records_expire,
    forget,
}
