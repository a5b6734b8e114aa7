#!/usr/bin/env bash
# The catch-up rate of a snapshot. Starts a 3-node ddb cluster with factor 2,
# sync: shard 1 is n1 (primary) + n2 (replica), shard 2 is n3 alone (it is
# there as the third voter of the cluster map: with two nodes, stopping one
# leaves the map without a Raft quorum, so the primary could never take n2
# out of the in-sync set and sync writes would wait for good). The nodes keep
# only LOG_RETENTION log entries for a lagging replica (DDB_LOG_RETENTION).
# The script stops the replica n2, loads ROWS rows of ~100 bytes through n1
# (about half land on shard 1, in far more entries than the retention: n1's
# log no longer reaches back to n2's last entry), restarts n2 and measures the time
# until `ddb status` shows it in sync again with no lag. n2 comes back by a
# snapshot of the shard; the script prints keys/s and MB/s, from the
# whole catch-up and from the primary's own log line about the snapshot.
# See bench/README.md ("Replication: snapshot catch-up").
#
# Environment:
#   DDB_BIN, BUILD, KEEP   as for pgbench.sh
#   ROWS           rows loaded while n2 is down (default 200000)
#   BATCH          rows per INSERT (default 500; one log entry each)
#   LOADERS        concurrent psql loaders through n1 (default 3)
#   LOG_RETENTION  DDB_LOG_RETENTION of the nodes, in entries (default 50)
#   ACK_TIMEOUT_MS replication.ack_timeout_ms (default 1000)
#   CATCHUP_TIMEOUT seconds allowed for n2 to get back in sync (default 600)
#   LOAD_TIMEOUT   seconds allowed for each loader (default 900)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$SCRIPT_DIR/lib.sh"
LOG_TAG=catchup
CLUSTER_DESC="the ddb cluster"
KILL_CHILD_TREES=1

ROWS=${ROWS:-200000}
BATCH=${BATCH:-500}
LOADERS=${LOADERS:-3}
LOG_RETENTION=${LOG_RETENTION:-50}
ACK_TIMEOUT_MS=${ACK_TIMEOUT_MS:-1000}
CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-600}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-900}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
DEADLINE=30
CLIENTS=1 JOBS=1

require_positive_ints ROWS BATCH LOADERS LOG_RETENTION ACK_TIMEOUT_MS CATCHUP_TIMEOUT LOAD_TIMEOUT
# Each INSERT writes to both shards (one log entry on shard 1).
(( ROWS / BATCH > 2 * LOG_RETENTION )) \
    || die "ROWS/BATCH ($(( ROWS / BATCH )) entries) must be well over LOG_RETENTION ($LOG_RETENTION) for a snapshot"

find_client_tools
require_tools awk timeout uptime
find_ddb

