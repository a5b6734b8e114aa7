#!/usr/bin/env bash
# The cost of replication on point UPDATEs: the same pgbench script
#   UPDATE t SET v = v + 1 WHERE id = :id
# against, in one run and one after the other,
#   postgres        a throwaway PostgreSQL alone (fsync=on, synchronous_commit=on)
#   postgres_sync   the same PostgreSQL once it has a synchronous standby on this machine
#   ddb_f1          a 1-node ddb cluster (one shard, factor 1)
#   ddb_f2          a 2-node ddb cluster (one shard, factor 2, replication.mode MODE)
#   ddb_f2_switch   the same cluster again while SWITCHOVERS `ddb promote` switchovers move
#                   its primary back and forth (n2, n1, n2, ...), spread over the run
#   ddb_failover    a 3-node cluster (shard 1 on n1 and n2): n1 killed (kill -9), then
#                   `ddb promote n2 --force`, timed from the command to the first write
#                   committed through n3 (FAILOVERS times, n1 restarted as a replica between)
# and prints TPS, latency, the ratios replicated/unreplicated, each switchover's write
# pause (pause_ms of `ddb promote --format json`) with their median and maximum, and each
# failover's time.
# See bench/README.md ("Replication: point UPDATEs").
#
# Environment:
#   DDB_BIN, BUILD, PG_BIN, KEEP   as for pgbench.sh
#   TARGETS    subset of "postgres ddb" (default both; each brings its two variants)
#   ROWS       rows in t (default 10000)
#   CLIENTS    pgbench clients (default 6), all on the primary (ddb: node n1)
#   JOBS       pgbench threads (default 2, capped at CLIENTS)
#   DURATION   seconds per pgbench run (default 15)
#   MODE       replication.mode of ddb_f2: sync | async (default sync)
#   SWITCHOVERS  switchovers during the ddb_f2_switch run (default 10; 0: no such run)
#   FAILOVERS  forced failovers of the ddb_failover phase (default 3; 0: no such phase)
#   LOAD_TIMEOUT  seconds allowed for loading one target (default 600)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$SCRIPT_DIR/lib.sh"
LOG_TAG=repl-update
CLUSTER_DESC="the ddb cluster"
KILL_CHILD_TREES=1

TARGETS=${TARGETS:-"postgres ddb"}
ROWS=${ROWS:-10000}
CLIENTS=${CLIENTS:-6}
JOBS=${JOBS:-2}
DURATION=${DURATION:-15}
MODE=${MODE:-sync}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-600}
SWITCHOVERS=${SWITCHOVERS:-10}
FAILOVERS=${FAILOVERS:-3}
BATCH=1000
DEADLINE=30

require_positive_ints ROWS CLIENTS JOBS DURATION LOAD_TIMEOUT
case $MODE in sync|async) ;; *) die "MODE must be sync or async (got '$MODE')" ;; esac
[[ $SWITCHOVERS =~ ^[0-9]+$ ]] || die "SWITCHOVERS must be a non-negative integer (got '$SWITCHOVERS')"
[[ $FAILOVERS =~ ^[0-9]+$ ]] || die "FAILOVERS must be a non-negative integer (got '$FAILOVERS')"
check_clients_jobs
RUN_PG=0 RUN_DDB=0
for t in $TARGETS; do
    case $t in
        postgres) RUN_PG=1 ;;
        ddb) RUN_DDB=1 ;;
        *) die "unknown target '$t' in TARGETS (expected: postgres ddb)" ;;
    esac
done
(( RUN_PG + RUN_DDB > 0 )) || die "TARGETS is empty"

find_client_tools
require_tools awk timeout uptime
(( RUN_PG )) && find_pg_server
(( RUN_DDB )) && find_ddb

make_tmp_dir ddb-repl-update
UPTIME_BEFORE=$(uptime)
mkdir -p "$TMP/results"

