# shellcheck shell=bash
# Shared code of the bench/ scripts (pgbench.sh, tpcb.sh, repl-update.sh,
# catchup.sh, ...); sourced by each (it is
# not a script of its own). Sourcing it sets up the environment and defines
# functions; the scripts call them and keep their own knobs, workloads and
# summaries. See bench/README.md.
#
# A script sets, after sourcing this file:
#   LOG_TAG        the tag of log/die lines ("[LOG_TAG HH:MM:SS] ...")
#   CLUSTER_DESC   how the log names the ddb cluster when stopping it
#   KEEP, BUILD, DEADLINE, CLIENTS, JOBS, CLUSTER_NODES, PG_PORT, CL_RPC and
#   CL_SQL (the cluster's RPC and SQL ports), CLUSTER_FACTOR and CLUSTER_MODE
#   (replication of the cluster's shards; default 1 copy), PGBENCH_LIMIT;
#   optionally CLUSTER_ACK_TIMEOUT_MS (replication.ack_timeout_ms) and
#   CLUSTER_ENV (extra NAME=VALUE words for the environment of `ddb init`,
#   which the nodes it starts inherit, e.g. DDB_LOG_RETENTION=1000)
# and defines target_conn (used by run_psql_at) and target_fail (shows the
# target's server log, then dies), or calls pg_ddb_targets for the targets
# postgres and ddb (which adds query_value). Optional:
#   KILL_CHILD_TREES=1  cleanup stops each background child's whole process
#                       tree (and logs it), not only the child itself
#   CLEANUP_HOOK        a function cleanup runs after stopping the children
#                       and before stopping the cluster and PostgreSQL

export LC_ALL=C
# Keep client connections plain and comparable on both sides; ignore any
# ambient libpq settings.
export PGSSLMODE=disable PGGSSENCMODE=disable
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD 2>/dev/null || true
# Likewise for the ddb command line (`ddb init/status/stop`).
unset DDB_CONFIG DDB_ADDR DDB_FORMAT 2>/dev/null || true

# The repository: the parent of this file's directory (bench/).
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

# fd 3 = the script's original stderr: progress must reach it even when a trap
# fires while stderr is redirected (e.g. into a pgbench output file).
exec 3>&2
LOG_TAG=bench
log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_TAG" -1 "$*" >&3; }
die() { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&3; exit 1; }

# ---------------------------------------------------------------- arguments
require_positive_ints() { # VAR... -> dies unless each is a positive integer
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
}
check_clients_jobs() { # caps JOBS at CLIENTS; warns near max_connections
    if (( JOBS > CLIENTS )); then JOBS=$CLIENTS; fi
    if (( CLIENTS > 45 )); then log "warning: CLIENTS=$CLIENTS is close to PostgreSQL max_connections=50"; fi
}

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
find_client_tools() { # sets PSQL and PGBENCH
    PSQL=$(find_tool psql) || die "psql not found; $PG_HINT"
    # shellcheck disable=SC2034  # PGBENCH is used by the scripts
    PGBENCH=$(find_tool pgbench) || die "pgbench not found; $PG_HINT"
}
require_tools() { # tool...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found"
    done
}
find_pg_server() { # checks $PG_BIN's server binaries; sets PG_ISREADY
    [[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]] \
        || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found (set PG_BIN); $PG_HINT"
    PG_ISREADY=$(find_tool pg_isready) || die "pg_isready not found; $PG_HINT"
}

