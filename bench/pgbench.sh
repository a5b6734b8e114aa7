#!/usr/bin/env bash
# Compare ddb (one node, and a 3-node cluster on this machine) against a
# local PostgreSQL with pgbench point-select and point-update workloads on the
# same table. See bench/README.md.
#
# Environment:
#   DDB_BIN   ddb binary (default: <repo>/target/release/ddb, built if missing)
#   BUILD=1   run `cargo build --release` even if the default binary exists
#   TARGETS   space-separated subset of "postgres ddb cluster" (default: all three)
#   ROWS      rows in bench_accounts (default 100000)
#   CLIENTS   pgbench clients (default 8); on the cluster, in all over the 3 nodes
#   JOBS      pgbench threads (default 2, capped at CLIENTS); on the cluster,
#             per pgbench process (one per node), capped at its clients
#   DURATION  seconds per pgbench run (default 20)
#   PG_BIN    PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   KEEP=1    keep the temp dir (logs, pgbench outputs, data) after exit
#   LOAD_TIMEOUT  seconds allowed for loading the table into one target (default 1800)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# Shared setup and helpers (environment, logging, tools, cleanup, PostgreSQL,
# the ddb cluster): see lib.sh.
# shellcheck source=SCRIPTDIR/lib.sh
. "$SCRIPT_DIR/lib.sh"
LOG_TAG=bench
CLUSTER_DESC="the cluster"

TARGETS=${TARGETS:-"postgres ddb cluster"}
ROWS=${ROWS:-100000}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
DURATION=${DURATION:-20}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-1800}
BATCH=1000
DEADLINE=30
CLUSTER_NODES=3
CLUSTER_LOADERS=4   # concurrent psql processes loading the cluster
WORKLOADS=(select update)

# ---------------------------------------------------------------- arguments
require_positive_ints ROWS CLIENTS JOBS DURATION LOAD_TIMEOUT
check_clients_jobs

RUN_PG=0 RUN_DDB=0 RUN_CLUSTER=0
for t in $TARGETS; do
    case $t in
        postgres) RUN_PG=1 ;;
        ddb) RUN_DDB=1 ;;
        cluster) RUN_CLUSTER=1 ;;
        *) die "unknown target '$t' in TARGETS (expected: postgres ddb cluster)" ;;
    esac
done
(( RUN_PG + RUN_DDB + RUN_CLUSTER > 0 )) || die "TARGETS is empty"

# ---------------------------------------------------------------- tools
find_client_tools
require_tools awk timeout
if (( RUN_PG )); then
    find_pg_server
fi

# ---------------------------------------------------------------- ddb binary
if (( RUN_DDB || RUN_CLUSTER )); then
    find_ddb
fi

# ---------------------------------------------------------------- temp dir + cleanup
CLEANUP_HOOK=stop_ddb   # the single ddb node (lib.sh); lib.sh's cleanup does the rest
make_tmp_dir ddb-pgbench

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
mkdir -p "$TMP/scripts" "$TMP/results"

# ---------------------------------------------------------------- ports
read -r RPC_PORT SQL_PORT PG_PORT C_RPC1 C_RPC2 C_RPC3 C_SQL1 C_SQL2 C_SQL3 <<<"$(pick_ports 9)"
[[ -n $C_SQL3 ]] || die "could not pick free ports"
CL_RPC=("$C_RPC1" "$C_RPC2" "$C_RPC3")
CL_SQL=("$C_SQL1" "$C_SQL2" "$C_SQL3")

# ---------------------------------------------------------------- ddb cluster
start_cluster() {
    log "starting a $CLUSTER_NODES-node ddb cluster: RPC ports ${CL_RPC[*]}, SQL ports ${CL_SQL[*]}"
    init_cluster bench
}

# ---------------------------------------------------------------- targets
target_conn() { # target [node index, cluster only; default 0] -> "port user dbname"
    case $1 in
        postgres) echo "$PG_PORT postgres postgres" ;;
        ddb) echo "$SQL_PORT ddb ddb" ;;
        cluster) echo "${CL_SQL[${2:-0}]} ddb ddb" ;;
    esac
}
target_fail() { # target message
    case $1 in
        ddb) ddb_log_tail ;;
        cluster) cluster_log_tail ;;
        *) pg_log_tail ;;
    esac
    die "$2"
}

