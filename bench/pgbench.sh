#!/usr/bin/env bash
# Compare ddb against a local PostgreSQL with pgbench point-select and
# point-update workloads on the same table. See bench/README.md.
#
# Environment:
#   DDB_BIN   ddb binary (default: <repo>/target/release/ddb, built if missing)
#   BUILD=1   run `cargo build --release` even if the default binary exists
#   TARGETS   space-separated subset of "postgres ddb" (default: both)
#   ROWS      rows in bench_accounts (default 100000)
#   CLIENTS   pgbench clients (default 8)
#   JOBS      pgbench threads (default 2, capped at CLIENTS)
#   DURATION  seconds per pgbench run (default 20)
#   PG_BIN    PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   KEEP=1    keep the temp dir (logs, pgbench outputs, data) after exit
#   LOAD_TIMEOUT  seconds allowed for loading the table into one server (default 1800)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

export LC_ALL=C
# Keep client connections plain and comparable on both sides; ignore any
# ambient libpq settings.
export PGSSLMODE=disable PGGSSENCMODE=disable
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD 2>/dev/null || true

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

TARGETS=${TARGETS:-"postgres ddb"}
ROWS=${ROWS:-100000}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
DURATION=${DURATION:-20}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-1800}
BATCH=1000
DEADLINE=30
WORKLOADS=(select update)

# fd 3 = the script's original stderr: progress must reach it even when a trap
# fires while stderr is redirected (e.g. into a pgbench output file).
exec 3>&2
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&3; }
die() { printf '[bench] ERROR: %s\n' "$*" >&3; exit 1; }

# ---------------------------------------------------------------- arguments
for v in ROWS CLIENTS JOBS DURATION LOAD_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
(( JOBS > CLIENTS )) && JOBS=$CLIENTS
(( CLIENTS > 45 )) && log "warning: CLIENTS=$CLIENTS is close to PostgreSQL max_connections=50"

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
for tool in awk timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
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
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ddb-pgbench.XXXXXX")
DDB_PID=""
CHILD_PID=""
PGDATA="$TMP/pg/data"

