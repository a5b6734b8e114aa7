#!/usr/bin/env bash
# Does a scan's cost follow the rows it returns, or the table's write history?
# Creates a small table (ROWS rows), measures full scans per second
# (`SELECT * FROM hist` from one pgbench client), runs UPDATES updates of those
# rows, and measures the scans again; on a single ddb node and on a throwaway
# PostgreSQL, side by side. See bench/README.md ("Scans after update history").
#
# Environment:
#   DDB_BIN   ddb binary (default: <repo>/target/release/ddb, built if missing)
#   BUILD=1   run `cargo build --release` even if the default binary exists
#   TARGETS   space-separated subset of "postgres ddb" (default: both)
#   ROWS      rows in the table (default 30)
#   UPDATES   updates between the two measurements (default 160000)
#   CLIENTS   pgbench clients for the updates (default 5; ROWS and UPDATES must
#             be multiples of it: each client updates its own rows, so no
#             update waits for another's lock)
#   DURATION  seconds per scan measurement (default 10)
#   PG_BIN    PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   KEEP=1    keep the temp dir (logs, pgbench outputs, data) after exit
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$SCRIPT_DIR/lib.sh"
LOG_TAG=scan-history

TARGETS=${TARGETS:-"postgres ddb"}
ROWS=${ROWS:-30}
UPDATES=${UPDATES:-160000}
CLIENTS=${CLIENTS:-5}
JOBS=2
DURATION=${DURATION:-10}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
DEADLINE=30
CLUSTER_NODES=0

require_positive_ints ROWS UPDATES CLIENTS DURATION
check_clients_jobs
(( ROWS % CLIENTS == 0 )) || die "ROWS=$ROWS must be a multiple of CLIENTS=$CLIENTS"
(( UPDATES % CLIENTS == 0 )) || die "UPDATES=$UPDATES must be a multiple of CLIENTS=$CLIENTS"

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
require_tools awk timeout
(( RUN_PG )) && find_pg_server
(( RUN_DDB )) && find_ddb

CLEANUP_HOOK=stop_ddb
make_tmp_dir ddb-scan-history
mkdir -p "$TMP/scripts" "$TMP/results"
UPTIME_START=$(uptime)
read -r RPC_PORT SQL_PORT PG_PORT <<<"$(pick_ports 3)"
[[ -n $PG_PORT ]] || die "could not pick free ports"

target_conn() { # target -> "port user dbname"
    case $1 in
        postgres) echo "$PG_PORT postgres postgres" ;;
        ddb) echo "$SQL_PORT ddb ddb" ;;
    esac
}
target_fail() { # target message
    case $1 in
        ddb) ddb_log_tail ;;
        *) pg_log_tail ;;
    esac
    die "$2"
}

# ---------------------------------------------------------------- data + scripts
{
    echo "CREATE TABLE hist (id INT PRIMARY KEY, n INT NOT NULL, note TEXT);"
    echo "INSERT INTO hist (id, n, note) VALUES"
    for (( i = 1; i <= ROWS; i++ )); do
        printf "(%d, 0, 'row %d of the history table')%s\n" "$i" "$i" "$( (( i == ROWS )) && echo ';' || echo ',')"
    done
} >"$TMP/load.sql"
echo "SELECT * FROM hist;" >"$TMP/scripts/scan.sql"
# Client c (0-based) updates the rows c+1, c+1+CLIENTS, c+1+2*CLIENTS, ...
cat >"$TMP/scripts/update.sql" <<EOF
\\set id :client_id + 1 + $CLIENTS * random(0, $(( ROWS / CLIENTS - 1 )))
UPDATE hist SET n = n + 1 WHERE id = :id;
EOF