# ---------------------------------------------------------------- data + scripts
FILLER=$(printf 'filler%074d' 0)   # fixed 80-character string
CREATE_SQL="CREATE TABLE bench_accounts (aid INT PRIMARY KEY, abalance INT NOT NULL, filler TEXT);"
LOAD_SQL="$TMP/load.sql"
if (( RUN_PG || RUN_DDB )); then
    awk -v rows="$ROWS" -v batch="$BATCH" -v filler="$FILLER" -v create="$CREATE_SQL" 'BEGIN {
        print create
        for (i = 1; i <= rows; i++) {
            if ((i - 1) % batch == 0) print "INSERT INTO bench_accounts (aid, abalance, filler) VALUES"
            printf "(%d, 0, \047%s\047)%s\n", i, filler, (i % batch == 0 || i == rows) ? ";" : ","
        }
    }' >"$LOAD_SQL"
fi
# The cluster refuses a statement that writes to two or more shards (no
# two-phase commit yet), so it gets one single-row INSERT per statement (each
# its own transaction), in CLUSTER_LOADERS files of consecutive keys.
if (( RUN_CLUSTER )); then
    awk -v rows="$ROWS" -v parts="$CLUSTER_LOADERS" -v filler="$FILLER" -v dir="$TMP" 'BEGIN {
        for (i = 1; i <= rows; i++) {
            f = sprintf("%s/load-cluster-%d.sql", dir, int((i - 1) * parts / rows) + 1)
            printf "INSERT INTO bench_accounts VALUES (%d, 0, \047%s\047);\n", i, filler > f
        }
    }'
fi

cat >"$TMP/scripts/select.sql" <<EOF
\\set aid random(1, $ROWS)
SELECT abalance FROM bench_accounts WHERE aid = :aid;
EOF
cat >"$TMP/scripts/update.sql" <<EOF
\\set aid random(1, $ROWS)
\\set delta random(-5000, 5000)
UPDATE bench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
EOF

declare -A LOAD_SECS
load_cluster() {
    local t0 secs k node failed=0
    log "cluster: creating bench_accounts through n1"
    run_psql cluster -c "$CREATE_SQL" >/dev/null 2>"$TMP/load-cluster.err" \
        || { cat "$TMP/load-cluster.err" >&2; target_fail cluster "CREATE TABLE on the cluster failed"; }
    log "loading $ROWS rows into cluster (single-row INSERTs, $CLUSTER_LOADERS concurrent psql over the $CLUSTER_NODES nodes)"
    t0=$(now)
    for (( k = 1; k <= CLUSTER_LOADERS; k++ )); do
        [[ -f $TMP/load-cluster-$k.sql ]] || continue   # fewer rows than loaders
        node=$(( (k - 1) % CLUSTER_NODES ))
        PSQL_TIMEOUT=$LOAD_TIMEOUT spawn_child run_psql_at cluster "$node" -f "$TMP/load-cluster-$k.sql" \
            >/dev/null 2>"$TMP/load-cluster-$k.err"
    done
    if ! wait_children; then
        for (( k = 1; k <= CLUSTER_LOADERS; k++ )); do
            if [[ -s $TMP/load-cluster-$k.err ]]; then
                log "loader $k (load-cluster-$k.sql, node n$(( (k - 1) % CLUSTER_NODES + 1 ))):"
                cat "$TMP/load-cluster-$k.err" >&2
            fi
        done
        log "loader exit statuses: ${CHILD_RCS[*]} (124 = took over ${LOAD_TIMEOUT}s)"
        target_fail cluster "loading data into the cluster failed"
    fi
    secs=$(elapsed "$t0")
    LOAD_SECS[cluster]=$secs
    log "cluster: loaded $ROWS rows in ${secs}s ($(awk -v r="$ROWS" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? r / s : 0) }') rows/s)"
    show_cluster_status
}