as_pg() { # run a PostgreSQL server command; as root, via the postgres user
    if (( EUID == 0 )); then
        (cd "$TMP" && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ddb_log_tail() {
    if [[ -f $TMP/ddb.log ]]; then
        printf -- '----- last 40 lines of %s -----\n' "$TMP/ddb.log" >&2
        tail -n 40 "$TMP/ddb.log" >&2 || true
    fi
}
pg_log_tail() {
    if [[ -f $TMP/pg/postgres.log ]]; then
        printf -- '----- last 40 lines of %s -----\n' "$TMP/pg/postgres.log" >&2
        tail -n 40 "$TMP/pg/postgres.log" >&2 || true
    fi
}

# Run a long client command (load, pgbench) in the background and wait for it,
# so that INT/TERM sent to this script run the cleanup trap right away.
run_child() {
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    exec 2>&3
    if [[ -n $CHILD_PID ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
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

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
mkdir -p "$TMP/scripts" "$TMP/results"

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
read -r RPC_PORT SQL_PORT PG_PORT <<<"$(pick_ports 3)"
[[ -n $PG_PORT ]] || die "could not pick free ports"

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

# ---------------------------------------------------------------- ddb
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

# ---------------------------------------------------------------- targets
target_conn() { # target -> "port user dbname"
    case $1 in
        postgres) echo "$PG_PORT postgres postgres" ;;
        ddb) echo "$SQL_PORT ddb ddb" ;;
    esac
}
target_fail() { # target message
    if [[ $1 == ddb ]]; then ddb_log_tail; else pg_log_tail; fi
    die "$2"
}
run_psql() { # target psql-args...  (time limit: $PSQL_TIMEOUT seconds, default 300)
    local target=$1 port user db
    shift
    read -r port user db <<<"$(target_conn "$target")"
    timeout "${PSQL_TIMEOUT:-300}" "$PSQL" -X -w -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -p "$port" -U "$user" -d "$db" "$@"
}

# ---------------------------------------------------------------- data + scripts
FILLER=$(printf 'filler%074d' 0)   # fixed 80-character string
LOAD_SQL="$TMP/load.sql"
awk -v rows="$ROWS" -v batch="$BATCH" -v filler="$FILLER" 'BEGIN {
    print "CREATE TABLE bench_accounts (aid INT PRIMARY KEY, abalance INT NOT NULL, filler TEXT);"
    for (i = 1; i <= rows; i++) {
        if ((i - 1) % batch == 0) print "INSERT INTO bench_accounts (aid, abalance, filler) VALUES"
        printf "(%d, 0, \047%s\047)%s\n", i, filler, (i % batch == 0 || i == rows) ? ";" : ","
    }
}' >"$LOAD_SQL"

cat >"$TMP/scripts/select.sql" <<EOF
\\set aid random(1, $ROWS)
SELECT abalance FROM bench_accounts WHERE aid = :aid;
EOF
cat >"$TMP/scripts/update.sql" <<EOF
\\set aid random(1, $ROWS)
\\set delta random(-5000, 5000)
UPDATE bench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
EOF

load_target() { # target
    local target=$1 t0 secs check
    log "loading $ROWS rows into $target (batches of $BATCH)"
    t0=$(now)
    PSQL_TIMEOUT=$LOAD_TIMEOUT run_child run_psql "$target" -f "$LOAD_SQL" \
        >/dev/null 2>"$TMP/load-$target.err" \
        || { cat "$TMP/load-$target.err" >&2
             target_fail "$target" "loading data into $target failed or took over ${LOAD_TIMEOUT}s"; }
    secs=$(elapsed "$t0")
    log "$target: loaded $ROWS rows in ${secs}s"
    if [[ $target == postgres ]]; then
        t0=$(now)
        run_psql "$target" -c 'VACUUM ANALYZE bench_accounts' >/dev/null \
            || target_fail "$target" "VACUUM ANALYZE failed"
        log "$target: VACUUM ANALYZE took $(elapsed "$t0")s"
    fi
    # Sanity check with the benchmark's own query shape.
    check=$(run_psql "$target" -A -t -c "SELECT abalance FROM bench_accounts WHERE aid = $ROWS" 2>"$TMP/check.err") \
        || { cat "$TMP/check.err" >&2; target_fail "$target" "sanity query on $target failed"; }
    [[ $check == 0 ]] || target_fail "$target" "sanity query on $target returned '$check', expected '0'"
}

# ---------------------------------------------------------------- pgbench
declare -A TPS LAT
run_pgbench() { # target workload
    local target=$1 workload=$2 port user db out rc tps lat failed
    read -r port user db <<<"$(target_conn "$target")"
    out="$TMP/results/$workload-$target.txt"
    log "pgbench $workload on $target: $CLIENTS clients, $JOBS threads, ${DURATION}s"
    rc=0
    # timeout guards against a server that stops answering (pgbench would wait forever)
    run_child timeout "$(( DURATION + 60 ))" "$PGBENCH" -n -f "$TMP/scripts/$workload.sql" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" \
        -h 127.0.0.1 -p "$port" -U "$user" "$db" </dev/null >"$out" 2>&1 || rc=$?
    if (( rc != 0 )); then
        cat "$out" >&2
        (( rc == 124 )) && log "pgbench did not finish within $(( DURATION + 60 ))s"
        target_fail "$target" "pgbench $workload on $target failed (exit status $rc)"
    fi
    tps=$(awk '/^tps = / {
            if (first == "") first = $3
            if ($0 ~ /without initial connection time|excluding connections/) best = $3
        } END { print (best != "" ? best : first) }' "$out")
    lat=$(awk '/^latency average = / { print $4; exit }' "$out")
    failed=$(awk -F'[: ]+' '/^number of failed transactions/ { print $5; exit }' "$out")
    if [[ -z $tps ]]; then
        cat "$out" >&2
        target_fail "$target" "could not find a 'tps = ' line in pgbench output for $workload on $target"
    fi
    if [[ -n $failed && $failed != 0 ]]; then
        log "warning: $failed failed transactions in $workload on $target (see $out)"
    fi
    TPS[$workload.$target]=$tps
    LAT[$workload.$target]=${lat:-?}
    log "$target $workload: tps=$tps latency_avg=${lat:-?}ms"
}

# ---------------------------------------------------------------- main
log "temp dir $TMP; ROWS=$ROWS CLIENTS=$CLIENTS JOBS=$JOBS DURATION=${DURATION}s TARGETS='$TARGETS'"
(( RUN_PG )) && start_postgres
(( RUN_DDB )) && start_ddb
(( RUN_PG )) && load_target postgres
(( RUN_DDB )) && load_target ddb

for w in "${WORKLOADS[@]}"; do
    (( RUN_PG )) && run_pgbench postgres "$w"
    (( RUN_DDB )) && run_pgbench ddb "$w"
done

LOAD_END=$(cut -d' ' -f1 /proc/loadavg)

num() { # precision value -> formatted value ("-" / "?" passed through)
    awk -v p="$1" -v x="$2" 'BEGIN { if (x == "-" || x == "?") print x; else printf "%.*f\n", p, x }'
}

printf '%-9s %13s %12s %14s %10s %11s\n' workload postgres_tps ddb_tps 'ratio(ddb/pg)' pg_lat_ms ddb_lat_ms
for w in "${WORKLOADS[@]}"; do
    pg_tps=${TPS[$w.postgres]:--} ddb_tps=${TPS[$w.ddb]:--}
    pg_lat=${LAT[$w.postgres]:--} ddb_lat=${LAT[$w.ddb]:--}
    ratio=$(awk -v a="$ddb_tps" -v b="$pg_tps" 'BEGIN {
        if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b }')
    printf '%-9s %13s %12s %14s %10s %11s\n' "$w" "$(num 1 "$pg_tps")" "$(num 1 "$ddb_tps")" \
        "$ratio" "$(num 3 "$pg_lat")" "$(num 3 "$ddb_lat")"
done
printf 'nproc=%s loadavg_1m_start=%s loadavg_1m_end=%s rows=%s clients=%s jobs=%s duration=%ss date=%s\n' \
    "$(nproc)" "$LOAD_START" "$LOAD_END" "$ROWS" "$CLIENTS" "$JOBS" "$DURATION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
