#!/usr/bin/env bash
# TPC-B-like benchmark (pgbench's standard "tpcb-like" transaction, run with
# `pgbench -n -f tpcb.sql`) against a 3-node ddb cluster on this machine and a
# throwaway local PostgreSQL, in the same run. Prints TPS, average latency and
# the ratio ddb/PostgreSQL, and for ddb the share of transactions committed
# with two-phase commit and the average time of each 2PC step.
# See bench/README.md ("TPC-B").
#
# Environment:
#   DDB_BIN    ddb binary (default: <repo>/target/release/ddb, built if missing)
#   BUILD=1    run `cargo build --release` even if the default binary exists
#   TARGETS    space-separated subset of "postgres ddb" (default: both)
#   SCALE      pgbench scale: SCALE branches, 10*SCALE tellers, 100000*SCALE accounts (default 10)
#   CLIENTS    pgbench clients (default 8); on ddb, in all over the 3 nodes
#   JOBS       pgbench threads (default 2, capped at CLIENTS); on ddb, per
#              pgbench process (one per node), capped at its clients
#   DURATION   seconds per pgbench run (default 20)
#   PROGRESS   pgbench -P interval in seconds (default 5)
#   MAX_TRIES  pgbench --max-tries (default 1 = pgbench's default: a
#              serialization failure or deadlock fails the transaction)
#   BATCH      rows per INSERT statement when loading accounts (default 1000)
#   LOADERS    concurrent psql processes loading accounts (default 3)
#   PG_STANDBY none | sync | async (default none): give PostgreSQL a streaming
#              standby on this machine, synchronous (the primary waits for
#              the standby's flush) or asynchronous, as the baseline of a
#              replicated ddb shard
#   FACTOR     copies of each ddb shard (default 1): the cluster has 3 shards,
#              so 3*FACTOR nodes; clients and loaders are spread over the
#              three primaries (n1, n(1+FACTOR), n(1+2*FACTOR))
#   MODE       ddb replication mode with FACTOR > 1: sync | async (default sync)
#   PG_BIN     PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   KEEP=1     keep the temp dir (logs, pgbench outputs, data) after exit
#   LOAD_TIMEOUT  seconds allowed for loading one target (default 1800)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# Shared setup and helpers (environment, logging, tools, cleanup, PostgreSQL,
# the ddb cluster), the same as pgbench.sh's: see lib.sh.
# shellcheck source=SCRIPTDIR/lib.sh
. "$SCRIPT_DIR/lib.sh"
LOG_TAG=tpcb
CLUSTER_DESC="the ddb cluster"
KILL_CHILD_TREES=1   # a child is a pipeline (timeout, psql/pgbench, tee, sed): stop all of it

TARGETS=${TARGETS:-"postgres ddb"}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
DURATION=${DURATION:-20}
PROGRESS=${PROGRESS:-5}
MAX_TRIES=${MAX_TRIES:-1}
BATCH=${BATCH:-1000}
LOADERS=${LOADERS:-3}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-1800}
PG_STANDBY=${PG_STANDBY:-none}
FACTOR=${FACTOR:-1}
MODE=${MODE:-sync}
DEADLINE=30

# ---------------------------------------------------------------- arguments
require_positive_ints SCALE CLIENTS JOBS DURATION PROGRESS MAX_TRIES BATCH LOADERS LOAD_TIMEOUT FACTOR
(( FACTOR <= 5 )) || die "FACTOR must be 1 to 5 (got $FACTOR)"
case $MODE in sync|async) ;; *) die "MODE must be sync or async (got '$MODE')" ;; esac
CLUSTER_NODES=$(( 3 * FACTOR ))
CLUSTER_FACTOR=$FACTOR CLUSTER_MODE=$MODE
check_clients_jobs
case $PG_STANDBY in none|sync|async) ;; *) die "PG_STANDBY must be none, sync or async (got '$PG_STANDBY')" ;; esac
(( SCALE > 21474 )) && die "SCALE=$SCALE overflows INT account ids"
BRANCHES=$SCALE
TELLERS=$(( 10 * SCALE ))
ACCOUNTS=$(( 100000 * SCALE ))

