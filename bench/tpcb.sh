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
#   PG_BIN     PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   KEEP=1     keep the temp dir (logs, pgbench outputs, data) after exit
#   LOAD_TIMEOUT  seconds allowed for loading one target (default 1800)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

export LC_ALL=C
# Keep client connections plain and comparable on both sides; ignore any
# ambient libpq settings.
export PGSSLMODE=disable PGGSSENCMODE=disable
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD 2>/dev/null || true
# Likewise for the ddb command line (`ddb init/status/stop`).
unset DDB_CONFIG DDB_ADDR DDB_FORMAT 2>/dev/null || true

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

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
DEADLINE=30
CLUSTER_NODES=3

# fd 3 = the script's original stderr: progress must reach it even when a trap
# fires while stderr is redirected.
exec 3>&2
log() { printf '[tpcb %(%H:%M:%S)T] %s\n' -1 "$*" >&3; }
die() { printf '[tpcb] ERROR: %s\n' "$*" >&3; exit 1; }

# ---------------------------------------------------------------- arguments
for v in SCALE CLIENTS JOBS DURATION PROGRESS MAX_TRIES BATCH LOADERS LOAD_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
(( JOBS > CLIENTS )) && JOBS=$CLIENTS
(( CLIENTS > 45 )) && log "warning: CLIENTS=$CLIENTS is close to PostgreSQL max_connections=50"
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
PG_HINT="install PostgreSQL with: apt-get install -y postgresql postgresql-client"
if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [[ -d $PG_BIN ]] || PG_BIN=""
fi
find_tool() { # name -> path (PATH first, then $PG_BIN)
    local p
    if p=$(command -v "$1"); then printf '%s\n' "$p"
    elif [[ -n $PG_BIN && -x $PG_BIN/$1 ]]; then printf '%s\n' "$PG_BIN/$1"
    else return 1; fi
}
PSQL=$(find_tool psql) || die "psql not found; $PG_HINT"
PGBENCH=$(find_tool pgbench) || die "pgbench not found; $PG_HINT"
for tool in awk timeout tee sed uptime; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
# pgbench >= 15 is needed for --max-tries and the failed-transaction counts.
PGBENCH_MAJOR=$("$PGBENCH" --version | awk '{ split($NF, v, "."); print v[1] + 0 }')
(( PGBENCH_MAJOR >= 15 )) || die "pgbench 15 or newer is needed (found: $("$PGBENCH" --version))"
if (( RUN_PG )); then
    [[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]] \
        || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found (set PG_BIN); $PG_HINT"
    PG_ISREADY=$(find_tool pg_isready) || die "pg_isready not found; $PG_HINT"
fi