load_target() { # target
    local target=$1 t0 secs check i n
    if [[ $target == cluster ]]; then
        load_cluster
    else
        log "loading $ROWS rows into $target (batches of $BATCH)"
        t0=$(now)
        PSQL_TIMEOUT=$LOAD_TIMEOUT run_child run_psql "$target" -f "$LOAD_SQL" \
            >/dev/null 2>"$TMP/load-$target.err" \
            || { cat "$TMP/load-$target.err" >&2
                 target_fail "$target" "loading data into $target failed or took over ${LOAD_TIMEOUT}s"; }
        secs=$(elapsed "$t0")
        LOAD_SECS[$target]=$secs
        log "$target: loaded $ROWS rows in ${secs}s"
    fi
    if [[ $target == postgres ]]; then
        t0=$(now)
        run_psql "$target" -c 'VACUUM ANALYZE bench_accounts' >/dev/null \
            || target_fail "$target" "VACUUM ANALYZE failed"
        log "$target: VACUUM ANALYZE took $(elapsed "$t0")s"
    fi
    # Sanity checks: the row count, and the benchmark's own query shape (on
    # the cluster through every node).
    check=$(run_psql "$target" -A -t -c "SELECT count(*) FROM bench_accounts" 2>"$TMP/check.err") \
        || { cat "$TMP/check.err" >&2; target_fail "$target" "count(*) on $target failed"; }
    [[ $check == "$ROWS" ]] || target_fail "$target" "count(*) on $target returned '$check', expected '$ROWS'"
    n=1
    [[ $target == cluster ]] && n=$CLUSTER_NODES
    for (( i = 0; i < n; i++ )); do
        check=$(run_psql_at "$target" "$i" -A -t -c "SELECT abalance FROM bench_accounts WHERE aid = $(( ROWS - i ))" 2>"$TMP/check.err") \
            || { cat "$TMP/check.err" >&2; target_fail "$target" "sanity query on $target failed"; }
        [[ $check == 0 ]] || target_fail "$target" "sanity query on $target returned '$check', expected '0'"
    done
}