make_tmp_dir ddb-catchup
UPTIME_BEFORE=$(uptime)
read -r -a PORTS <<<"$(pick_ports 6)"
(( ${#PORTS[@]} == 6 )) || die "could not pick free ports"
CL_RPC=("${PORTS[@]:0:3}") CL_SQL=("${PORTS[@]:3:3}")
CLUSTER_NODES=3 CLUSTER_FACTOR=2 CLUSTER_MODE=sync CLUSTER_ACK_TIMEOUT_MS=$ACK_TIMEOUT_MS
CLUSTER_ENV="DDB_LOG_RETENTION=$LOG_RETENTION"

target_conn() { echo "${CL_SQL[${2:-0}]} ddb ddb"; }
target_fail() { cluster_log_tail; die "$2"; }

# `ddb status` of node NAME as "role in_sync lsn lag keys" (from the TSV output, by column
# name); empty if the node does not answer.
node_status() { # name
    timeout 20 "$DDB" status --format tsv -c "$CLUSTER_YAML" </dev/null 2>/dev/null 3>&- \
        | awk -F'\t' -v node="$1" '
            NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
            $col["name"] == node { print $col["role"], $col["in_sync"], $col["lsn"], $col["lag"], $col["keys"] }' \
        || true
}
# Polls until n2 is in the in-sync set with no lag (and at n1's LSN); dies after SECS.
wait_in_sync() { # secs
    local t0=$SECONDS s1 s2 role sync lsn lag keys lsn1
    while :; do
        s2=$(node_status n2) s1=$(node_status n1)
        read -r role sync lsn lag keys <<<"$s2"
        lsn1=$(awk '{ print $3 }' <<<"$s1")
        if [[ ( ${sync:-} == t || ${sync:-} == true ) && ${lag:-} == 0 && -n $lsn1 && ${lsn:-} == "$lsn1" ]]; then
            return 0
        fi
        if (( SECONDS - t0 >= $1 )); then
            show_cluster_status
            target_fail ddb "n2 not back in sync after $1 s (n1: $s1; n2: ${s2:-not answering})"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- data
PAD=$(printf 'p%079d' 0)   # 80 characters: with two BIGINTs, a row of ~100 bytes
mkdir -p "$TMP/load"
awk -v rows="$ROWS" -v batch="$BATCH" -v parts="$LOADERS" -v pad="$PAD" -v dir="$TMP/load" 'BEGIN {
    for (i = 1; i <= rows; i++) {
        f = sprintf("%s/part-%d.sql", dir, int((i - 1) * parts / rows) + 1)
        if (f != last || n == batch) {
            if (last != "") printf ";\n" > last
            printf "INSERT INTO t (id, n, pad) VALUES\n" > f
            n = 0; last = f
        } else printf ",\n" > f
        printf "(%d, %d, \047%s\047)", i, i * 7, pad > f
        n++
    }
    if (last != "") printf ";\n" > last
}'

# ---------------------------------------------------------------- main
log "temp dir $TMP; ROWS=$ROWS BATCH=$BATCH LOADERS=$LOADERS LOG_RETENTION=$LOG_RETENTION"
init_cluster catchup
run_psql ddb -c "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, pad TEXT NOT NULL)" >/dev/null \
    || target_fail ddb "CREATE TABLE failed"
wait_in_sync "$DEADLINE"
show_cluster_status

log "stopping the replica n2 (ddb stop n2)"
timeout 60 "$DDB" stop -c "$CLUSTER_YAML" n2 </dev/null >/dev/null 2>"$TMP/stop-n2.err" 3>&- \
    || { cat "$TMP/stop-n2.err" >&2; target_fail ddb "ddb stop n2 failed"; }

log "loading $ROWS rows through n1 ($LOADERS loaders, $BATCH rows per INSERT) while n2 is down"
t0=$(now)
for f in "$TMP"/load/part-*.sql; do
    PSQL_TIMEOUT=$LOAD_TIMEOUT spawn_child run_psql ddb -f "$f" >/dev/null 2>"$f.err"
done
if ! wait_children; then
    cat "$TMP"/load/*.err >&2
    target_fail ddb "loading failed (exit statuses ${CHILD_RCS[*]}; 124 = over ${LOAD_TIMEOUT}s)"
fi
LOAD_S=$(elapsed "$t0")
count=$(run_psql ddb -A -t -c "SELECT count(*) FROM t") || target_fail ddb "count(*) failed"
[[ $count == "$ROWS" ]] || target_fail ddb "count(*) is '$count' after the load, expected $ROWS"
log "loaded in ${LOAD_S}s; n1: $(node_status n1)"
show_cluster_status

log "restarting n2 (ddb init) and waiting until it is in sync"
t0=$(now)
timeout 120 env "$CLUSTER_ENV" "$DDB" init -c "$CLUSTER_YAML" </dev/null >"$TMP/restart.out" 2>&1 3>&- \
    || { cat "$TMP/restart.out" >&2; target_fail ddb "ddb init (restart of n2) failed"; }
wait_in_sync "$CATCHUP_TIMEOUT"
CATCHUP_S=$(elapsed "$t0")
show_cluster_status
read -r _ _ LSN1 _ KEYS1 <<<"$(node_status n1)"
read -r _ _ LSN2 _ KEYS2 <<<"$(node_status n2)"
[[ $KEYS2 == "$KEYS1" ]] || target_fail ddb "n2 holds $KEYS2 keys, n1 $KEYS1"

# The primary's line: "replication: snapshot at (e, L) sent: B batches, N bytes in 1.23s".
SENT=$(grep -a 'snapshot at .* sent: ' "$TMP/cluster/n1/ddb.log" | tail -n 1 || true)
[[ -n $SENT ]] || target_fail ddb "n2 caught up but n1's log has no snapshot line (did it catch up from the log?)"
grep -aq 'installed a snapshot' "$TMP/cluster/n2/ddb.log" || target_fail ddb "n2's log says no snapshot was installed"
read -r BATCHES BYTES SNAP_S <<<"$(sed -E 's/.* sent: ([0-9]+) batches, ([0-9]+) bytes in ([0-9.]+)(µs|us|ms|s).*/\1 \2 \3 \4/' <<<"$SENT" \
    | awk '{ d = $3; if ($4 == "ms") d /= 1000; else if ($4 == "µs" || $4 == "us") d /= 1e6; printf "%s %s %.3f\n", $1, $2, d }')"
[[ $BYTES =~ ^[0-9]+$ ]] || target_fail ddb "could not read n1's snapshot line: $SENT"
UPTIME_AFTER=$(uptime)

rate() { awk -v a="$1" -v s="$2" -v d="${3:-1}" 'BEGIN { if (s + 0 == 0) print "-"; else printf "%.1f", a / d / s }'; }
printf 'load rows=%s batch=%s loaders=%s secs=%s rows_per_s=%s\n' "$ROWS" "$BATCH" "$LOADERS" "$LOAD_S" "$(rate "$ROWS" "$LOAD_S")"
printf 'catchup secs=%s keys=%s keys_per_s=%s MB_per_s=%s (restart of n2 until in sync, lag 0, lsn %s)\n' \
    "$CATCHUP_S" "$KEYS2" "$(rate "$KEYS2" "$CATCHUP_S")" "$(rate "$BYTES" "$CATCHUP_S" 1000000)" "$LSN2"
printf 'snapshot batches=%s bytes=%s secs=%s keys_per_s=%s MB_per_s=%s (n1: %s)\n' \
    "$BATCHES" "$BYTES" "$SNAP_S" "$(rate "$KEYS2" "$SNAP_S")" "$(rate "$BYTES" "$SNAP_S" 1000000)" \
    "$(sed -E 's/.*(snapshot at)/\1/' <<<"$SENT")"
printf 'uptime_before %s\nuptime_after  %s\n' "$UPTIME_BEFORE" "$UPTIME_AFTER"
printf 'nproc=%s log_retention=%s ack_timeout_ms=%s date=%s\n' "$(nproc)" "$LOG_RETENTION" "$ACK_TIMEOUT_MS" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