RUN_PG=0 RUN_DDB=0
for t in $TARGETS; do
    case $t in
        postgres) RUN_PG=1 ;;
        ddb) RUN_DDB=1 ;;
        *) die "unknown target '$t' in TARGETS (expected: postgres ddb)" ;;
    esac
done
(( RUN_PG + RUN_DDB > 0 )) || die "TARGETS is empty"

# ---------------------------------------------------------------- tools
find_client_tools
require_tools awk timeout tee sed uptime
# pgbench >= 15 is needed for --max-tries and the failed-transaction counts.
PGBENCH_MAJOR=$("$PGBENCH" --version | awk '{ split($NF, v, "."); print v[1] + 0 }')
(( PGBENCH_MAJOR >= 15 )) || die "pgbench 15 or newer is needed (found: $("$PGBENCH" --version))"
if (( RUN_PG )); then
    find_pg_server
fi

# ---------------------------------------------------------------- ddb binary
if (( RUN_DDB )); then
    find_ddb
fi

# ---------------------------------------------------------------- temp dir + cleanup
make_tmp_dir ddb-tpcb

UPTIME_BEFORE=$(uptime)
mkdir -p "$TMP/results" "$TMP/load"

# ---------------------------------------------------------------- ports
read -r -a PORTS <<<"$(pick_ports $(( 2 + 2 * CLUSTER_NODES )))"
(( ${#PORTS[@]} == 2 + 2 * CLUSTER_NODES )) || die "could not pick free ports"
PG_PORT=${PORTS[0]} PG_STANDBY_PORT=${PORTS[1]}
CL_RPC=("${PORTS[@]:2:CLUSTER_NODES}")
CL_SQL=("${PORTS[@]:2+CLUSTER_NODES:CLUSTER_NODES}")

# ---------------------------------------------------------------- ddb cluster
start_cluster() {
    log "starting a $CLUSTER_NODES-node ddb cluster ($DDB): RPC ports ${CL_RPC[*]}, SQL ports ${CL_SQL[*]}"
    init_cluster tpcb
}

# The targets (postgres, ddb) are lib.sh's pg_ddb_targets.
pg_ddb_targets

# ---------------------------------------------------------------- schema, data, script
# The same DDL on both systems: pgbench's own tables (`pgbench -i`), with the
# primary keys declared inline (ddb has no ALTER TABLE ... ADD PRIMARY KEY) and
# pgbench_history without one, as in pgbench (ddb gives a table without a
# primary key a hidden row id).
cat >"$TMP/load/schema.sql" <<'EOF'
CREATE TABLE pgbench_branches (bid INT NOT NULL PRIMARY KEY, bbalance INT, filler CHAR(88));
CREATE TABLE pgbench_tellers (tid INT NOT NULL PRIMARY KEY, bid INT, tbalance INT, filler CHAR(84));
CREATE TABLE pgbench_accounts (aid INT NOT NULL PRIMARY KEY, bid INT, abalance INT, filler CHAR(84));
CREATE TABLE pgbench_history (tid INT, bid INT, aid INT, delta INT, mtime TIMESTAMP, filler CHAR(22));
EOF
# Rows as `pgbench -i` makes them: branches and tellers with a NULL filler,
# accounts with an empty (blank-padded) one, all balances 0, history empty.
awk -v nb="$BRANCHES" -v nt="$TELLERS" -v batch="$BATCH" 'BEGIN {
    for (i = 1; i <= nb; i++) {
        if ((i - 1) % batch == 0) print "INSERT INTO pgbench_branches (bid, bbalance) VALUES"
        printf "(%d, 0)%s\n", i, (i % batch == 0 || i == nb) ? ";" : ","
    }
    for (i = 1; i <= nt; i++) {
        if ((i - 1) % batch == 0) print "INSERT INTO pgbench_tellers (tid, bid, tbalance) VALUES"
        printf "(%d, %d, 0)%s\n", i, int((i - 1) / 10) + 1, (i % batch == 0 || i == nt) ? ";" : ","
    }
}' >"$TMP/load/small.sql"
# Accounts: LOADERS files of consecutive aids, BATCH rows per INSERT.
awk -v rows="$ACCOUNTS" -v batch="$BATCH" -v parts="$LOADERS" -v dir="$TMP/load" 'BEGIN {
    per = int((rows + parts - 1) / parts)
    for (k = 1; k <= parts; k++) {
        lo = (k - 1) * per + 1; hi = k * per; if (hi > rows) hi = rows
        if (lo > hi) break
        f = sprintf("%s/accounts-%d.sql", dir, k)
        for (i = lo; i <= hi; i++) {
            if ((i - lo) % batch == 0) print "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES" > f
            printf "(%d, %d, 0, \047\047)%s\n", i, int((i - 1) / 100000) + 1, ((i - lo + 1) % batch == 0 || i == hi) ? ";" : "," > f
        }
        close(f)
    }
}'
# pgbench's built-in "tpcb-like" script, verbatim (`pgbench --show-script=tpcb-like`).
cat >"$TMP/tpcb.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
EOF

declare -A LOAD_SECS
VACUUM_SECS=-
load_target() { # target
    local target=$1 t0 secs k node check i n table want
    local -a files=()
    log "$target: creating the tables and loading $BRANCHES branches, $TELLERS tellers"
    t0=$(now)
    run_psql "$target" -f "$TMP/load/schema.sql" >/dev/null 2>"$TMP/load-$target.err" \
        || { cat "$TMP/load-$target.err" >&2; target_fail "$target" "CREATE TABLE on $target failed"; }
    run_psql "$target" -f "$TMP/load/small.sql" >/dev/null 2>"$TMP/load-$target.err" \
        || { cat "$TMP/load-$target.err" >&2; target_fail "$target" "loading branches/tellers into $target failed"; }
    for (( k = 1; k <= LOADERS; k++ )); do
        [[ -f $TMP/load/accounts-$k.sql ]] && files+=("$TMP/load/accounts-$k.sql")
    done
    if [[ $target == ddb ]]; then
        log "$target: loading $ACCOUNTS accounts ($BATCH rows per INSERT, ${#files[@]} concurrent psql through the 3 primaries of the $CLUSTER_NODES nodes)"
    else
        log "$target: loading $ACCOUNTS accounts ($BATCH rows per INSERT, ${#files[@]} concurrent psql)"
    fi
    for (( k = 0; k < ${#files[@]}; k++ )); do
        node=0
        [[ $target == ddb ]] && node=$(( (k % 3) * FACTOR ))   # a primary, as for pgbench
        PSQL_TIMEOUT=$LOAD_TIMEOUT spawn_child run_psql_at "$target" "$node" -f "${files[k]}" \
            >/dev/null 2>"$TMP/load-$target-$(( k + 1 )).err"
    done
    if ! wait_children; then
        for (( k = 0; k < ${#files[@]}; k++ )); do
            if [[ -s $TMP/load-$target-$(( k + 1 )).err ]]; then
                log "loader $(( k + 1 )) (${files[k]##*/}):"
                cat "$TMP/load-$target-$(( k + 1 )).err" >&2
            fi
        done
        log "loader exit statuses: ${CHILD_RCS[*]} (124 = took over ${LOAD_TIMEOUT}s)"
        target_fail "$target" "loading accounts into $target failed"
    fi
    secs=$(elapsed "$t0")
    LOAD_SECS[$target]=$secs
    log "$target: loaded in ${secs}s ($(awk -v r="$ACCOUNTS" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? r / s : 0) }') account rows/s)"
    if [[ $target == postgres ]]; then
        # As `pgbench -i` does after loading.
        t0=$(now)
        run_psql "$target" -c 'VACUUM ANALYZE' >/dev/null || target_fail "$target" "VACUUM ANALYZE failed"
        VACUUM_SECS=$(elapsed "$t0")
        log "$target: VACUUM ANALYZE took ${VACUUM_SECS}s"
    else
        show_cluster_status
    fi
    # Sanity checks: row counts, and a point SELECT (on ddb through every node).
    for check in "pgbench_branches $BRANCHES" "pgbench_tellers $TELLERS" "pgbench_accounts $ACCOUNTS" "pgbench_history 0"; do
        read -r table want <<<"$check"
        n=$(query_value "$target" 0 "SELECT count(*) FROM $table")
        [[ $n == "$want" ]] || target_fail "$target" "count(*) of $table on $target is '$n', expected $want"
    done
    n=1
    [[ $target == ddb ]] && n=$CLUSTER_NODES
    for (( i = 0; i < n; i++ )); do
        check=$(query_value "$target" "$i" "SELECT abalance FROM pgbench_accounts WHERE aid = $(( ACCOUNTS - i ))")
        [[ $check == 0 ]] || target_fail "$target" "point SELECT on $target returned '$check', expected '0'"
    done
}

# ---------------------------------------------------------------- ddb transaction counters
# `ddb status --txns` per node: one_phase, two_phase (commits as gateway since
# start) and prepare_ms/decide_ms/finish_ms (average ms per committed 2PC,
# since start). Sum over the nodes: commits, and the total ms of each step
# (avg * count). Prints "one two prepare_ms_total decide_ms_total finish_ms_total".
txn_counters() {
    local out="$TMP/status-txns.tsv"
    timeout 60 "$DDB" status --txns --format tsv -c "$CLUSTER_YAML" </dev/null >"$out" 2>"$TMP/status-txns.err" 3>&- \
        || { cat "$TMP/status-txns.err" "$out" >&2; target_fail ddb "ddb status --txns failed"; }
    awk -F'\t' -v want="$CLUSTER_NODES" '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        NF > 1 {
            if ($col["one_phase"] == "" || $col["two_phase"] == "") { bad = bad " " $col["name"]; next }
            nodes++
            one += $col["one_phase"]; two += $col["two_phase"]
            p += $col["prepare_ms"] * $col["two_phase"]
            d += $col["decide_ms"] * $col["two_phase"]
            f += $col["finish_ms"] * $col["two_phase"]
        }
        END {
            if (!("two_phase" in col) || nodes != want) { print "missing" bad; exit }
            printf "%d %d %.6f %.6f %.6f\n", one, two, p, d, f
        }' "$out"
}

# ---------------------------------------------------------------- pgbench
PGBENCH_LIMIT=$(( DURATION + 60 ))
pgbench_run() { # label port user db clients jobs out
    # timeout guards against a server that stops answering (pgbench would wait
    # forever); progress lines (-P) are also shown live on stderr.
    timeout "$PGBENCH_LIMIT" "$PGBENCH" -n -f "$TMP/tpcb.sql" -s "$SCALE" -c "$5" -j "$6" -T "$DURATION" \
        -P "$PROGRESS" --max-tries "$MAX_TRIES" --failures-detailed -h 127.0.0.1 -p "$2" -U "$3" "$4" </dev/null 2>&1 \
        | tee "$7" | sed -u -n "/^progress:/s/^/    [$1] /p" >&3
}
parse_pgbench() { # output-file -> "tps latency_ms processed failed serialization_failures deadlock_failures"
    awk '/^tps = / {
            if (first == "") first = $3
            if ($0 ~ /without initial connection time|excluding connections/) best = $3
        }
        /^latency average = / && lat == "" { lat = $4 }
        /^number of transactions actually processed:/ && ok == "" { ok = $6; sub(/\/.*/, "", ok) }
        /^number of failed transactions:/ && failed == "" { failed = $5 }
        /^number of serialization failures:/ && ser == "" { ser = $5 }
        /^number of deadlock failures:/ && dl == "" { dl = $5 }
        END {
            print (best != "" ? best : first), (lat != "" ? lat : "?"), (ok != "" ? ok : "?"),
                (failed != "" ? failed : 0), (ser != "" ? ser : 0), (dl != "" ? dl : 0)
        }' "$1"
}
declare -A TPS LAT OK FAILED
run_pgbench_postgres() {
    local out="$TMP/results/postgres.txt" rc=0 tps lat ok failed ser dl
    log "pgbench tpcb on postgres: $CLIENTS clients, $JOBS threads, ${DURATION}s"
    run_child pgbench_run postgres "$PG_PORT" postgres postgres "$CLIENTS" "$JOBS" "$out" || rc=$?
    if (( rc != 0 )); then
        cat "$out" >&2
        (( rc == 124 )) && log "pgbench did not finish within ${PGBENCH_LIMIT}s"
        target_fail postgres "pgbench on postgres failed (exit status $rc; output $out)"
    fi
    read -r tps lat ok failed ser dl <<<"$(parse_pgbench "$out")"
    [[ -n $tps && $ok != "?" ]] || { cat "$out" >&2; target_fail postgres "could not parse the pgbench output $out"; }
    TPS[postgres]=$tps LAT[postgres]=$lat OK[postgres]=$ok FAILED[postgres]=$failed
    log "postgres: tps=$tps latency_avg=${lat}ms ok=$ok failed=$failed (serialization $ser, deadlock $dl)"
}
# ddb: CLIENTS clients in all, split as evenly as possible over one pgbench
# process per node, all started together with the same -T. TPS = the sum;
# latency = the mean of the three averages weighted by transactions.
DDB_SPLIT=""
run_pgbench_ddb() {
    local i c j out tps lat ok failed ser dl
    local -a clients=() outs=() nodes=() parts=()
    local g
    # The gateways are the shards' primaries (n1, n1+FACTOR, ...: nodes fill shards in file
    # order and the first of each is its primary), as PostgreSQL's clients go to its primary
    # and not to its standby. (The figures of bench/README.md were taken when a replica's
    # gateway could not write keyless rows; it can now, but the clients stay on primaries.)
    for (( g = 0; g < 3; g++ )); do
        i=$(( g * FACTOR ))
        c=$(( CLIENTS / 3 + (g < CLIENTS % 3 ? 1 : 0) ))
        j=$(( JOBS < c ? JOBS : c ))
        (( c > 0 )) || continue
        out="$TMP/results/ddb-n$(( i + 1 )).txt"
        clients+=("$c") outs+=("$out") nodes+=("n$(( i + 1 ))")
        spawn_child pgbench_run "ddb n$(( i + 1 ))" "${CL_SQL[i]}" ddb ddb "$c" "$j" "$out"
    done
    DDB_SPLIT=$(IFS=+; echo "${clients[*]}")
    log "pgbench tpcb on ddb: $CLIENTS clients in all ($DDB_SPLIT on ${nodes[*]}), ${DURATION}s"
    wait_node_pgbenches ddb "pgbench on ddb" "pgbench on ddb" "${outs[@]}"
    local sum_tps=0 sum_latw=0 sum_ok=0 sum_failed=0 sum_ser=0 sum_dl=0
    for (( i = 0; i < ${#outs[@]}; i++ )); do
        read -r tps lat ok failed ser dl <<<"$(parse_pgbench "${outs[i]}")"
        [[ -n $tps && $ok != "?" && $lat != "?" ]] \
            || { cat "${outs[i]}" >&2; target_fail ddb "could not parse the pgbench output ${outs[i]}"; }
        parts+=("${nodes[i]}=${tps}tps/${lat}ms/${ok}ok/${failed}failed")
        sum_tps=$(awk -v a="$sum_tps" -v b="$tps" 'BEGIN { printf "%.6f", a + b }')
        sum_latw=$(awk -v a="$sum_latw" -v l="$lat" -v n="$ok" 'BEGIN { printf "%.6f", a + l * n }')
        sum_ok=$(( sum_ok + ok ))
        sum_failed=$(( sum_failed + failed )) sum_ser=$(( sum_ser + ser )) sum_dl=$(( sum_dl + dl ))
    done
    TPS[ddb]=$sum_tps OK[ddb]=$sum_ok FAILED[ddb]=$sum_failed
    LAT[ddb]=$(awk -v a="$sum_latw" -v n="$sum_ok" 'BEGIN { if (n > 0) printf "%.3f", a / n; else print "?" }')
    log "ddb: tps=$(num 1 "$sum_tps") latency_avg=${LAT[ddb]}ms ok=$sum_ok failed=$sum_failed (serialization $sum_ser, deadlock $sum_dl) (per node: ${parts[*]})"
}

num() { # precision value -> formatted value ("-" / "?" passed through)
    awk -v p="$1" -v x="$2" 'BEGIN { if (x == "-" || x == "?" || x == "") print "-"; else printf "%.*f\n", p, x }'
}

# ---------------------------------------------------------------- consistency after the run
# TPC-B invariant: every committed transaction adds the same delta to one
# account, one teller, one branch and one history row, so the four sums are
# equal, and history has one row per committed transaction.
declare -A CHECK
CHECK_FAILED=0
check_target() { # target
    local target=$1 a t b h hn status=ok
    a=$(query_value "$target" 0 "SELECT sum(abalance) FROM pgbench_accounts")
    t=$(query_value "$target" 0 "SELECT sum(tbalance) FROM pgbench_tellers")
    b=$(query_value "$target" 0 "SELECT sum(bbalance) FROM pgbench_branches")
    h=$(query_value "$target" 0 "SELECT sum(delta) FROM pgbench_history")
    hn=$(query_value "$target" 0 "SELECT count(*) FROM pgbench_history")
    [[ -n $h ]] || h=0
    if [[ $a == "$t" && $t == "$b" && $b == "$h" ]]; then
        CHECK[$target]="balances=equal(sum=$a)"
    else
        CHECK[$target]="balances=MISMATCH(accounts=$a,tellers=$t,branches=$b,history=$h)"
        status=bad
    fi
    CHECK[$target]+=" history_rows=$hn pgbench_ok=${OK[$target]}"
    [[ $hn == "${OK[$target]}" ]] || status=bad
    [[ $status == ok ]] || CHECK_FAILED=1
    log "check $target: ${CHECK[$target]}"
}

# ---------------------------------------------------------------- main
log "temp dir $TMP; SCALE=$SCALE ($ACCOUNTS accounts) CLIENTS=$CLIENTS JOBS=$JOBS DURATION=${DURATION}s MAX_TRIES=$MAX_TRIES TARGETS='$TARGETS' PG_STANDBY=$PG_STANDBY"
(( RUN_PG )) && start_postgres
if (( RUN_PG )) && [[ $PG_STANDBY != none ]]; then start_pg_standby "$PG_STANDBY" "$PG_STANDBY_PORT"; fi
(( RUN_DDB )) && start_cluster
(( RUN_PG )) && load_target postgres
(( RUN_DDB )) && load_target ddb

if (( RUN_PG )); then
    run_pgbench_postgres
    check_target postgres
fi
if (( RUN_DDB )); then
    read -r B_ONE B_TWO B_P B_D B_F <<<"$(txn_counters)"
    [[ $B_ONE != missing ]] || target_fail ddb "ddb status --txns did not report every node:${B_TWO:-} $B_P"
    run_pgbench_ddb
    read -r A_ONE A_TWO A_P A_D A_F <<<"$(txn_counters)"
    [[ $A_ONE != missing ]] || target_fail ddb "ddb status --txns did not report every node:${A_TWO:-} $A_P"
    D_ONE=$(( A_ONE - B_ONE )) D_TWO=$(( A_TWO - B_TWO ))
    read -r SHARE P_MS D_MS F_MS <<<"$(awk -v one="$D_ONE" -v two="$D_TWO" \
        -v p="$(awk -v a="$A_P" -v b="$B_P" 'BEGIN { print a - b }')" \
        -v d="$(awk -v a="$A_D" -v b="$B_D" 'BEGIN { print a - b }')" \
        -v f="$(awk -v a="$A_F" -v b="$B_F" 'BEGIN { print a - b }')" 'BEGIN {
            printf "%s ", (one + two > 0 ? sprintf("%.2f", 100 * two / (one + two)) : "-")
            if (two > 0) printf "%.3f %.3f %.3f\n", p / two, d / two, f / two
            else print "- - -"
        }')"
    log "ddb commits during the run: one_phase=$D_ONE two_phase=$D_TWO (share ${SHARE}%)"
    check_target ddb
    CHECK[ddb]+=" commits=$(( D_ONE + D_TWO ))"
    (( D_ONE + D_TWO == OK[ddb] )) || CHECK_FAILED=1
fi
UPTIME_AFTER=$(uptime)

ratio() { # a b -> a/b
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || a == "?" || b == "?" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'
}
fmt='%-9s %10s %11s %9s %8s %9s %9s\n'
# shellcheck disable=SC2059
printf "$fmt" target tps lat_avg_ms txns_ok failed failed_% load_s
for t in postgres ddb; do
    [[ -n ${TPS[$t]:-} ]] || continue
    # shellcheck disable=SC2059
    printf "$fmt" "$t" "$(num 1 "${TPS[$t]}")" "$(num 3 "${LAT[$t]}")" "${OK[$t]}" "${FAILED[$t]}" \
        "$(awk -v o="${OK[$t]}" -v f="${FAILED[$t]}" 'BEGIN { printf "%.2f", (o + f > 0 ? 100 * f / (o + f) : 0) }')" \
        "${LOAD_SECS[$t]}"
done
if (( RUN_PG && RUN_DDB )); then
    printf 'ratio(ddb/pg) tps=%s lat_avg=%s\n' "$(ratio "${TPS[ddb]}" "${TPS[postgres]}")" "$(ratio "${LAT[ddb]}" "${LAT[postgres]}")"
fi
if (( RUN_DDB )); then
    printf 'ddb_2pc two_phase_share=%s%% two_phase=%s one_phase=%s avg_ms: prepare=%s decide=%s finish=%s\n' \
        "$SHARE" "$D_TWO" "$D_ONE" "$P_MS" "$D_MS" "$F_MS"
fi
for t in postgres ddb; do
    [[ -n ${CHECK[$t]:-} ]] && printf 'check_%s %s\n' "$t" "${CHECK[$t]}"
done
(( RUN_PG )) && printf 'postgres_vacuum_analyze_s=%s postgres_standby=%s\n' "$VACUUM_SECS" "$PG_STANDBY"
(( RUN_DDB )) && printf 'ddb_shards=3 ddb_factor=%s ddb_mode=%s\n' "$FACTOR" "$MODE"
printf 'uptime_before %s\n' "$UPTIME_BEFORE"
printf 'uptime_after  %s\n' "$UPTIME_AFTER"
printf 'nproc=%s scale=%s accounts=%s clients=%s%s jobs=%s duration=%ss max_tries=%s date=%s\n' \
    "$(nproc)" "$SCALE" "$ACCOUNTS" "$CLIENTS" "${DDB_SPLIT:+ (ddb: $DDB_SPLIT)}" "$JOBS" "$DURATION" "$MAX_TRIES" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
if (( CHECK_FAILED )); then
    die "consistency check failed (see the check_* lines above; rerun with KEEP=1 to inspect)"
fi