# ---------------------------------------------------------------- pgbench
declare -A TPS LAT
PGBENCH_LIMIT=$(( DURATION + 60 ))
pgbench_cmd() { # workload port user db clients jobs
    # timeout guards against a server that stops answering (pgbench would wait forever)
    timeout "$PGBENCH_LIMIT" "$PGBENCH" -n -f "$TMP/scripts/$1.sql" -c "$5" -j "$6" -T "$DURATION" \
        -h 127.0.0.1 -p "$2" -U "$3" "$4" </dev/null
}
parse_pgbench() { # output-file -> "tps latency failed" (latency/failed may be "?")
    awk '/^tps = / {
            if (first == "") first = $3
            if ($0 ~ /without initial connection time|excluding connections/) best = $3
        }
        /^latency average = / && lat == "" { lat = $4 }
        /^number of failed transactions/ && failed == "" { split($0, a, /[: ]+/); failed = a[5] }
        END { print (best != "" ? best : first), (lat != "" ? lat : "?"), (failed != "" ? failed : "?") }' "$1"
}
pgbench_fail() { # target workload out rc
    cat "$3" >&2
    (( $4 == 124 )) && log "pgbench did not finish within ${PGBENCH_LIMIT}s"
    target_fail "$1" "pgbench $2 on $1 failed (exit status $4; output $3)"
}
run_pgbench() { # target workload
    local target=$1 workload=$2 port user db out rc tps lat failed
    read -r port user db <<<"$(target_conn "$target")"
    out="$TMP/results/$workload-$target.txt"
    log "pgbench $workload on $target: $CLIENTS clients, $JOBS threads, ${DURATION}s"
    rc=0
    run_child pgbench_cmd "$workload" "$port" "$user" "$db" "$CLIENTS" "$JOBS" >"$out" 2>&1 || rc=$?
    (( rc == 0 )) || pgbench_fail "$target" "$workload" "$out" "$rc"
    read -r tps lat failed <<<"$(parse_pgbench "$out")"
    if [[ -z $tps ]]; then
        cat "$out" >&2
        target_fail "$target" "could not find a 'tps = ' line in pgbench output for $workload on $target"
    fi
    if [[ $failed != "?" && $failed != 0 ]]; then
        log "warning: $failed failed transactions in $workload on $target (see $out)"
    fi
    TPS[$workload.$target]=$tps
    LAT[$workload.$target]=$lat
    log "$target $workload: tps=$tps latency_avg=${lat}ms"
}
# The cluster: CLIENTS clients in all, split as evenly as possible over one
# pgbench process per node (each node is a gateway for every row), all started
# together with the same -T. TPS = the sum; latency = the client-weighted mean.
run_pgbench_cluster() { # workload
    local workload=$1 i c j port user db out tps lat failed
    local -a clients=() outs=() nodes=()
    for (( i = 0; i < CLUSTER_NODES; i++ )); do
        read -r c j <<<"$(split_clients "$i")"
        (( c > 0 )) || continue
        read -r port user db <<<"$(target_conn cluster "$i")"
        out="$TMP/results/$workload-cluster-n$(( i + 1 )).txt"
        clients+=("$c") outs+=("$out") nodes+=("n$(( i + 1 ))")
        spawn_child pgbench_cmd "$workload" "$port" "$user" "$db" "$c" "$j" >"$out" 2>&1
    done
    log "pgbench $workload on cluster: $CLIENTS clients in all (${clients[*]} on ${nodes[*]}), ${DURATION}s"
    wait_node_pgbenches cluster "pgbench $workload on cluster" "pgbench $workload on the cluster" "${outs[@]}"
    local sum_tps=0 sum_lat=0 sum_c=0 sum_failed=0 parts=()
    for (( i = 0; i < ${#outs[@]}; i++ )); do
        read -r tps lat failed <<<"$(parse_pgbench "${outs[i]}")"
        if [[ -z $tps ]]; then
            cat "${outs[i]}" >&2
            target_fail cluster "could not find a 'tps = ' line in pgbench output for $workload on ${nodes[i]}"
        fi
        parts+=("${nodes[i]}=$tps/${lat}ms")
        sum_tps=$(awk -v a="$sum_tps" -v b="$tps" 'BEGIN { printf "%.6f", a + b }')
        if [[ $lat == "?" || $sum_lat == "?" ]]; then sum_lat="?"
        else sum_lat=$(awk -v a="$sum_lat" -v l="$lat" -v c="${clients[i]}" 'BEGIN { printf "%.6f", a + l * c }'); fi
        sum_c=$(( sum_c + clients[i] ))
        [[ $failed != "?" ]] && sum_failed=$(( sum_failed + failed ))
    done
    (( sum_failed == 0 )) || log "warning: $sum_failed failed transactions in $workload on cluster (see ${outs[*]})"
    TPS[$workload.cluster]=$sum_tps
    if [[ $sum_lat == "?" ]]; then lat="?"
    else lat=$(awk -v a="$sum_lat" -v c="$sum_c" 'BEGIN { printf "%.3f", a / c }'); fi
    LAT[$workload.cluster]=$lat
    log "cluster $workload: tps=$(num 1 "$sum_tps") latency_avg=${lat}ms (per node tps/latency: ${parts[*]})"
}

num() { # precision value -> formatted value ("-" / "?" passed through)
    awk -v p="$1" -v x="$2" 'BEGIN { if (x == "-" || x == "?") print x; else printf "%.*f\n", p, x }'
}

# ---------------------------------------------------------------- main
log "temp dir $TMP; ROWS=$ROWS CLIENTS=$CLIENTS JOBS=$JOBS DURATION=${DURATION}s TARGETS='$TARGETS'"
(( RUN_PG )) && start_postgres
(( RUN_DDB )) && start_ddb
(( RUN_CLUSTER )) && start_cluster
(( RUN_PG )) && load_target postgres
(( RUN_DDB )) && load_target ddb
(( RUN_CLUSTER )) && load_target cluster

for w in "${WORKLOADS[@]}"; do
    (( RUN_PG )) && run_pgbench postgres "$w"
    (( RUN_DDB )) && run_pgbench ddb "$w"
    (( RUN_CLUSTER )) && run_pgbench_cluster "$w"
done

LOAD_END=$(cut -d' ' -f1 /proc/loadavg)

ratio() { # tps tps-of-postgres -> a/b
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'
}
fmt='%-9s %13s %12s %14s %10s %11s %12s %18s %15s\n'
# shellcheck disable=SC2059
printf "$fmt" workload postgres_tps ddb_tps 'ratio(ddb/pg)' pg_lat_ms ddb_lat_ms \
    cluster_tps 'ratio(cluster/pg)' cluster_lat_ms
for w in "${WORKLOADS[@]}"; do
    pg_tps=${TPS[$w.postgres]:--} ddb_tps=${TPS[$w.ddb]:--} cl_tps=${TPS[$w.cluster]:--}
    pg_lat=${LAT[$w.postgres]:--} ddb_lat=${LAT[$w.ddb]:--} cl_lat=${LAT[$w.cluster]:--}
    # shellcheck disable=SC2059
    printf "$fmt" "$w" "$(num 1 "$pg_tps")" "$(num 1 "$ddb_tps")" "$(ratio "$ddb_tps" "$pg_tps")" \
        "$(num 3 "$pg_lat")" "$(num 3 "$ddb_lat")" \
        "$(num 1 "$cl_tps")" "$(ratio "$cl_tps" "$pg_tps")" "$(num 3 "$cl_lat")"
done
printf 'load_secs postgres=%s ddb=%s cluster=%s\n' \
    "${LOAD_SECS[postgres]:--}" "${LOAD_SECS[ddb]:--}" "${LOAD_SECS[cluster]:--}"
printf 'nproc=%s loadavg_1m_start=%s loadavg_1m_end=%s rows=%s clients=%s jobs=%s duration=%ss date=%s\n' \
    "$(nproc)" "$LOAD_START" "$LOAD_END" "$ROWS" "$CLIENTS" "$JOBS" "$DURATION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