# ---------------------------------------------------------------- ddb binary
if (( RUN_DDB )); then
    DEFAULT_DDB="$REPO_ROOT/target/release/ddb"
    DDB=${DDB_BIN:-$DEFAULT_DDB}
    if [[ $DDB == "$DEFAULT_DDB" && ( $BUILD == 1 || ! -x $DDB ) ]]; then
        command -v cargo >/dev/null || die "$DDB missing and cargo not found"
        log "building ddb: cargo build --release (in $REPO_ROOT)"
        (cd "$REPO_ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    fi
    [[ -x $DDB ]] || die "ddb binary not found or not executable: $DDB (set DDB_BIN)"
fi

# ---------------------------------------------------------------- temp dir + cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ddb-tpcb.XXXXXX")
CHILD_PIDS=()
PGDATA="$TMP/pg/data"
CLUSTER_YAML="$TMP/cluster.yaml"
CLUSTER_STARTED=0

as_pg() { # run a PostgreSQL server command; as root, via the postgres user
    if (( EUID == 0 )); then
        (cd "$TMP" && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

cluster_log_tail() {
    local i f
    for (( i = 1; i <= CLUSTER_NODES; i++ )); do
        f="$TMP/cluster/n$i/ddb.log"
        [[ -f $f ]] || continue
        printf -- '----- last 25 lines of %s -----\n' "$f" >&2
        tail -n 25 "$f" | cut -c1-400 >&2 || true
    done
}
pg_log_tail() {
    if [[ -f $TMP/pg/postgres.log ]]; then
        printf -- '----- last 40 lines of %s -----\n' "$TMP/pg/postgres.log" >&2
        tail -n 40 "$TMP/pg/postgres.log" >&2 || true
    fi
}

# Run long client commands (load, pgbench) in the background and wait for
# them, so that INT/TERM sent to this script run the cleanup trap right away.
# spawn_child: start one (its pid goes to CHILD_PIDS);
# wait_children: wait for all of them, set CHILD_RCS (exit statuses, in start
# order) and return 0 only if all succeeded.
spawn_child() {
    "$@" &
    CHILD_PIDS+=("$!")
}
CHILD_RCS=()
wait_children() {
    local pid rc all=0
    CHILD_RCS=()
    for pid in "${CHILD_PIDS[@]}"; do
        rc=0
        wait "$pid" || rc=$?
        CHILD_RCS+=("$rc")
        (( rc == 0 )) || all=1
    done
    CHILD_PIDS=()
    return "$all"
}
run_child() {
    spawn_child "$@"
    wait_children
}
# A background child is a subshell running a pipeline (timeout, psql/pgbench,
# tee, sed): list it and all its descendants, so cleanup can stop all of them.
tree_pids() { # pid -> the pid and its descendants' pids, one per line
    local c
    echo "$1"
    command -v ps >/dev/null || return 0
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        tree_pids "$c"
    done
}

# The ddb server pids in the cluster's pid files that are still running (and
# really are a node of this run: the command line names our temp dir).
cluster_live_pids() {
    local i pid
    for (( i = 1; i <= CLUSTER_NODES; i++ )); do
        pid=$(cat "$TMP/cluster/n$i/ddb.pid" 2>/dev/null) || continue
        [[ $pid =~ ^[0-9]+$ ]] || continue
        kill -0 "$pid" 2>/dev/null || continue
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$TMP/" || continue
        echo "$pid"
    done
}
stop_cluster() {
    local pids
    log "stopping the ddb cluster (ddb stop)"
    timeout 60 "$DDB" stop -c "$CLUSTER_YAML" </dev/null >/dev/null 2>"$TMP/cluster-stop.err" 3>&- \
        || { log "warning: ddb stop failed:"; cat "$TMP/cluster-stop.err" >&2; }
    pids=$(cluster_live_pids | tr '\n' ' ')
    if [[ -n ${pids// /} ]]; then
        log "cluster nodes still running after ddb stop (pids $pids); sending SIGKILL"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null
        sleep 0.5
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    exec 2>&3
    local pid pids=()
    for pid in "${CHILD_PIDS[@]}"; do
        mapfile -t -O "${#pids[@]}" pids < <(tree_pids "$pid")
    done
    if (( ${#pids[@]} )); then
        log "stopping client processes (pids ${pids[*]})"
        kill -TERM "${pids[@]}" 2>/dev/null
    fi
    for pid in "${CHILD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    (( CLUSTER_STARTED )) && stop_cluster
    if [[ -f $PGDATA/postmaster.pid ]]; then
        log "stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 \
            || log "warning: could not stop PostgreSQL (data dir $PGDATA)"
    fi
    if [[ $KEEP == 1 ]]; then
        log "KEEP=1: temp dir kept at $TMP"
    else
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

UPTIME_BEFORE=$(uptime)
mkdir -p "$TMP/results" "$TMP/load"

# ---------------------------------------------------------------- ports
pick_ports() { # n -> n distinct free loopback ports, space-separated
    if command -v python3 >/dev/null; then
        python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()' "$1"
    else
        local out=() p
        while (( ${#out[@]} < $1 )); do
            p=$(( 20000 + RANDOM % 30000 ))
            [[ " ${out[*]} " == *" $p "* ]] && continue
            [[ -z $(ss -Hltn "sport = :$p") ]] && out+=("$p")
        done
        echo "${out[*]}"
    fi
}
read -r PG_PORT C_RPC1 C_RPC2 C_RPC3 C_SQL1 C_SQL2 C_SQL3 <<<"$(pick_ports 7)"
[[ -n $C_SQL3 ]] || die "could not pick free ports"
CL_RPC=("$C_RPC1" "$C_RPC2" "$C_RPC3")
CL_SQL=("$C_SQL1" "$C_SQL2" "$C_SQL3")

now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# ---------------------------------------------------------------- PostgreSQL
start_postgres() {
    log "starting PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT"
    mkdir -p "$TMP/pg"
    if (( EUID == 0 )); then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user; $PG_HINT"
        chmod 755 "$TMP"
        chown postgres: "$TMP/pg"
        runuser -u postgres -- test -x "$TMP" \
            || die "user postgres cannot access $TMP (set TMPDIR to a world-accessible dir such as /tmp)"
    fi
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C -N \
        >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    as_pg mkdir -p "$TMP/pg/sock"
    as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF

# --- ddb bench settings ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP/pg/sock'
max_connections = 50
fsync = on
synchronous_commit = on
EOF
    as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
local all all              trust
host  all all 127.0.0.1/32 trust
host  all all ::1/128      trust
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/pg/postgres.log" -W start >/dev/null 3>&- \
        || { pg_log_tail; die "pg_ctl start failed"; }
    local t0=$SECONDS
    until "$PG_ISREADY" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; do
        if (( SECONDS - t0 >= DEADLINE )); then
            pg_log_tail
            die "PostgreSQL not ready on 127.0.0.1:$PG_PORT after ${DEADLINE}s"
        fi
        sleep 0.3
    done
    log "PostgreSQL is ready"
}

# ---------------------------------------------------------------- ddb cluster
start_cluster() {
    local i t0 t1 rc
    log "starting a $CLUSTER_NODES-node ddb cluster ($DDB): RPC ports ${CL_RPC[*]}, SQL ports ${CL_SQL[*]}"
    {
        echo "name: tpcb"
        echo "sharding:"
        echo "  vnodes: 128"
        echo "defaults:"
        echo "  data_dir: ./cluster/{name}     # relative to this file"
        echo "nodes:"
        for (( i = 0; i < CLUSTER_NODES; i++ )); do
            echo "  - { name: n$(( i + 1 )), host: 127.0.0.1, rpc_port: ${CL_RPC[i]}, sql_port: ${CL_SQL[i]} }"
        done
    } >"$CLUSTER_YAML"
    CLUSTER_STARTED=1   # from here on, cleanup stops whatever init started
    t0=$(now)
    rc=0
    # init detaches the nodes; keep our fd 3 out of them.
    timeout 120 "$DDB" init -c "$CLUSTER_YAML" </dev/null >"$TMP/cluster-init.out" 2>"$TMP/cluster-init.err" 3>&- \
        || rc=$?
    if (( rc != 0 )); then
        cat "$TMP/cluster-init.out" "$TMP/cluster-init.err" >&2
        cluster_log_tail
        die "ddb init failed (exit status $rc)"
    fi
    sed 's/^/    /' "$TMP/cluster-init.out" >&2
    # init waits for the RPC ports and the map; wait for every SQL port too.
    for (( i = 0; i < CLUSTER_NODES; i++ )); do
        t1=$SECONDS
        until timeout 10 "$PSQL" -X -q -w -h 127.0.0.1 -p "${CL_SQL[i]}" -U ddb -d ddb -c 'SELECT 1' \
                >/dev/null 2>"$TMP/ddb-ping.err"; do
            if (( SECONDS - t1 >= DEADLINE )); then
                cat "$TMP/ddb-ping.err" >&2
                cluster_log_tail
                die "cluster node n$(( i + 1 )) SQL port 127.0.0.1:${CL_SQL[i]} not answering 'SELECT 1' after ${DEADLINE}s"
            fi
            sleep 0.3
        done
    done
    log "cluster is ready (init and SQL ports took $(elapsed "$t0")s; pids $(cluster_live_pids | tr '\n' ' '))"
}

# ---------------------------------------------------------------- targets
target_conn() { # target [node index, ddb only; default 0] -> "port user dbname"
    case $1 in
        postgres) echo "$PG_PORT postgres postgres" ;;
        ddb) echo "${CL_SQL[${2:-0}]} ddb ddb" ;;
    esac
}
target_fail() { # target message
    case $1 in
        ddb) cluster_log_tail ;;
        *) pg_log_tail ;;
    esac
    die "$2"
}
run_psql_at() { # target node psql-args...  (time limit: $PSQL_TIMEOUT seconds, default 300)
    local port user db
    read -r port user db <<<"$(target_conn "$1" "$2")"
    shift 2
    timeout "${PSQL_TIMEOUT:-300}" "$PSQL" -X -w -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -p "$port" -U "$user" -d "$db" "$@"
}
run_psql() { # target psql-args...  (ddb: through node n1)
    local target=$1
    shift
    run_psql_at "$target" 0 "$@"
}
query_value() { # target node sql -> the single value (dies on error)
    local out
    out=$(run_psql_at "$1" "$2" -A -t -c "$3" 2>"$TMP/query.err") \
        || { cat "$TMP/query.err" >&2; target_fail "$1" "query on $1 failed: $3"; }
    printf '%s\n' "$out"
}

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
        log "$target: loading $ACCOUNTS accounts ($BATCH rows per INSERT, ${#files[@]} concurrent psql over the $CLUSTER_NODES nodes)"
    else
        log "$target: loading $ACCOUNTS accounts ($BATCH rows per INSERT, ${#files[@]} concurrent psql)"
    fi
    for (( k = 0; k < ${#files[@]}; k++ )); do
        node=0
        [[ $target == ddb ]] && node=$(( k % CLUSTER_NODES ))
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
        "$DDB" status -c "$CLUSTER_YAML" </dev/null 2>&1 3>&- | sed 's/^/    /' >&2 || true
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
    local i c j out tps lat ok failed ser dl bad=0
    local -a clients=() outs=() nodes=() rcs=() parts=()
    for (( i = 0; i < CLUSTER_NODES; i++ )); do
        c=$(( CLIENTS / CLUSTER_NODES + (i < CLIENTS % CLUSTER_NODES ? 1 : 0) ))
        (( c > 0 )) || continue
        j=$(( JOBS < c ? JOBS : c ))
        out="$TMP/results/ddb-n$(( i + 1 )).txt"
        clients+=("$c") outs+=("$out") nodes+=("n$(( i + 1 ))")
        spawn_child pgbench_run "ddb n$(( i + 1 ))" "${CL_SQL[i]}" ddb ddb "$c" "$j" "$out"
    done
    DDB_SPLIT=$(IFS=+; echo "${clients[*]}")
    log "pgbench tpcb on ddb: $CLIENTS clients in all ($DDB_SPLIT on ${nodes[*]}), ${DURATION}s"
    wait_children || true
    rcs=("${CHILD_RCS[@]}")
    for (( i = 0; i < ${#outs[@]}; i++ )); do
        if (( rcs[i] != 0 )); then
            log "pgbench on ddb node ${nodes[i]} failed (exit status ${rcs[i]}):"
            cat "${outs[i]}" >&2
            (( rcs[i] == 124 )) && log "pgbench did not finish within ${PGBENCH_LIMIT}s"
            bad=1
        fi
    done
    (( bad == 0 )) || target_fail ddb "pgbench on ddb failed (exit statuses ${rcs[*]})"
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
log "temp dir $TMP; SCALE=$SCALE ($ACCOUNTS accounts) CLIENTS=$CLIENTS JOBS=$JOBS DURATION=${DURATION}s MAX_TRIES=$MAX_TRIES TARGETS='$TARGETS'"
(( RUN_PG )) && start_postgres
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
(( RUN_PG )) && printf 'postgres_vacuum_analyze_s=%s\n' "$VACUUM_SECS"
printf 'uptime_before %s\n' "$UPTIME_BEFORE"
printf 'uptime_after  %s\n' "$UPTIME_AFTER"
printf 'nproc=%s scale=%s accounts=%s clients=%s%s jobs=%s duration=%ss max_tries=%s date=%s\n' \
    "$(nproc)" "$SCALE" "$ACCOUNTS" "$CLIENTS" "${DDB_SPLIT:+ (ddb: $DDB_SPLIT)}" "$JOBS" "$DURATION" "$MAX_TRIES" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
if (( CHECK_FAILED )); then
    die "consistency check failed (see the check_* lines above; rerun with KEEP=1 to inspect)"
fi
