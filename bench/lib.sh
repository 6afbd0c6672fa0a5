# shellcheck shell=bash
# Helpers shared by the bench scripts (bench/create.sh, bench/deliver.sh). Source it, do not run it:
#
#   ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
#   # shellcheck source=lib.sh source-path=SCRIPTDIR
#   source "$ROOT/bench/lib.sh"
#
# The caller has `set -euo pipefail`. Defines:
#   ADMIN_URL                    BENCH_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres
#   die MESSAGE                  message on stderr, exit 1
#   redact URL                   the URL with its password hidden
#   need_command NAME PACKAGE    die unless NAME is on PATH
#   psql_admin ARGS...           psql on ADMIN_URL, unaligned, tuples only, stop on error
#   require_postgres             die unless ADMIN_URL accepts connections
#   bench_workdir                makes $WORK and installs the cleanup traps
#   on_cleanup FUNCTION          FUNCTION runs at exit, after the processes are stopped
#   create_database              a fresh database; sets DB_NAME and DATABASE_URL; dropped at exit
#   psql_db ARGS...              psql on DATABASE_URL, like psql_admin
#   free_port                    prints a port of 127.0.0.1 that nothing listens on
#   start_process NAME CMD...    CMD (a program, in a session of its own, or a shell function) in
#                                the background, run from $WORK, output in $WORK/NAME.log;
#                                stopped at exit
#   process_pid NAME             prints its PID
#   stop_process NAME            SIGTERM, up to 5 s, then SIGKILL
#   wait_process NAME            waits for it to end by itself; returns its exit status
#   wait_ready NAME URL [any]    until URL answers 2xx (any HTTP answer with "any"); dies if NAME
#                                exits or 30 s pass, showing its log
#   expect_ok WHAT CURL-ARGS...  one request as bench-admin that must answer 200 with "status":0
#   free_callback_port           a free port the service accepts in a callback url
#   start_receiver NAME [HOLD_MS] [IP]  a bench_receiver ($RECEIVER_BIN) on a fresh port of IP
#                                (default 127.0.0.1); sets RECEIVER_URL
#   receiver_stat URL FIELD      one integer field of a receiver's /stats
#   cpu_ticks PID...             user + system clock ticks the processes have used so far
#   db_backends                  PIDs of the PostgreSQL backends connected to $DB_NAME
#   db_ticks_mark                remembers those backends and their ticks, for db_ticks_since
#   db_ticks_since               ticks they (and backends that came up since, whole) used since
#   cpu_ms_per ITEMS TICKS       TICKS as CPU milliseconds per item

export LC_ALL=C

ADMIN_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
WORK=""
DB_NAME=""
DATABASE_URL=""
declare -A BENCH_PIDS=()
BENCH_STARTED=()
BENCH_CLEANUP_HOOKS=()

die() {
    echo "bench: $*" >&2
    exit 1
}

