#!/usr/bin/env bash
# Soak under hostile traffic: the release service on a fresh PostgreSQL database, SOAK_SECONDS
# (default 600) of mixed traffic from bench/soak.py — valid creates, hostile creates and intakes
# (NUL and CR/LF in urls and tokens, the reserved project id, JSON nested too deep), junk methods,
# dripping headers, reads, and event batches delivered to receivers answering 200 with NUL or
# invalid UTF-8, 500, or hanging past the delivery timeout. Then it waits for every delivery to
# finish and reports requests, 5xx answers (must be 0), deliveries lost (0), duplicates and the
# service's peak RSS (<= 64 MB). Run by hand, not in CI; all traffic stays on 127.0.0.1/127.0.0.2.
#
#   bench/soak.sh
#
# Environment: BENCH_DATABASE_URL (admin connection, see bench/lib.sh), SOAK_SECONDS,
# SOAK_WORKERS (default 6), SOAK_EVENTS_PER_SECOND (default 10), BENCH_BUILD=0 to use the release binary already built.
# Exit status: 0 when every figure is within its bound, 1 otherwise.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$ROOT/bench/lib.sh"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVICE_BIN="$TARGET_DIR/release/devops-callbacks"
TOKEN=soak-token

need_command psql postgresql-client
need_command curl curl
need_command python3 python3
require_postgres
if [[ "${BENCH_BUILD:-1}" != 0 ]]; then
    cargo build --release --bin devops-callbacks
fi
[[ -x "$SERVICE_BIN" ]] || die "$SERVICE_BIN was not built"

bench_workdir
create_database
port="$(free_port)"
start_process service env \
    DATABASE_URL="$DATABASE_URL" \
    LISTEN_ADDR="127.0.0.1:$port" \
    SERVICE_TOKEN="$TOKEN" \
    CALLBACK_ALLOWED_CIDRS=127.0.0.0/8 \
    DELIVERY_RETRY_SCHEDULE=1s,2s \
    DELIVERY_TIMEOUT_MS=2000 \
    DELIVERY_LEASE_SECS=10 \
    HEADER_READ_TIMEOUT_MS=5000 \
    RUST_LOG=warn \
    "$SERVICE_BIN"
BASE="http://127.0.0.1:$port"
wait_ready service "$BASE/readyz"

status=0
SOAK_BASE="$BASE" SOAK_TOKEN="$TOKEN" SOAK_DATABASE_URL="$DATABASE_URL" \
    SOAK_SERVICE_PID="$(process_pid service)" python3 "$ROOT/bench/soak.py" || status=$?
echo "service log: $(grep -c 'ERROR' "$WORK/service.log" || true) ERROR lines, $(wc -l <"$WORK/service.log") lines in all"
grep 'ERROR' "$WORK/service.log" | head -n 5 || true
exit "$status"
