#!/usr/bin/env bash
# Memory of a large result: a 2-node ddb cluster on this machine is loaded
# with ROWS rows of ~100 bytes, then
#   1. one client reads `SELECT * FROM t` through node n1 (the gateway; n2 is
#      the other shard), and
#      Then the same through `ddb query --format tsv` (the RPC's streamed SQL
#      answer) and through a row-limited portal (Execute with max_rows 1000
#      inside BEGIN, as JDBC's setFetchSize does).
#   2. READERS clients send the same query and do not read their results;
#      after the send timeout their connections are closed.
# Prints the resident set (VmRSS, and the peak VmHWM) of the gateway and the
# shard before, during and after each, from /proc/PID/status, and the time
# and rate of the read. See bench/README.md ("Result memory").
#
# Environment:
#   DDB_BIN    ddb binary (default: <repo>/target/release/ddb, built if missing)
#   BUILD=1    run `cargo build --release` even if the default binary exists
#   ROWS       rows of the table (default 1000000)
#   BATCH      rows per INSERT statement when loading (default 1000)
#   LOADERS    concurrent psql processes loading (default 4)
#   READERS    clients that do not read their result (default 8)
#   SEND_TIMEOUT_MS  the nodes' --send-timeout-ms (default 10000)
#   LOCK_TIMEOUT_MS  the nodes' --lock-timeout-ms (default 30000: the writer
#              that waits for the stalled readers must outlast their timeout)
#   KEEP=1     keep the temp dir (logs, data) after exit
#   LOAD_TIMEOUT  seconds allowed for the load (default 1800)
#
# Summary goes to stdout; progress and diagnostics go to stderr.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$SCRIPT_DIR/lib.sh"
LOG_TAG=stream
CLUSTER_DESC="the ddb cluster"
KILL_CHILD_TREES=1

ROWS=${ROWS:-1000000}
BATCH=${BATCH:-1000}
LOADERS=${LOADERS:-4}
READERS=${READERS:-8}
SEND_TIMEOUT_MS=${SEND_TIMEOUT_MS:-10000}
LOCK_TIMEOUT_MS=${LOCK_TIMEOUT_MS:-30000}
KEEP=${KEEP:-0}
BUILD=${BUILD:-0}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-1800}
DEADLINE=30
CLUSTER_NODES=2
CLIENTS=1 JOBS=1 PGBENCH_LIMIT=0   # lib.sh's pgbench knobs; unused here

require_positive_ints ROWS BATCH LOADERS READERS SEND_TIMEOUT_MS LOCK_TIMEOUT_MS LOAD_TIMEOUT
(( LOCK_TIMEOUT_MS > SEND_TIMEOUT_MS )) || die "LOCK_TIMEOUT_MS must exceed SEND_TIMEOUT_MS"
(( READERS <= 64 )) || die "READERS=$READERS: at most 64"

PSQL=$(find_tool psql) || die "psql not found; $PG_HINT"
require_tools awk timeout python3 uptime
find_ddb
make_tmp_dir ddb-stream

target_conn() { # target node -> "port user db"
    echo "${CL_SQL[$2]} ddb ddb"
}
target_fail() { # target message
    cluster_log_tail
    die "$2"
}