# PostgreSQL, its standby, then the two clusters' RPC and SQL ports (1 node, then 2).
read -r -a PORTS <<<"$(pick_ports 14)"
(( ${#PORTS[@]} == 14 )) || die "could not pick free ports"
PG_PORT=${PORTS[0]} PG_STANDBY_PORT=${PORTS[1]}
CL_RPC=() CL_SQL=() CLUSTER_NODES=0

pg_ddb_targets # target_conn, target_fail, query_value: see lib.sh

# ---------------------------------------------------------------- data + script
awk -v rows="$ROWS" -v batch="$BATCH" 'BEGIN {
    print "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL);"
    for (i = 1; i <= rows; i++) {
        if ((i - 1) % batch == 0) print "INSERT INTO t (id, v) VALUES"
        printf "(%d, 0)%s\n", i, (i % batch == 0 || i == rows) ? ";" : ","
    }
}' >"$TMP/load.sql"
cat >"$TMP/update.sql" <<EOF
\\set id random(1, $ROWS)
UPDATE t SET v = v + 1 WHERE id = :id;
EOF

load() { # target
    local t0
    log "loading $ROWS rows into $1 (batches of $BATCH)"
    t0=$(now)
    PSQL_TIMEOUT=$LOAD_TIMEOUT run_child run_psql "$1" -f "$TMP/load.sql" >/dev/null 2>"$TMP/load.err" \
        || { cat "$TMP/load.err" >&2; target_fail "$1" "loading $1 failed or took over ${LOAD_TIMEOUT}s"; }
    log "$1: loaded in $(elapsed "$t0")s"
    [[ $(query_value "$1" 0 "SELECT count(*) FROM t") == "$ROWS" ]] \
        || target_fail "$1" "count(*) on $1 is not $ROWS after the load"
}

# ---------------------------------------------------------------- pgbench
declare -A TPS LAT OK FAILED
PGBENCH_LIMIT=$(( DURATION + 60 ))
parse_pgbench() { # output-file -> "tps latency processed failed"
    awk '/^tps = / { if (tps == "" || $0 ~ /without initial connection time/) tps = $3 }
        /^latency average = / && lat == "" { lat = $4 }
        /^number of transactions actually processed/ { split($0, a, /: /); split(a[2], b, "/"); ok = b[1] }
        /^number of failed transactions/ { split($0, a, /: /); split(a[2], b, " "); failed = b[1] }
        END { print (tps != "" ? tps : "?"), (lat != "" ? lat : "?"), (ok != "" ? ok : "?"), (failed != "" ? failed : 0) }' "$1"
}
SUM_EXPECTED=0
run_update() { # target label
    local target=$1 label=$2 port user db out rc tps lat ok failed sum
    read -r port user db <<<"$(target_conn "$target" 0)"
    out="$TMP/results/$label.txt"
    log "pgbench update on $label: $CLIENTS clients, $JOBS threads, ${DURATION}s"
    rc=0
    run_child timeout "$PGBENCH_LIMIT" "$PGBENCH" -n -f "$TMP/update.sql" -c "$CLIENTS" -j "$JOBS" \
        -T "$DURATION" -h 127.0.0.1 -p "$port" -U "$user" "$db" </dev/null >"$out" 2>&1 || rc=$?
    if (( rc != 0 )); then
        cat "$out" >&2
        target_fail "$target" "pgbench on $label failed (exit status $rc; 124 = over ${PGBENCH_LIMIT}s)"
    fi
    read -r tps lat ok failed <<<"$(parse_pgbench "$out")"
    [[ $tps != "?" && $ok != "?" ]] || { cat "$out" >&2; target_fail "$target" "no tps in pgbench's output for $label"; }
    # Every successful UPDATE added 1 to one row: the sum must be exactly their count.
    SUM_EXPECTED=$(( SUM_EXPECTED + ok ))
    sum=$(query_value "$target" 0 "SELECT sum(v) FROM t")
    [[ $sum == "$SUM_EXPECTED" ]] \
        || target_fail "$target" "$label: sum(v) is '$sum', expected $SUM_EXPECTED (successful updates so far)"
    TPS[$label]=$tps LAT[$label]=$lat OK[$label]=$ok FAILED[$label]=$failed
    log "$label: tps=$tps latency_avg=${lat}ms ok=$ok failed=$failed (sum(v) checked: $sum)"
}

# ---------------------------------------------------------------- switchovers
PAUSES=() SWITCH_FAILED=0
# Runs SWITCHOVERS switchovers, one every DURATION/(SWITCHOVERS+1) seconds, while pgbench runs;
# each `ddb promote` prints its JSON row into $TMP/switch.json (one line per switchover).
switch_loop() {
    local i to gap
    gap=$(awk -v d="$DURATION" -v n="$SWITCHOVERS" 'BEGIN { printf "%.3f", d / (n + 1) }')
    for (( i = 0; i < SWITCHOVERS; i++ )); do
        sleep "$gap"
        to=n$(( i % 2 == 0 ? 2 : 1 ))
        if ! timeout 60 "$DDB" promote "$to" -c "$CLUSTER_YAML" --format json \
                </dev/null >>"$TMP/switch.json" 2>>"$TMP/switch.err" 3>&-; then
            echo "FAILED $to" >>"$TMP/switch.json"
        fi
    done
}
switch_run() { # label
    local line pause
    : >"$TMP/switch.json"
    switch_loop &
    local loop=$!
    run_update ddb "$1"
    wait "$loop" || true
    while IFS= read -r line; do
        if [[ $line == FAILED* ]]; then
            SWITCH_FAILED=$(( SWITCH_FAILED + 1 ))
            continue
        fi
        pause=$(sed -n 's/.*"pause_ms":\([0-9]*\).*/\1/p' <<<"$line")
        [[ -n $pause ]] && PAUSES+=("$pause")
    done <"$TMP/switch.json"
    (( SWITCH_FAILED == 0 )) || { cat "$TMP/switch.err" >&2; log "$SWITCH_FAILED switchovers failed"; }
    log "$1: ${#PAUSES[@]} switchovers, pauses (ms): ${PAUSES[*]}"
}

# ---------------------------------------------------------------- failovers
FAILOVER_MS=() FAILOVER_PAUSE=()
# A 3-node cluster, factor 2 (shard 1 on n1 and n2, shard 2 on n3 alone; all three vote in
# the map, so it keeps its quorum without n1). Each round: kill -9 the primary of shard 1,
# `ddb promote OTHER --force`, then an UPDATE of a shard-1 row through n3 until one commits;
# then the dead node is started again (ddb init) and rejoins as a replica.
failover_phase() {
    local round dead target t0 ms row pid
    CLUSTER_NODES=3 CLUSTER_FACTOR=2 CLUSTER_MODE=sync
    CL_RPC=("${PORTS[@]:8:3}")
    CL_SQL=("${PORTS[@]:11:3}")
    log "starting a ddb cluster of 3 nodes, factor 2, for $FAILOVERS forced failovers"
    init_cluster "repl-update-failover"
    SUM_EXPECTED=0
    load ddb
    log "probe row of shard 1: id $(failover_key)"
    dead=n1 target=n2
    for (( round = 0; round < FAILOVERS; round++ )); do
        pid=$(cat "$TMP/cluster/$dead/ddb.pid")
        kill -KILL "$pid"
        sleep 0.2
        t0=$(now)
        row=$(timeout 60 "$DDB" promote "$target" --force -c "$CLUSTER_YAML" --format json \
            </dev/null 2>"$TMP/failover.err" 3>&-) \
            || { cat "$TMP/failover.err" >&2; die "ddb promote $target --force failed"; }
        # The first write committed on shard 1 after the command started.
        until run_psql_at ddb 2 -c "UPDATE t SET v = v + 1 WHERE id = $(failover_key)" >/dev/null 2>&1; do
            sleep 0.005
        done
        ms=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%d", (b - a) * 1000 }')
        SUM_EXPECTED=$(( SUM_EXPECTED + 1 ))
        FAILOVER_MS+=("$ms")
        FAILOVER_PAUSE+=("$(sed -n 's/.*"pause_ms":\([0-9]*\).*/\1/p' <<<"$row")")
        log "failover $round: $dead killed, $target promoted: first committed write after ${ms} ms ($row)"
        timeout 120 "$DDB" init -c "$CLUSTER_YAML" </dev/null >/dev/null 2>"$TMP/failover-init.err" 3>&- \
            || { cat "$TMP/failover-init.err" >&2; die "ddb init (restarting $dead) failed"; }
        # Wait until the old primary is back in the in-sync set before the next round.
        local t1=$SECONDS
        until "$DDB" status -c "$CLUSTER_YAML" --format tsv </dev/null 2>/dev/null 3>&- \
                | awk -F'\t' -v n="$dead" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "in_sync") c = i; next }
                    c && $1 == n && $c == "t" { ok = 1 } END { exit !ok }'; do
            (( SECONDS - t1 < 60 )) || die "$dead did not rejoin the in-sync set within 60 s"
            sleep 0.2
        done
        local swap=$dead; dead=$target; target=$swap
    done
    [[ $(query_value ddb 2 "SELECT sum(v) FROM t") == "$SUM_EXPECTED" ]] \
        || target_fail ddb "after the failovers sum(v) is not $SUM_EXPECTED"
    show_cluster_status
    stop_cluster
    CLUSTER_STARTED=0
    rm -rf -- "$TMP/cluster"
}
# An id of table t on shard 1 (the failovers' shard), found with ddb ring --key.
FAILOVER_KEY=""
failover_key() {
    local k s
    if [[ -z $FAILOVER_KEY ]]; then
        for (( k = 1; k <= 50; k++ )); do
            s=$("$DDB" ring -c "$CLUSTER_YAML" --key "$k" --table t --format json </dev/null 2>/dev/null 3>&- \
                | sed -n 's/.*"shard":\([0-9]*\).*/\1/p')
            if [[ $s == 1 ]]; then FAILOVER_KEY=$k; break; fi
        done
        [[ -n $FAILOVER_KEY ]] || FAILOVER_KEY=1
    fi
    echo "$FAILOVER_KEY"
}