LIMIT=$(( DURATION + 60 ))
UPDATE_LIMIT=1800
tps_of() { # pgbench-output -> tps (without initial connection time)
    awk '/^tps = / { t = $3 } END { print t }' "$1"
}
measure_scans() { # target phase
    local port user db out rc=0
    read -r port user db <<<"$(target_conn "$1")"
    out="$TMP/results/scan-$1-$2.txt"
    log "$1: scans of $ROWS rows, 1 client, ${DURATION}s ($2)"
    timeout "$LIMIT" "$PGBENCH" -n -f "$TMP/scripts/scan.sql" -c 1 -j 1 -T "$DURATION" \
        -h 127.0.0.1 -p "$port" -U "$user" "$db" </dev/null >"$out" 2>&1 || rc=$?
    (( rc == 0 )) || { cat "$out" >&2; target_fail "$1" "pgbench scan on $1 failed (exit status $rc)"; }
    SCANS[$1.$2]=$(tps_of "$out")
    [[ -n ${SCANS[$1.$2]} ]] || { cat "$out" >&2; target_fail "$1" "no tps line in $out"; }
    log "$1: ${SCANS[$1.$2]} scans/s ($2)"
}
run_updates() { # target
    local port user db out rc=0 t0 sum
    read -r port user db <<<"$(target_conn "$1")"
    out="$TMP/results/update-$1.txt"
    log "$1: $UPDATES updates of the $ROWS rows ($CLIENTS clients, $(( UPDATES / CLIENTS )) each)"
    t0=$(now)
    timeout "$UPDATE_LIMIT" "$PGBENCH" -n -f "$TMP/scripts/update.sql" -c "$CLIENTS" -j "$JOBS" \
        -t $(( UPDATES / CLIENTS )) --max-tries 10 -h 127.0.0.1 -p "$port" -U "$user" "$db" \
        </dev/null >"$out" 2>&1 || rc=$?
    (( rc == 0 )) || { cat "$out" >&2; target_fail "$1" "pgbench update on $1 failed (exit status $rc)"; }
    UPS[$1]=$(tps_of "$out")
    UPSECS[$1]=$(elapsed "$t0")
    # Every update adds 1 to one row: the sum says whether all of them took effect.
    sum=$(run_psql "$1" -A -t -c "SELECT sum(n) FROM hist") || target_fail "$1" "SELECT sum(n) failed"
    [[ $sum == "$UPDATES" ]] || target_fail "$1" "sum(n) on $1 is '$sum' after $UPDATES updates"
    log "$1: $UPDATES updates in ${UPSECS[$1]}s (${UPS[$1]}/s); sum(n) = $sum"
}

declare -A SCANS UPS UPSECS
(( RUN_PG )) && start_postgres
(( RUN_DDB )) && start_ddb
for t in postgres ddb; do
    [[ $t == postgres ]] && (( ! RUN_PG )) && continue
    [[ $t == ddb ]] && (( ! RUN_DDB )) && continue
    run_psql "$t" -f "$TMP/load.sql" >/dev/null || target_fail "$t" "loading $t failed"
    measure_scans "$t" fresh
    run_updates "$t"
    measure_scans "$t" after
done
UPTIME_END=$(uptime)

fmt='%-9s %14s %14s %13s %12s\n'
# shellcheck disable=SC2059
printf "$fmt" target scans_fresh scans_after 'fresh/after' updates_per_s
for t in postgres ddb; do
    f=${SCANS[$t.fresh]:--} a=${SCANS[$t.after]:--}
    [[ $f == - ]] && continue
    # shellcheck disable=SC2059
    printf "$fmt" "$t" "$(awk -v x="$f" 'BEGIN { printf "%.1f", x }')" \
        "$(awk -v x="$a" 'BEGIN { printf "%.1f", x }')" \
        "$(awk -v f="$f" -v a="$a" 'BEGIN { printf "%.2f", (a > 0 ? f / a : 0) }')" \
        "$(awk -v x="${UPS[$t]}" 'BEGIN { printf "%.1f", x }')"
done
echo "uptime_before $UPTIME_START"
echo "uptime_after  $UPTIME_END"
echo "nproc=$(nproc) rows=$ROWS updates=$UPDATES update_clients=$CLIENTS scan_duration=${DURATION}s date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