# ---------------------------------------------------------------- memory
rss_kib() { # pid field -> the field of /proc/pid/status in KiB (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# Samples VmRSS of both nodes every 20 ms into $TMP/samples until $TMP/sampling
# disappears; peak_of prints a node's largest sample.
start_sampling() {
    : >"$TMP/samples"
    touch "$TMP/sampling"
    (
        while [[ -f $TMP/sampling ]]; do
            echo "$(rss_kib "$GW" VmRSS) $(rss_kib "$SH" VmRSS)" >>"$TMP/samples"
            sleep 0.02
        done
    ) &
    SAMPLER=$!
}
stop_sampling() {
    rm -f "$TMP/sampling"
    wait "$SAMPLER" 2>/dev/null || true
}
peak_of() { # column (1 gateway, 2 shard)
    awk -v c="$1" '$c > m { m = $c } END { print m + 0 }' "$TMP/samples"
}
report() { # label gw-before sh-before
    local gp sp
    gp=$(peak_of 1)
    sp=$(peak_of 2)
    printf '%-34s gateway %7s -> peak %7s MiB (+%6s)   shard %7s -> peak %7s MiB (+%6s)\n' \
        "$1" "$(mib "$2")" "$(mib "$gp")" "$(mib $(( gp - $2 )))" \
        "$(mib "$3")" "$(mib "$sp")" "$(mib $(( sp - $3 )))"
}
now_rss() { # label
    printf '%-34s gateway %7s MiB (VmHWM %7s)   shard %7s MiB (VmHWM %7s)\n' "$1" \
        "$(mib "$(rss_kib "$GW" VmRSS)")" "$(mib "$(rss_kib "$GW" VmHWM)")" \
        "$(mib "$(rss_kib "$SH" VmRSS)")" "$(mib "$(rss_kib "$SH" VmHWM)")"
}

# ---------------------------------------------------------------- cluster
read -r -a PORTS <<<"$(pick_ports 4)"
CL_RPC=("${PORTS[0]}" "${PORTS[1]}")
CL_SQL=("${PORTS[2]}" "${PORTS[3]}")
# The nodes ddb init starts inherit these.
export DDB_SEND_TIMEOUT_MS=$SEND_TIMEOUT_MS DDB_LOCK_TIMEOUT_MS=$LOCK_TIMEOUT_MS
init_cluster stream
GW=$(cat "$TMP/cluster/n1/ddb.pid")
SH=$(cat "$TMP/cluster/n2/ddb.pid")

# ---------------------------------------------------------------- load
PAD=$(printf '%080d' 0)
run_psql ddb -c "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT, pad TEXT)"
log "loading $ROWS rows of ~100 bytes ($LOADERS loaders, $BATCH rows per INSERT)"
t0=$(now)
for (( l = 0; l < LOADERS; l++ )); do
    awk -v l="$l" -v L="$LOADERS" -v rows="$ROWS" -v b="$BATCH" -v pad="$PAD" 'BEGIN {
        for (s = l * b; s < rows; s += L * b) {
            e = s + b; if (e > rows) e = rows
            printf "INSERT INTO t VALUES "
            for (i = s; i < e; i++) printf "%s(%d, %d, '\''%s'\'')", (i > s ? ", " : ""), i, i % 97, pad
            print ";"
        }
    }' >"$TMP/load-$l.sql"
    spawn_child env PSQL_TIMEOUT="$LOAD_TIMEOUT" bash -c \
        'timeout "$0" "$1" -X -w -v ON_ERROR_STOP=1 -q -h 127.0.0.1 -p "$2" -U ddb -d ddb -f "$3" >/dev/null' \
        "$LOAD_TIMEOUT" "$PSQL" "${CL_SQL[l % 2]}" "$TMP/load-$l.sql"
done
wait_children || target_fail ddb "the load failed (exit statuses ${CHILD_RCS[*]})"
LOAD_S=$(elapsed "$t0")
count=$(run_psql ddb -At -c "SELECT count(*) FROM t")
[[ $count == "$ROWS" ]] || die "the table has $count rows, expected $ROWS"
log "loaded in ${LOAD_S}s"

# ---------------------------------------------------------------- 1. one reader
echo "ddb result memory: $ROWS rows of ~100 bytes on 2 shards, read through n1 (gateway); n2 is the other shard"
echo "load average before the run: $(uptime | sed 's/.*load average: //')"
now_rss "after the load"
gw0=$(rss_kib "$GW" VmRSS)
sh0=$(rss_kib "$SH" VmRSS)
start_sampling
t0=$(now)
got=$(run_psql ddb -At -c "SELECT * FROM t" | wc -l)
read_s=$(elapsed "$t0")
stop_sampling
[[ $got == "$ROWS" ]] || die "SELECT * returned $got rows, expected $ROWS"
report "SELECT * FROM t (psql, 1 client)" "$gw0" "$sh0"
echo "    read $ROWS rows in ${read_s}s ($(awk -v r="$ROWS" -v s="$read_s" 'BEGIN { printf "%.0f", r / s }') rows/s)"
sleep 1
now_rss "1 s after the read"

# ---------------------------------------------------------------- 1b. ddb query
# The RPC's SQL request streams too: ddb query prints rows as they come (tsv).
gw0=$(rss_kib "$GW" VmRSS)
sh0=$(rss_kib "$SH" VmRSS)
start_sampling
t0=$(now)
got=$("$DDB" query -c "$CLUSTER_YAML" --format tsv --no-header "SELECT * FROM t" 2>/dev/null | wc -l)
read_s=$(elapsed "$t0")
stop_sampling
[[ $got == "$ROWS" ]] || die "ddb query printed $got rows, expected $ROWS"
report "SELECT * FROM t (ddb query, tsv)" "$gw0" "$sh0"
echo "    read $ROWS rows in ${read_s}s ($(awk -v r="$ROWS" -v s="$read_s" 'BEGIN { printf "%.0f", r / s }') rows/s)"

