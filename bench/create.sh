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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$ROOT/bench/lib.sh"

DURATION="${BENCH_DURATION:-15}"
WARMUP=3
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
TARGET_RATIO=0.8
TARGET_P99_MS=25
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
ENDPOINT_PATH=/apigw-user/v4/projects/bench/callbacks

need_command wrk wrk
need_command psql postgresql-client
need_command curl curl
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a whole number of seconds (got '$DURATION')"
require_postgres

# Everything started from here on is stopped, and the database dropped, on any exit.
bench_workdir
create_database

# --- build ---------------------------------------------------------------------------------------
cargo build --release --bin devops-callbacks --example minimal_insert

# --- helpers -------------------------------------------------------------------------------------
# start_server NAME BINARY: starts it on a fresh port with the bench database; sets PORT.
start_server() {
    local name=$1 binary=$2
    PORT="$(free_port)"
    [[ -x "$binary" ]] || die "$binary was not built"
    start_process "$name" env \
        DATABASE_URL="$DATABASE_URL" \
        LISTEN_ADDR="127.0.0.1:$PORT" \
        SERVICE_TOKEN=bench-token \
        RUST_LOG=warn \
        "$binary"
}

# load NAME BASE_URL TAG SECONDS: one wrk run; leaves its output in $WORK/NAME-TAG.log.
load() {
    local name=$1 url=$2 tag=$3 seconds=$4 out="$WORK/$1-$3.log"
    start_process "$name-$tag" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${seconds}s" --latency \
        -s "$ROOT/bench/create.lua" -H 'X-DEVOPS-UID: bench-admin' \
        "$url$ENDPOINT_PATH" -- "$tag"
    local status=0
    wait_process "$name-$tag" || status=$?
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
    sed -n '/Latency Distribution/,/Transfer\/sec/p' "$WORK/$name-measured.log" | sed 's/^/    /'
    stop_process "$name"
}

bench create "$TARGET_DIR/release/devops-callbacks" /readyz ok
# minimal_insert creates its table before it listens, so any HTTP answer means ready.
bench minimal "$TARGET_DIR/release/examples/minimal_insert" "$ENDPOINT_PATH" any

# --- report --------------------------------------------------------------------------------------
create_rps="$(field rps "$WORK/create-measured.log")"
create_p99="$(field p99_ms "$WORK/create-measured.log")"
minimal_rps="$(field rps "$WORK/minimal-measured.log")"
minimal_p99="$(field p99_ms "$WORK/minimal-measured.log")"

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
