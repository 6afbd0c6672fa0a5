#!/usr/bin/env bash
# Load test of the create endpoint against a minimal axum + sqlx INSERT server. Run by hand, not in CI.
#
#   bench/create.sh
#
# Needs wrk, psql and curl, and a PostgreSQL that BENCH_DATABASE_URL can create databases on
# (default postgres://postgres@127.0.0.1:5432/postgres). A fresh database is made for the run and
# dropped at exit. Both servers listen on 127.0.0.1 only; the load never leaves this machine.
#
# Environment:
#   BENCH_DATABASE_URL        admin connection used to create/drop the bench database
#   BENCH_DURATION            seconds of measured load per server (default 15; 3 s warm-up before)
#   BENCH_CONNECTIONS         wrk connections (default 64)
#   BENCH_THREADS             wrk threads (default 2)
#   DATABASE_MAX_CONNECTIONS  pool size of both servers (default 32, the service default)
#
# Exit status: 0 targets met, 1 error (non-200 responses, a server that did not start, ...),
# 2 the run was clean but missed a target (create/minimal >= 0.8, create p99 <= 25 ms).

set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ADMIN_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DURATION="${BENCH_DURATION:-15}"
WARMUP=3
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
TARGET_RATIO=0.8
TARGET_P99_MS=25
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
ENDPOINT_PATH=/apigw-user/v4/projects/bench/callbacks

die() {
    echo "bench: $*" >&2
    exit 1
}