# ---------------------------------------------------------------- 1c. a row-limited portal
# What JDBC's setFetchSize sends: inside BEGIN, Parse/Bind once, then Execute
# with max_rows 1000 and Sync until the portal completes instead of suspending.
cat >"$TMP/portal.py" <<'PY'
import socket, struct, sys
port, fetch = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.connect(("127.0.0.1", port))
body = struct.pack("!I", 196608) + b"user\0ddb\0database\0ddb\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
f = s.makefile("rb", buffering=1 << 16)
def msg(kind, payload=b""):
    s.sendall(kind + struct.pack("!I", len(payload) + 4) + payload)
def until(stop):
    rows = 0
    while True:
        kind = f.read(1)
        if not kind:
            sys.exit("connection closed")
        (n,) = struct.unpack("!I", f.read(4))
        body = f.read(n - 4)
        if kind == b"E":
            sys.exit("error: %r" % body)
        if kind == b"D":
            rows += 1
        if kind in stop:
            return kind, rows
until({b"Z"})
msg(b"Q", b"BEGIN\0"); until({b"Z"})
msg(b"P", b"\0SELECT * FROM t\0\0\0")
msg(b"B", b"c1\0\0\0\0\0\0\0\0")
msg(b"S"); until({b"Z"})
total = 0
while True:
    msg(b"E", b"c1\0" + struct.pack("!i", fetch)); msg(b"S")
    kind, rows = until({b"s", b"C"})
    total += rows
    until({b"Z"})
    if kind == b"C":
        break
msg(b"Q", b"COMMIT\0"); until({b"Z"})
print(total)
PY
gw0=$(rss_kib "$GW" VmRSS)
sh0=$(rss_kib "$SH" VmRSS)
start_sampling
t0=$(now)
got=$(python3 "$TMP/portal.py" "${CL_SQL[0]}" 1000)
read_s=$(elapsed "$t0")
stop_sampling
[[ $got == "$ROWS" ]] || die "the portal gave $got rows, expected $ROWS"
report "portal, Execute max_rows 1000" "$gw0" "$sh0"
echo "    read $ROWS rows in ${read_s}s ($(awk -v r="$ROWS" -v s="$read_s" 'BEGIN { printf "%.0f", r / s }') rows/s)"

# ---------------------------------------------------------------- 2. readers that stop
# Each client starts a session, sends the query and then reads nothing, with a
# 4 KiB receive buffer: the server's writes stop once the socket buffers fill.
cat >"$TMP/stall.py" <<'EOF'
import socket, struct, sys, time
port, hold = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
body = struct.pack("!I", 196608) + b"user\0ddb\0database\0ddb\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
buf = b""
while not buf.endswith(b"Z\0\0\0\x05I"):
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("closed during startup")
    buf += chunk
q = b"SELECT * FROM t\0"
s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
time.sleep(hold)
EOF
hold=$(( SEND_TIMEOUT_MS / 1000 + 10 ))
log "starting $READERS clients that send SELECT * FROM t and do not read (send timeout ${SEND_TIMEOUT_MS} ms)"
gw0=$(rss_kib "$GW" VmRSS)
sh0=$(rss_kib "$SH" VmRSS)
start_sampling
for (( r = 0; r < READERS; r++ )); do
    spawn_child python3 "$TMP/stall.py" "${CL_SQL[0]}" "$hold"
done
sleep $(( SEND_TIMEOUT_MS / 2000 + 1 ))
report "$READERS clients not reading (stalled)" "$gw0" "$sh0"
# Meanwhile a writer on the same table waits for their shared locks.
t0=$(now)
run_psql ddb -c "INSERT INTO t VALUES (-1, 0, 'writer')" \
    || target_fail ddb "the writer failed while $READERS clients did not read"
writer_s=$(elapsed "$t0")
stop_sampling
report "until their connections closed" "$gw0" "$sh0"
echo "    a writer on the table waited ${writer_s}s for the stalled readers' locks (send timeout ${SEND_TIMEOUT_MS} ms)"
closed=$(grep -c "stopped reading" "$TMP/cluster/n1/ddb.log" || true)
echo "    connections the gateway closed for not reading: $closed of $READERS"
stop_children || true   # they were killed: their exit statuses are not failures
CHILD_PIDS=()
sleep 1
now_rss "after the stalled clients"
echo "load average after the run: $(uptime | sed 's/.*load average: //')"