# The URL with its password hidden, for messages.
redact() {
    sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

need_command() {
    command -v "$1" >/dev/null || die "$1 is not installed; install it with: apt-get install -y $2"
}

psql_admin() {
    psql "$ADMIN_URL" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

require_postgres() {
    psql_admin -c 'SELECT 1' >/dev/null ||
        die "cannot connect to PostgreSQL at $(redact "$ADMIN_URL") (set BENCH_DATABASE_URL)"
}

# --- cleanup: everything a bench script starts is stopped on any exit ---------------------------
bench_workdir() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/devops-callbacks-bench.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

on_cleanup() {
    BENCH_CLEANUP_HOOKS+=("$1")
}

bench_cleanup() {
    local status=$? i hook
    trap - EXIT INT TERM
    # Last started, first stopped: load generators and samplers before the servers they measure.
    for ((i = ${#BENCH_STARTED[@]} - 1; i >= 0; i--)); do
        stop_process "${BENCH_STARTED[i]}"
    done
    for hook in "${BENCH_CLEANUP_HOOKS[@]}"; do
        "$hook" || true
    done
    if [[ -n "$DB_NAME" ]]; then
        # DROP DATABASE waits a few seconds for the servers' sessions to go away.
        psql_admin -c "DROP DATABASE IF EXISTS \"$DB_NAME\"" >/dev/null ||
            echo "bench: could not drop database $DB_NAME; drop it by hand" >&2
    fi
    [[ -z "$WORK" ]] || rm -rf "$WORK"
    exit "$status"
}

# --- fresh database ------------------------------------------------------------------------------
create_database() {
    DB_NAME="devops_callbacks_bench_$(printf '%04x%04x%04x' $RANDOM $RANDOM $RANDOM)"
    psql_admin -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null
    # Same server, user and options as BENCH_DATABASE_URL, other database.
    local scheme rest rest_no_query query
    scheme="${ADMIN_URL%%://*}"
    rest="${ADMIN_URL#*://}"
    rest_no_query="${rest%%\?*}"
    query="${rest#"$rest_no_query"}"
    DATABASE_URL="$scheme://${rest_no_query%%/*}/$DB_NAME$query"
    echo "bench: database $DB_NAME created"
}

psql_db() {
    psql "$DATABASE_URL" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

# --- processes -----------------------------------------------------------------------------------
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 20000))
        # Nothing answers a connect: the port is free (for now).
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

start_process() {
    local name=$1
    shift
    [[ -z "${BENCH_PIDS[$name]:-}" ]] || die "start_process: $name is already running"
    # Run from the work dir so no .env of the checkout is picked up. A program gets a session of
    # its own: Ctrl-C at the terminal then reaches only the script, whose cleanup stops it (a
    # server would otherwise start its own shutdown and fail the requests still being made).
    (
        cd "$WORK" || exit
        if declare -F "$1" >/dev/null; then
            "$@"
        else
            exec setsid "$@"
        fi
    ) >"$WORK/$name.log" 2>&1 &
    BENCH_PIDS[$name]=$!
    BENCH_STARTED+=("$name")
}

process_pid() {
    echo "${BENCH_PIDS[$1]:?no process named $1 was started}"
}

# Forgets NAME; nothing to do if it is not running.
forget_process() {
    local name=$1 i
    unset 'BENCH_PIDS[$name]'
    for i in "${!BENCH_STARTED[@]}"; do
        [[ "${BENCH_STARTED[i]}" != "$name" ]] || unset 'BENCH_STARTED[i]'
    done
    BENCH_STARTED=("${BENCH_STARTED[@]}")
}

stop_process() {
    local name=$1 pid
    pid="${BENCH_PIDS[$name]:-}"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_process "$name"
}

wait_process() {
    local name=$1 pid status=0
    pid="$(process_pid "$name")"
    wait "$pid" || status=$?
    forget_process "$name"
    return "$status"
}

wait_ready() {
    local name=$1 url=$2 mode=${3:-ok} code pid
    pid="$(process_pid "$name")"
    for _ in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$WORK/$name.log" >&2
            die "$name exited during start-up (log above)"
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)"
        if [[ "$mode" == any && "$code" != 000 ]] || [[ "$code" == 2* ]]; then
            return
        fi
        sleep 0.1
    done
    cat "$WORK/$name.log" >&2
    die "$name did not become ready at $url within 30 s (log above)"
}

expect_ok() {
    local what=$1 out code
    shift
    out="$(curl -s -w '\n%{http_code}' --max-time 10 -H 'X-DEVOPS-UID: bench-admin' "$@" || true)"
    code="${out##*$'\n'}"
    if [[ "$code" != 200 || "$out" != *'"status":0'* ]]; then
        die "$what failed: HTTP $code: ${out%$'\n'*}"
    fi
}

# --- the bench receiver ------------------------------------------------------------------------
# The service's default CALLBACK_BLOCKED_PORTS (src/config.rs): a callback url may not use them.
BLOCKED_PORTS=21,22,23,25,69,135,137,138,139,161,162,389,465,514,587,636,873,1099,2181,2375,2376,3306,3389,4848,5432,5900,5901,6379,7001,7002,9200,9300,10050,10051,10250,10255,11211,27017,36000,50070,50075,56000

# A free port the service will accept in a callback url.
free_callback_port() {
    local port
    for _ in $(seq 20); do
        port="$(free_port)"
        if [[ ",$BLOCKED_PORTS," != *",$port,"* ]]; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# start_receiver NAME [HOLD_MS] [IP]: a bench_receiver on a fresh port of IP (default 127.0.0.1),
# answering at once or after HOLD_MS; sets RECEIVER_URL (its base url).
start_receiver() {
    local name=$1 ip=${3:-127.0.0.1} port
    port="$(free_callback_port)"
    [[ -x "$RECEIVER_BIN" ]] || die "$RECEIVER_BIN was not built"
    start_process "$name" env LISTEN_ADDR="$ip:$port" HOLD_MS="${2:-0}" "$RECEIVER_BIN"
    RECEIVER_URL="http://$ip:$port"
    wait_ready "$name" "$RECEIVER_URL/stats"
}

# receiver_stat URL FIELD: one integer field of the receiver's /stats.
receiver_stat() {
    local stats
    stats="$(curl -s --max-time 5 "$1/stats" || true)"
    [[ "$stats" =~ \"$2\":([0-9]+) ]] || die "the receiver at $1 answered /stats with '$stats'"
    echo "${BASH_REMATCH[1]}"
}

# --- CPU -----------------------------------------------------------------------------------------
# cpu_ticks PID...: user + system clock ticks the processes have used (0 for one that is gone).
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        if fields="$(cat "/proc/$pid/stat" 2>/dev/null)"; then
            # Fields 14 and 15 after the command, which may hold spaces, in parentheses.
            fields="${fields##*) }"
            read -r -a parts <<<"$fields"
            total=$((total + parts[11] + parts[12]))
        fi
    done
    echo "$total"
}

# db_backends: the PIDs of the PostgreSQL backends connected to the bench database.
db_backends() {
    [[ -n "$DB_NAME" ]] || return 0
    psql_admin -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB_NAME'" | tr '\n' ' '
}

DB_MARK_PIDS=""
DB_MARK_TICKS=0
db_ticks_mark() {
    DB_MARK_PIDS="$(db_backends)"
    # shellcheck disable=SC2086 # one argument per PID
    DB_MARK_TICKS="$(cpu_ticks $DB_MARK_PIDS)"
}
db_ticks_since() {
    local now new
    now="$(db_backends)"
    new="$(comm -13 <(tr ' ' '\n' <<<"$DB_MARK_PIDS" | sort) <(tr ' ' '\n' <<<"$now" | sort) | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one argument per PID
    echo $(($(cpu_ticks $DB_MARK_PIDS) - DB_MARK_TICKS + $(cpu_ticks $new)))
}

# cpu_ms_per ITEMS TICKS: TICKS (clock ticks) as CPU milliseconds per item, 3 decimals.
cpu_ms_per() {
    awk -v n="$1" -v t="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t * 1000 / hz / n }'
}