# The URL with its password hidden, for messages.
redact() {
    sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

command -v wrk >/dev/null || die "wrk is not installed; install it with: apt-get install -y wrk"
command -v psql >/dev/null || die "psql is not installed; install it with: apt-get install -y postgresql-client"
command -v curl >/dev/null || die "curl is not installed; install it with: apt-get install -y curl"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a whole number of seconds (got '$DURATION')"

psql_admin() {
    psql "$ADMIN_URL" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

psql_admin -c 'SELECT 1' >/dev/null ||
    die "cannot connect to PostgreSQL at $(redact "$ADMIN_URL") (set BENCH_DATABASE_URL)"

# --- cleanup: everything this script starts is stopped on any exit -----------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/devops-callbacks-bench.XXXXXX")"
DB_NAME=""
SERVER_PID=""
WRK_PID=""

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$WRK_PID" ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    stop_server
    if [[ -n "$DB_NAME" ]]; then
        # DROP DATABASE waits a few seconds for the servers' sessions to go away.
        psql_admin -c "DROP DATABASE IF EXISTS \"$DB_NAME\"" >/dev/null ||
            echo "bench: could not drop database $DB_NAME; drop it by hand" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- fresh database ------------------------------------------------------------------------------
DB_NAME="devops_callbacks_bench_$(printf '%04x%04x%04x' $RANDOM $RANDOM $RANDOM)"
psql_admin -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null
# Same server, user and options as BENCH_DATABASE_URL, other database.
scheme="${ADMIN_URL%%://*}"
rest="${ADMIN_URL#*://}"
rest_no_query="${rest%%\?*}"
query="${rest#"$rest_no_query"}"
DATABASE_URL="$scheme://${rest_no_query%%/*}/$DB_NAME$query"
echo "bench: database $DB_NAME created"

# --- build ---------------------------------------------------------------------------------------
cargo build --release --bin devops-callbacks --example minimal_insert

# --- helpers -------------------------------------------------------------------------------------
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

# start_server NAME BINARY: starts it on a fresh port with the bench database; sets PORT.
start_server() {
    local name=$1 binary=$2
    PORT="$(free_port)"
    [[ -x "$binary" ]] || die "$binary was not built"
    # Run from the work dir so no .env of the checkout is picked up.
    (cd "$WORK" && exec env \
        DATABASE_URL="$DATABASE_URL" \
        LISTEN_ADDR="127.0.0.1:$PORT" \
        SERVICE_TOKEN=bench-token \
        RUST_LOG=warn \
        "$binary") >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
}

# wait_ready NAME URL: until URL answers (any HTTP status when $3 is "any", else 2xx).
wait_ready() {
    local name=$1 url=$2 mode=${3:-ok} code
    for _ in $(seq 300); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
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

# expect_ok WHAT CURL-ARGS...: one request that must answer 200 with "status":0.
expect_ok() {
    local what=$1 out code
    shift
    out="$(curl -s -w '\n%{http_code}' --max-time 10 -H 'X-DEVOPS-UID: bench-admin' "$@" || true)"
    code="${out##*$'\n'}"
    if [[ "$code" != 200 || "$out" != *'"status":0'* ]]; then
        die "$what failed: HTTP $code: ${out%$'\n'*}"
    fi
}

# load NAME BASE_URL TAG SECONDS: one wrk run; leaves its output in $WORK/NAME-TAG.out.
load() {
    local name=$1 url=$2 tag=$3 seconds=$4 out="$WORK/$1-$3.out"
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${seconds}s" --latency \
        -s "$ROOT/bench/create.lua" -H 'X-DEVOPS-UID: bench-admin' \
        "$url$ENDPOINT_PATH" -- "$tag" >"$out" 2>&1 &
    WRK_PID=$!
    local status=0
    wait "$WRK_PID" || status=$?
    WRK_PID=""
    if ((status != 0)) || ! grep -q '^BENCH_RESULT ' "$out"; then
        cat "$out" >&2
        die "wrk against $name failed (exit $status, output above)"
    fi
    # Every response must have been 200 with "status":0, and no socket errors.
    local result
    result="$(grep '^BENCH_RESULT ' "$out")"
    if [[ "$result" != *" bad=0 "* || "$result" != *" non2xx3xx=0 "* ||
        "$result" != *" connect=0 read=0 write=0 timeout=0" ]] ||
        grep -q 'Non-2xx or 3xx responses' "$out"; then
        cat "$out" >&2
        die "$name ($tag run): not every response was a 200 success (wrk output above)"
    fi
}

field() { # field NAME OUTFILE
    grep '^BENCH_RESULT ' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# bench NAME BINARY READY_PATH READY_MODE: start, warm up, measure, stop.
bench() {
    local name=$1 binary=$2 ready_path=$3 ready_mode=$4
    start_server "$name" "$binary"
    local base="http://127.0.0.1:$PORT"
    wait_ready "$name" "$base$ready_path" "$ready_mode"
    if [[ "$name" == create ]]; then
        expect_ok "making bench-admin admin of project bench" -X PUT \
            -H 'X-DEVOPS-BK-TOKEN: bench-token' "$base/op/projects/bench/members/bench-admin?role=admin"
    fi
    expect_ok "a single create request to $name" -X POST \
        "$base$ENDPOINT_PATH?event=BUILD_END&region=IDC&url=http%3A%2F%2F93.184.215.14%2Fhook%2Fprobe&secretToken=t"
    echo "bench: $name: ${WARMUP} s warm-up, then ${DURATION} s with $CONNECTIONS connections, $THREADS threads"
    load "$name" "$base" warmup "$WARMUP"
    load "$name" "$base" measured "$DURATION"
    sed -n '/Latency Distribution/,/Transfer\/sec/p' "$WORK/$name-measured.out" | sed 's/^/    /'
    stop_server
}

bench create "$TARGET_DIR/release/devops-callbacks" /readyz ok
# minimal_insert creates its table before it listens, so any HTTP answer means ready.
bench minimal "$TARGET_DIR/release/examples/minimal_insert" "$ENDPOINT_PATH" any

# --- report --------------------------------------------------------------------------------------
create_rps="$(field rps "$WORK/create-measured.out")"
create_p99="$(field p99_ms "$WORK/create-measured.out")"
minimal_rps="$(field rps "$WORK/minimal-measured.out")"
minimal_p99="$(field p99_ms "$WORK/minimal-measured.out")"

verdict() { # verdict EXPRESSION -> PASS/FAIL
    awk "BEGIN { exit !($1) }" && echo PASS || echo FAIL
}
ratio="$(awk -v a="$create_rps" -v b="$minimal_rps" 'BEGIN { printf "%.3f", a / b }')"
ratio_verdict="$(verdict "$ratio >= $TARGET_RATIO")"
p99_verdict="$(verdict "$create_p99 <= $TARGET_P99_MS")"

echo
printf '%-28s %12s %12s\n' "server (${DURATION} s, ${CONNECTIONS} conns)" "requests/s" "p99 (ms)"
printf '%-28s %12.1f %12.2f\n' "devops-callbacks create" "$create_rps" "$create_p99"
printf '%-28s %12.1f %12.2f\n' "minimal axum+sqlx INSERT" "$minimal_rps" "$minimal_p99"
echo
printf 'ratio create/minimal  %6s  (target >= %s)  %s\n' "$ratio" "$TARGET_RATIO" "$ratio_verdict"
printf 'create p99            %6.2f  (target <= %s ms)  %s\n' "$create_p99" "$TARGET_P99_MS" "$p99_verdict"

[[ "$ratio_verdict" == PASS && "$p99_verdict" == PASS ]] || exit 2