# ---------------------------------------------------------------- ddb clusters
ddb_phase() { # factor label
    local factor=$1 label=$2 base
    CLUSTER_NODES=$factor CLUSTER_FACTOR=$factor CLUSTER_MODE=$MODE
    # The 1-node cluster takes ports 2-3, the 2-node one ports 4-7.
    base=$(( factor == 1 ? 2 : 4 ))
    CL_RPC=("${PORTS[@]:base:factor}")
    CL_SQL=("${PORTS[@]:base+factor:factor}")
    log "starting a ddb cluster of one shard, factor $factor$( (( factor > 1 )) && echo ", mode $MODE"): SQL ports ${CL_SQL[*]}"
    init_cluster "repl-update-f$factor"
    SUM_EXPECTED=0
    load ddb
    run_update ddb "$label"
    if (( factor > 1 && SWITCHOVERS > 0 )); then
        switch_run "${label}_switch"
    fi
    show_cluster_status
    stop_cluster
    CLUSTER_STARTED=0
    rm -rf -- "$TMP/cluster"
}

# ---------------------------------------------------------------- main
log "temp dir $TMP; ROWS=$ROWS CLIENTS=$CLIENTS JOBS=$JOBS DURATION=${DURATION}s TARGETS='$TARGETS' MODE=$MODE"
if (( RUN_PG )); then
    start_postgres
    load postgres
    run_psql postgres -c 'VACUUM ANALYZE t' >/dev/null || target_fail postgres "VACUUM ANALYZE failed"
    run_update postgres postgres
    start_pg_standby sync "$PG_STANDBY_PORT"
    run_update postgres postgres_sync
