#!/usr/bin/env bash
# Bus benchmark: bk-ci build status messages published to bk-ci's build exchange on the local
# RabbitMQ, consumed by the release service's bridge, looked up at a fake bk-ci record API and
# delivered to a receiver (both played by bench/bus_driver.rs). Run by hand, not in CI.
#
#   bench/bus.sh
#
# Reports messages/s from the first publish to the last arrival, the p50/p99/max latency from
# each message's publish to its body's arrival at the receiver (then the p50/p99 of 300 more
# published one at a time at about 50/s: the latency at light load), how many record lookups bk-ci
# answered (messages of one build that arrive together share one), the CPU milliseconds per
# message of the service, of the PostgreSQL backends serving it and of RabbitMQ (whole broker),
# and the service's peak RSS.
# The messages come 10 per build, as a build's life sends them.
#
# Needs psql, rabbitmqctl (the local RabbitMQ, guest/guest on 127.0.0.1:5672) and a PostgreSQL
# that BENCH_DATABASE_URL can create databases on (default postgres://postgres@127.0.0.1:5432/
# postgres). A database and a RabbitMQ vhost are made for the run and removed at exit. Everything
# listens on 127.0.0.1; nothing leaves the machine.
#
# Environment:
#   BENCH_DATABASE_URL   admin connection used to create/drop the bench database
#   BENCH_MESSAGES       messages to publish (default 20000)
#   BENCH_BACKEND        postgres (default) or sqlite (a file in the work directory)
#   BENCH_BUILD          0 skips `cargo build` and uses the binaries already in the target dir
#
# Exit status: 0 the target was met (>= 3000 messages/s, nothing missing or duplicated), 1 an
# error, 2 the run was clean but missed the target.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$ROOT/bench/lib.sh"

MESSAGES="${BENCH_MESSAGES:-20000}"
LIGHT_MESSAGES=300
TARGET_RATE=3000
TOKEN=bench-token
PREFIX=bench
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVICE_BIN="$TARGET_DIR/release/devops-callbacks"
DRIVER_BIN="$TARGET_DIR/release/examples/bench_bus_driver"

case "${1:-}" in
"") ;;
-h | --help)
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
*) die "unknown argument '$1'" ;;
esac
[[ "$MESSAGES" =~ ^[1-9][0-9]*$ ]] || die "BENCH_MESSAGES must be a positive whole number (got '$MESSAGES')"
need_command psql postgresql-client
need_command rabbitmqctl rabbitmq-server
require_postgres

if [[ "${BENCH_BUILD:-1}" != 0 ]]; then
    cargo build --release --bin devops-callbacks --example bench_bus_driver
fi
for binary in "$SERVICE_BIN" "$DRIVER_BIN"; do
    [[ -x "$binary" ]] || die "$binary was not built"
done

bench_workdir
case "${BENCH_BACKEND:-postgres}" in
postgres) create_database ;;
sqlite) DATABASE_URL="sqlite://$WORK/bench.db" ;;
*) die "BENCH_BACKEND must be postgres or sqlite" ;;
esac
VHOST="dc-bench-$$"
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
drop_vhost() { rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true; }
on_cleanup drop_vhost
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"

FAKE_PORT="$(free_port)"
RECEIVER_PORT="$(free_callback_port)"
SERVICE_PORT="$(free_port)"
BASE="http://127.0.0.1:$SERVICE_PORT"
start_process service env \
    DATABASE_URL="$DATABASE_URL" \
    LISTEN_ADDR="127.0.0.1:$SERVICE_PORT" \
    SERVICE_TOKEN="$TOKEN" \
    CALLBACK_ALLOWED_CIDRS=127.0.0.0/8 \
    RUST_LOG=warn \
    BKCI_AMQP_URL="$AMQP_URL" \
    BKCI_AMQP_DECLARE=topic \
    BKCI_AMQP_QUEUE_PREFIX="$PREFIX" \
    BKCI_SERVICE_URL="http://127.0.0.1:$FAKE_PORT" \
    BKCI_SERVICE_USER=bench-admin \
    "$SERVICE_BIN"
wait_ready service "$BASE/readyz"
echo "bench: service at $BASE (pid $(process_pid service)), $MESSAGES messages to publish"

broker_pids() { pgrep -d ' ' -f beam.smp || true; }

OUTPUT="$WORK/driver.out"
SERVICE_PID="$(process_pid service)"
db_ticks_mark
declare -A TICKS=(
    [service]="$(cpu_ticks "$SERVICE_PID")"
    [rabbitmq]="$(cpu_ticks $(broker_pids))"
)
SERVICE_URL="$BASE" SERVICE_TOKEN="$TOKEN" AMQP_URL="$AMQP_URL" \
    QUEUE="engine.pipeline.build.callback.fanout.$PREFIX" \
    FAKE_ADDR="127.0.0.1:$FAKE_PORT" RECEIVER_ADDR="127.0.0.1:$RECEIVER_PORT" \
    MESSAGES="$MESSAGES" LIGHT_MESSAGES="$LIGHT_MESSAGES" "$DRIVER_BIN" | tee "$OUTPUT"
per_message() { # per_message TICKS: CPU ms per message, over both phases
    cpu_ms_per "$((MESSAGES + LIGHT_MESSAGES))" "$1"
}
echo "service_cpu_ms_per_message=$(per_message $(($(cpu_ticks "$SERVICE_PID") - TICKS[service])))"
echo "postgres_cpu_ms_per_message=$(per_message "$(db_ticks_since)")"
echo "rabbitmq_cpu_ms_per_message=$(per_message $(($(cpu_ticks $(broker_pids)) - TICKS[rabbitmq])))"
PEAK_KB="$(awk '/^VmHWM:/ { print $2 }' "/proc/$(process_pid service)/status")"
echo "service_peak_rss_mb=$(awk -v kb="$PEAK_KB" 'BEGIN { printf "%.1f", kb / 1024 }')"

value() { sed -n "s/^$1=//p" "$OUTPUT"; }
if (($(value missing) + $(value light_missing) > 0 || $(value duplicates) > 0)); then
    echo "bench: $(value missing) + $(value light_missing) missing and $(value duplicates) duplicated deliveries" >&2
    exit 1
fi
if (($(value messages_per_sec) < TARGET_RATE)); then
    echo "bench: $(value messages_per_sec) messages/s is under the target of $TARGET_RATE" >&2
    exit 2
fi
echo "bench: target met (>= $TARGET_RATE messages/s end to end)"