# ---------------------------------------------------------------- ddb binary
find_ddb() { # sets DDB (DDB_BIN, or the default binary, built if missing or BUILD=1)
    local default="$REPO_ROOT/target/release/ddb"
    DDB=${DDB_BIN:-$default}
    if [[ $DDB == "$default" && ( $BUILD == 1 || ! -x $DDB ) ]]; then
        command -v cargo >/dev/null || die "$DDB missing and cargo not found"
        log "building ddb: cargo build --release (in $REPO_ROOT)"
        (cd "$REPO_ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    fi
    [[ -x $DDB ]] || die "ddb binary not found or not executable: $DDB (set DDB_BIN)"
}

# ---------------------------------------------------------------- a single ddb node
# start_ddb runs `ddb server` on 127.0.0.1:$RPC_PORT (RPC) and :$SQL_PORT (SQL)
# with its data in $TMP/ddb and its log in $TMP/ddb.log, and waits until it
# answers 'SELECT 1'; stop_ddb (a CLEANUP_HOOK) stops it again.
DDB_PID=""
ddb_log_tail() {
    if [[ -f $TMP/ddb.log ]]; then
        printf -- '----- last 40 lines of %s -----\n' "$TMP/ddb.log" >&2
        tail -n 40 "$TMP/ddb.log" >&2 || true
    fi
}

start_ddb() {
    log "starting ddb ($DDB): RPC 127.0.0.1:$RPC_PORT, SQL 127.0.0.1:$SQL_PORT"
    "$DDB" server --data-dir "$TMP/ddb" --listen "127.0.0.1:$RPC_PORT" \
        --sql-listen "127.0.0.1:$SQL_PORT" </dev/null >>"$TMP/ddb.log" 2>&1 3>&- &
    DDB_PID=$!
    local t0=$SECONDS rc
    until timeout 10 "$PSQL" -X -q -w -h 127.0.0.1 -p "$SQL_PORT" -U ddb -d ddb -c 'SELECT 1' \
            >/dev/null 2>"$TMP/ddb-ping.err"; do
        if ! kill -0 "$DDB_PID" 2>/dev/null; then
            wait "$DDB_PID" && rc=0 || rc=$?
            DDB_PID=""
            ddb_log_tail
            die "ddb exited during startup (exit status $rc)"
        fi
        if (( SECONDS - t0 >= DEADLINE )); then
            cat "$TMP/ddb-ping.err" >&2
            ddb_log_tail
            die "ddb SQL port 127.0.0.1:$SQL_PORT not answering 'SELECT 1' after ${DEADLINE}s"
        fi
        sleep 0.3
    done
    log "ddb is ready (pid $DDB_PID)"
}
stop_ddb() { # (cleanup) stop the single ddb node if it is running
    if [[ -n $DDB_PID ]] && kill -0 "$DDB_PID" 2>/dev/null; then
        log "stopping ddb (pid $DDB_PID)"
        kill -TERM "$DDB_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$DDB_PID" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$DDB_PID" 2>/dev/null; then
            log "ddb did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$DDB_PID" 2>/dev/null
        fi
        wait "$DDB_PID" 2>/dev/null
    fi
}

# ---------------------------------------------------------------- temp dir + cleanup
KILL_CHILD_TREES=0
CLEANUP_HOOK=""
CLUSTER_DESC="the cluster"
make_tmp_dir() { # name -> sets TMP (${TMPDIR:-/tmp}/name.XXXXXX) and friends; installs the cleanup traps
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    CHILD_PIDS=()
    PGDATA="$TMP/pg/data"
    PGDATA_STANDBY="$TMP/pg/standby"
    CLUSTER_YAML="$TMP/cluster.yaml"
    CLUSTER_STARTED=0
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

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
# A background child is a subshell running a pipeline (e.g. timeout, psql or
# pgbench, tee, sed): list it and all its descendants, so cleanup can stop all
# of them (with KILL_CHILD_TREES=1).
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
    log "stopping $CLUSTER_DESC (ddb stop)"
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

stop_children() { # SIGTERM to the background children (see KILL_CHILD_TREES); waits for them
    local pid pids=()
    if (( KILL_CHILD_TREES )); then
        for pid in "${CHILD_PIDS[@]}"; do
            mapfile -t -O "${#pids[@]}" pids < <(tree_pids "$pid")
        done
        if (( ${#pids[@]} )); then
            log "stopping client processes (pids ${pids[*]})"
            kill -TERM "${pids[@]}" 2>/dev/null
        fi
    else
        for pid in "${CHILD_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
        done
    fi
    for pid in "${CHILD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
}

cleanup() {
    local rc=$?
    # A second INT/TERM (e.g. from `timeout`, which signals the script and then its process
    # group) must not cut the cleanup short and leave servers behind.
    trap - EXIT
    trap '' INT TERM
    set +e
    exec 2>&3
    stop_children
    [[ -n $CLEANUP_HOOK ]] && "$CLEANUP_HOOK"
    (( CLUSTER_STARTED )) && stop_cluster
    if [[ -f $PGDATA_STANDBY/postmaster.pid ]]; then
        log "stopping the PostgreSQL standby"
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_STANDBY" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_STANDBY" -m immediate -w -t 30 stop >/dev/null 2>&1 \
            || log "warning: could not stop the PostgreSQL standby (data dir $PGDATA_STANDBY)"
    fi
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

# ---------------------------------------------------------------- ports + time
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
    # initdb --auth=trust already writes trust lines for local and loopback
    # host connections; make it explicit anyway.
    as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
local all all              trust
host  all all 127.0.0.1/32 trust
host  all all ::1/128      trust
host  replication all 127.0.0.1/32 trust
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

# A streaming standby of the throwaway PostgreSQL, on the same machine: the
# side-by-side baseline of a replicated ddb shard. Call after start_postgres.
#   start_pg_standby sync PORT   the primary waits for the standby's flush
#                                (synchronous_standby_names, synchronous_commit=on)
#   start_pg_standby async PORT  the primary does not wait for it
# Waits until pg_stat_replication shows the standby streaming in that mode.
start_pg_standby() {
    local mode=$1 port=$2 want t0 state
    case $mode in
        sync) want=sync ;;
        async) want=async ;;
        *) die "start_pg_standby: mode must be sync or async (got '$mode')" ;;
    esac
    log "starting a $mode PostgreSQL standby on 127.0.0.1:$port"
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$PGDATA_STANDBY" \
        -X stream -R --checkpoint=fast >"$TMP/pg/basebackup.log" 2>&1 \
        || { cat "$TMP/pg/basebackup.log" >&2; die "pg_basebackup failed"; }
    # pg_basebackup -R wrote primary_conninfo to postgresql.auto.conf, which is read after
    # postgresql.conf: set ours there, last, so the standby names itself standby1.
    as_pg tee -a "$PGDATA_STANDBY/postgresql.auto.conf" >/dev/null <<EOF
port = $port
unix_socket_directories = '$TMP/pg/sock'
primary_conninfo = 'host=127.0.0.1 port=$PG_PORT user=postgres application_name=standby1'
EOF
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_STANDBY" -l "$TMP/pg/standby.log" -W start >/dev/null 3>&- \
        || { tail -n 30 "$TMP/pg/standby.log" >&2; die "pg_ctl start of the standby failed"; }
    if [[ $mode == sync ]]; then
        "$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
            -c "ALTER SYSTEM SET synchronous_standby_names = 'standby1'" \
            -c "SELECT pg_reload_conf()" >/dev/null \
            || die "could not make the standby synchronous"
    fi
    t0=$SECONDS
    while :; do
        state=$("$PSQL" -X -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
            -c "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = 'standby1'" 2>/dev/null || true)
        [[ $state == "streaming $want" ]] && break
        if (( SECONDS - t0 >= DEADLINE )); then
            tail -n 30 "$TMP/pg/standby.log" >&2
            die "the PostgreSQL standby is not streaming in $mode mode after ${DEADLINE}s (state: '${state:-none}')"
        fi
        sleep 0.3
    done
    log "the PostgreSQL standby is streaming ($want)"
}

# ---------------------------------------------------------------- ddb cluster
init_cluster() { # name -> writes $CLUSTER_YAML, runs `ddb init`, waits for every SQL port
    local i t0 t1 rc
    {
        echo "name: $1"
        if (( ${CLUSTER_FACTOR:-1} > 1 )); then
            echo "replication:"
            echo "  factor: $CLUSTER_FACTOR"
            echo "  mode: ${CLUSTER_MODE:-sync}"
            if [[ -n ${CLUSTER_ACK_TIMEOUT_MS:-} ]]; then
                echo "  ack_timeout_ms: $CLUSTER_ACK_TIMEOUT_MS"
            fi
        fi
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
    # shellcheck disable=SC2086  # CLUSTER_ENV is a list of NAME=VALUE words
    timeout 120 env ${CLUSTER_ENV:-} "$DDB" init -c "$CLUSTER_YAML" </dev/null >"$TMP/cluster-init.out" 2>"$TMP/cluster-init.err" 3>&- \
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
show_cluster_status() { # `ddb status` of the cluster, indented, on stderr
    "$DDB" status -c "$CLUSTER_YAML" </dev/null 2>&1 3>&- | sed 's/^/    /' >&2 || true
}

# ---------------------------------------------------------------- psql
run_psql_at() { # target node psql-args...  (time limit: $PSQL_TIMEOUT seconds, default 300)
    local port user db
    read -r port user db <<<"$(target_conn "$1" "$2")"
    shift 2
    timeout "${PSQL_TIMEOUT:-300}" "$PSQL" -X -w -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -p "$port" -U "$user" -d "$db" "$@"
}
run_psql() { # target psql-args...  (a cluster: through node n1)
    local target=$1
    shift
    run_psql_at "$target" 0 "$@"
}

# ---------------------------------------------------------------- pgbench
split_clients() { # node-index -> "clients jobs" of that node's pgbench (clients 0: none)
    local c j
    c=$(( CLIENTS / CLUSTER_NODES + ($1 < CLIENTS % CLUSTER_NODES ? 1 : 0) ))
    j=$(( JOBS < c ? JOBS : c ))
    echo "$c $j"
}
# Wait for the per-node pgbench processes that a script started with
# spawn_child, one per node in node order (n1, n2, ...); if any failed, show
# the output of each failed one and die with target_fail.
wait_node_pgbenches() { # target node-label all-label out-file...
    # e.g. node-label "pgbench update on cluster" -> "... on cluster node n2 failed",
    # all-label "pgbench update on the cluster" -> "... on the cluster failed"
    local target=$1 node_label=$2 all_label=$3 i bad=0
    local -a outs=("${@:4}") rcs
    wait_children || true
    rcs=("${CHILD_RCS[@]}")
    for (( i = 0; i < ${#outs[@]}; i++ )); do
        if (( rcs[i] != 0 )); then
            log "$node_label node n$(( i + 1 )) failed (exit status ${rcs[i]}):"
            cat "${outs[i]}" >&2
            (( rcs[i] == 124 )) && log "pgbench did not finish within ${PGBENCH_LIMIT}s"
            bad=1
        fi
    done
    (( bad == 0 )) || target_fail "$target" "$all_label failed (exit statuses ${rcs[*]})"
}

pg_ddb_targets() { # defines target_conn, target_fail and query_value for the targets postgres and ddb
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
    query_value() { # target node sql -> the single value (dies on error)
        local out
        out=$(run_psql_at "$1" "$2" -A -t -c "$3" 2>"$TMP/query.err") \
            || { cat "$TMP/query.err" >&2; target_fail "$1" "query on $1 failed: $3"; }
        printf '%s\n' "$out"
    }
}