fi
if (( RUN_DDB )); then
    ddb_phase 1 ddb_f1
    ddb_phase 2 ddb_f2
    (( FAILOVERS > 0 )) && failover_phase
fi
UPTIME_AFTER=$(uptime)

ratio() { awk -v a="${1:--}" -v b="${2:--}" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'; }
fmt='%-15s %10s %11s %9s %7s\n'
# shellcheck disable=SC2059
printf "$fmt" target tps lat_avg_ms txns_ok failed
for l in postgres postgres_sync ddb_f1 ddb_f2 ddb_f2_switch; do
    [[ -n ${TPS[$l]:-} ]] || continue
    # shellcheck disable=SC2059
    printf "$fmt" "$l" "$(awk -v x="${TPS[$l]}" 'BEGIN { printf "%.1f", x }')" "${LAT[$l]}" "${OK[$l]}" "${FAILED[$l]}"
done
printf 'ratios tps: postgres_sync/postgres=%s ddb_f2/ddb_f1=%s ddb_f1/postgres=%s ddb_f2/postgres_sync=%s\n' \
    "$(ratio "${TPS[postgres_sync]:-}" "${TPS[postgres]:-}")" "$(ratio "${TPS[ddb_f2]:-}" "${TPS[ddb_f1]:-}")" \
    "$(ratio "${TPS[ddb_f1]:-}" "${TPS[postgres]:-}")" "$(ratio "${TPS[ddb_f2]:-}" "${TPS[postgres_sync]:-}")"
if (( ${#PAUSES[@]} > 0 )); then
    printf 'switchovers: %s done, %s failed; pause_ms: %s; median=%s max=%s; tps ddb_f2_switch/ddb_f2=%s ddb_f2_switch/postgres_sync=%s\n' \
        "${#PAUSES[@]}" "$SWITCH_FAILED" "${PAUSES[*]}" \
        "$(printf '%s\n' "${PAUSES[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }')" \
        "$(printf '%s\n' "${PAUSES[@]}" | sort -n | tail -1)" \
        "$(ratio "${TPS[ddb_f2_switch]:-}" "${TPS[ddb_f2]:-}")" "$(ratio "${TPS[ddb_f2_switch]:-}" "${TPS[postgres_sync]:-}")"
fi
if (( ${#FAILOVER_MS[@]} > 0 )); then
    printf 'failovers (kill -9 the primary, promote --force): command to first committed write ms: %s; pause_ms reported: %s\n' \
        "${FAILOVER_MS[*]}" "${FAILOVER_PAUSE[*]}"
fi
printf 'uptime_before %s\nuptime_after  %s\n' "$UPTIME_BEFORE" "$UPTIME_AFTER"
printf 'nproc=%s rows=%s clients=%s jobs=%s duration=%ss ddb_f2_mode=%s date=%s\n' \
    "$(nproc)" "$ROWS" "$CLIENTS" "$JOBS" "$DURATION" "$MODE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
