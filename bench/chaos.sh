#!/usr/bin/env bash
# Chaos run: mixed traffic against the release service while the database fails in every way the
# fault model names (README, "Database faults"), then an account of what was acknowledged and
# delivered. Run by hand, not in CI.
#
#   bench/chaos.sh
#
# A private PostgreSQL cluster is made for the run (initdb in a temporary directory, run as the
# `postgres` OS user when started as root, on a free port of 127.0.0.1, its socket in that
# directory) and removed at exit; the shared cluster is never touched. On it, one database
# `chaos` serves the release service, and a bench receiver (bench/receiver.rs) answers every
# delivery with 200 at once.
#
# Traffic: CHAOS_CLIENTS clients, each in a loop of callback creates, single-event publishes,
# batch publishes (5 events) and callback lists, one request at a time with curl, for
# CHAOS_SECS seconds and at most CHAOS_MAX_REQUESTS requests each.
# Faults, one after another, each lasting CHAOS_FAULT_SECS with CHAOS_GAP_SECS of health between:
#   refuse     ALTER DATABASE chaos ALLOW_CONNECTIONS false and its sessions terminated
#   terminate  its sessions terminated (momentary)
#   readonly   ALTER DATABASE chaos SET default_transaction_read_only = on, sessions terminated
#              (a switchover that left them on a read-only server); healed by RESET alone
#   restart    the cluster stopped (-m fast and -m immediate in turn) and started again
#
# Then the faults stop, every pending delivery is waited for (up to CHAOS_DRAIN_SECS), and the
# report gives: requests by answer, 5xx other than 503 (must be 0), events acknowledged (a 200
# from the intake), delivered (an acknowledged event's delivery that reached the receiver), lost
# (acknowledged but never delivered, or not in the database: must be 0), duplicates (deliveries
# received more than once; delivery is at-least-once), and the service's outage log lines.
#
# Environment (defaults in brackets):
#   CHAOS_SECS [300]  CHAOS_FAULT_SECS [3]  CHAOS_GAP_SECS [3]  CHAOS_CLIENTS [3]
#   CHAOS_MAX_REQUESTS [200000]  CHAOS_DRAIN_SECS [180]
#   BENCH_BUILD        0 skips `cargo build` and uses the binaries already in the target dir
#   PG_BIN             PostgreSQL's programs [/usr/lib/postgresql/15/bin]
#
# Exit status: 0 clean (no 5xx but 503, nothing lost), 1 otherwise or on an error.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$ROOT/bench/lib.sh"

SECS="${CHAOS_SECS:-300}"
FAULT_SECS="${CHAOS_FAULT_SECS:-3}"
GAP_SECS="${CHAOS_GAP_SECS:-3}"
CLIENTS="${CHAOS_CLIENTS:-3}"
MAX_REQUESTS="${CHAOS_MAX_REQUESTS:-200000}"
DRAIN_SECS="${CHAOS_DRAIN_SECS:-180}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVICE_BIN="$TARGET_DIR/release/devops-callbacks"
RECEIVER_BIN="$TARGET_DIR/release/examples/bench_receiver"
TOKEN=bench-token
PROJECT=chaos

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
fi
for value in "$SECS" "$FAULT_SECS" "$GAP_SECS" "$CLIENTS" "$MAX_REQUESTS" "$DRAIN_SECS"; do
    [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "CHAOS_* settings must be positive whole numbers (got '$value')"
done
need_command psql postgresql-client
need_command curl curl
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || die "no initdb/pg_ctl in $PG_BIN (set PG_BIN)"

# --- the private cluster -------------------------------------------------------------------------
PG_DIR=""
PG_PORT=""

# as_postgres PROGRAM ARGS...: one of PostgreSQL's programs, as the postgres OS user under root.
as_postgres() {
    local program="$PG_BIN/$1"
    shift
    if ((EUID == 0)); then
        runuser -u postgres -- "$program" "$@"
    else
        "$program" "$@"
    fi
}

cluster_start() {
    as_postgres pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
}

cluster_stop() { # cluster_stop MODE
    as_postgres pg_ctl -D "$PG_DIR/data" -m "$1" -w -t 60 stop >/dev/null
}

remove_cluster() {
    [[ -n "$PG_DIR" ]] || return 0
    as_postgres pg_ctl -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}

make_cluster() {
    PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/devops-callbacks-chaos-pg.XXXXXX")"
    on_cleanup remove_cluster
    ((EUID != 0)) || chown postgres: "$PG_DIR"
    as_postgres initdb -D "$PG_DIR/data" -A trust -U postgres >/dev/null
    PG_PORT="$(free_port)"
    cluster_start
    ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$PROJECT"
    psql_admin -c "CREATE DATABASE $PROJECT" >/dev/null
    echo "chaos: private cluster on 127.0.0.1:$PG_PORT ($PG_DIR)"
}

terminate_sessions() {
    # A session that ends by itself meanwhile is only a warning, not worth printing.
    psql_admin -c "SET client_min_messages = error" \
        -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
            WHERE datname = '$PROJECT' AND backend_type = 'client backend'" >/dev/null
}

# --- faults --------------------------------------------------------------------------------------
FAULT_KINDS=(refuse terminate readonly restart)
declare -A FAULTS_MADE=()
RESTARTS=0

fault_begin() {
    case "$1" in
    refuse)
        psql_admin -c "ALTER DATABASE $PROJECT ALLOW_CONNECTIONS false" >/dev/null
        terminate_sessions
        ;;
    terminate) terminate_sessions ;;
    readonly)
        psql_admin -c "ALTER DATABASE $PROJECT SET default_transaction_read_only = on" >/dev/null
        terminate_sessions
        ;;
    restart)
        RESTARTS=$((RESTARTS + 1))
        if ((RESTARTS % 2)); then cluster_stop fast; else cluster_stop immediate; fi
        ;;
    esac
}

fault_end() {
    case "$1" in
    refuse) psql_admin -c "ALTER DATABASE $PROJECT ALLOW_CONNECTIONS true" >/dev/null ;;
    terminate) ;;
    readonly) psql_admin -c "ALTER DATABASE $PROJECT RESET default_transaction_read_only" >/dev/null ;;
    restart) cluster_start ;;
    esac
}

# --- traffic -------------------------------------------------------------------------------------
# client N: the request loop of client N; one line per request in $WORK/client-N.out:
# KIND HTTP-CODE [EVENT-IDS...] (the event ids of publishes).
client() {
    local n=$1 i=0 end code ids body
    local out="$WORK/client-$n.out" v4="$BASE/apigw-user/v4/projects/$PROJECT/callbacks"
    end=$((SECONDS + SECS))
    while ((SECONDS < end && i < MAX_REQUESTS)); do
        i=$((i + 1))
        case $((i % 6)) in
        0)
            code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 40 -X POST \
                -H 'X-DEVOPS-UID: bench-admin' \
                "$v4?event=BUILD_START&region=IDC&url=$RECEIVER_ENC%2Fother%2F$n-$i" || true)"
            echo "create $code" >>"$out"
            ;;
        1 | 2 | 4)
            ids="c$n-$i"
            code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 40 -X POST \
                -H "X-DEVOPS-BK-TOKEN: $TOKEN" -H 'Content-Type: application/json' \
                -d "{\"event\":\"BUILD_END\",\"data\":{\"n\":\"$ids\"},\"eventId\":\"$ids\"}" \
                "$BASE/service/callbacks/projects/$PROJECT/events" || true)"
            echo "publish $code $ids" >>"$out"
            ;;
        3)
            ids="" body=""
            for k in 0 1 2 3 4; do
                ids+=" c$n-$i-$k"
                body+="${body:+,}{\"projectId\":\"$PROJECT\",\"event\":\"BUILD_END\",\"data\":{\"n\":\"c$n-$i-$k\"},\"eventId\":\"c$n-$i-$k\"}"
            done
            code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 40 -X POST \
                -H "X-DEVOPS-BK-TOKEN: $TOKEN" -H 'Content-Type: application/json' \
                -d "[$body]" "$BASE/service/callbacks/events:batch" || true)"
            echo "batch $code$ids" >>"$out"
            ;;
        5)
            code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 40 \
                -H 'X-DEVOPS-UID: bench-admin' "$v4/callback_list?page=1&pageSize=5" || true)"
            echo "list $code" >>"$out"
            ;;
        esac
    done
}

# --- the run -------------------------------------------------------------------------------------
if [[ "${BENCH_BUILD:-1}" != 0 ]]; then
    echo "chaos: building the release service and receiver"
    cargo build --release --quiet --bin devops-callbacks --example bench_receiver
fi
[[ -x "$SERVICE_BIN" ]] || die "$SERVICE_BIN was not built"
bench_workdir
make_cluster
start_receiver receiver
RECEIVER_ENC="http%3A%2F%2F${RECEIVER_URL#http://}"
RECEIVER_ENC="${RECEIVER_ENC//:/%3A}"

SERVICE_PORT="$(free_port)"
BASE="http://127.0.0.1:$SERVICE_PORT"
start_process service env \
    DATABASE_URL="$DATABASE_URL" \
    LISTEN_ADDR="127.0.0.1:$SERVICE_PORT" \
    SERVICE_TOKEN="$TOKEN" \
    CALLBACK_ALLOWED_CIDRS=127.0.0.0/8 \
    DELIVERY_LEASE_SECS=15 \
    DELIVERY_TIMEOUT_MS=5000 \
    DELIVERY_RETRY_SCHEDULE=1s,2s,5s,10s,20s,30s,60s \
    RUST_LOG=devops_callbacks=info \
    "$SERVICE_BIN"
wait_ready service "$BASE/readyz"
expect_ok "making bench-admin admin of $PROJECT" -X PUT -H "X-DEVOPS-BK-TOKEN: $TOKEN" \
    "$BASE/op/projects/$PROJECT/members/bench-admin?role=admin"
expect_ok "registering the callback" -X POST \
    "$BASE/apigw-user/v4/projects/$PROJECT/callbacks?event=BUILD_END&region=IDC&url=$RECEIVER_ENC%2Fhook"

echo "chaos: $CLIENTS clients for ${SECS}s; a fault every $((FAULT_SECS + GAP_SECS))s, lasting ${FAULT_SECS}s"
for n in $(seq "$CLIENTS"); do
    start_process "client-$n" client "$n"
done
end=$((SECONDS + SECS))
round=0
while ((SECONDS + FAULT_SECS < end)); do
    kind="${FAULT_KINDS[round % ${#FAULT_KINDS[@]}]}"
    round=$((round + 1))
    FAULTS_MADE[$kind]=$((${FAULTS_MADE[$kind]:-0} + 1))
    fault_begin "$kind"
    sleep "$FAULT_SECS"
    fault_end "$kind"
    sleep "$GAP_SECS"
done
for n in $(seq "$CLIENTS"); do
    wait_process "client-$n"
done

# --- the account ---------------------------------------------------------------------------------
cat "$WORK"/client-*.out >"$WORK/requests"
awk '$1 ~ /publish|batch/ && $2 == 200 { for (i = 3; i <= NF; i++) print $i }' "$WORK/requests" |
    sort -u >"$WORK/acked"
acked=$(wc -l <"$WORK/acked")

echo "chaos: faults over; waiting up to ${DRAIN_SECS}s for the pending deliveries"
deadline=$((SECONDS + DRAIN_SECS))
while :; do
    pending="$(psql_db -c "SELECT count(*) FROM deliveries WHERE status = 'PENDING'")"
    ((pending > 0 && SECONDS < deadline)) || break
    sleep 1
done

# The acknowledged events' delivery ids (none for an event that is not stored: lost).
psql_db -c "CREATE TABLE chaos_acked (event_id text PRIMARY KEY)"
psql_db -c "\\copy chaos_acked FROM '$WORK/acked'"
not_stored="$(psql_db -c "SELECT count(*) FROM chaos_acked a LEFT JOIN events e
    ON e.project_id = '$PROJECT' AND e.event_id = a.event_id WHERE e.id IS NULL")"
psql_db -c "SELECT d.id FROM chaos_acked a JOIN events e
    ON e.project_id = '$PROJECT' AND e.event_id = a.event_id
    JOIN deliveries d ON d.event_pk = e.id" | sort -u >"$WORK/acked-deliveries"
curl -s --max-time 10 "$RECEIVER_URL/arrivals" | tail -n +2 | cut -d, -f1 | sort -u >"$WORK/arrived"
delivered=$(comm -12 "$WORK/acked-deliveries" "$WORK/arrived" | wc -l)
undelivered=$(comm -23 "$WORK/acked-deliveries" "$WORK/arrived" | wc -l)
without_delivery="$(psql_db -c "SELECT count(*) FROM chaos_acked a JOIN events e
    ON e.project_id = '$PROJECT' AND e.event_id = a.event_id
    WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_pk = e.id)")"
lost=$((not_stored + without_delivery + undelivered))
duplicates=$(($(receiver_stat "$RECEIVER_URL" received) - $(receiver_stat "$RECEIVER_URL" distinct)))

requests=$(wc -l <"$WORK/requests")
count_code() { awk -v c="$1" '$2 ~ c { n++ } END { print n + 0 }' "$WORK/requests"; }
ok=$(count_code '^200$')
unavailable=$(count_code '^503$')
other_5xx=$(count_code '^5[0-9][0-9]$')
other_5xx=$((other_5xx - unavailable))
client_4xx=$(count_code '^4')
no_answer=$(count_code '^000$')
outages_started=$(grep -c 'the database is unavailable' "$WORK/service.log" || true)
outages_ended=$(grep -c 'the database is available again' "$WORK/service.log" || true)
faults_total=0
fault_summary=""
for kind in "${FAULT_KINDS[@]}"; do
    faults_total=$((faults_total + ${FAULTS_MADE[$kind]:-0}))
    fault_summary+=" $kind=${FAULTS_MADE[$kind]:-0}"
done

cat <<REPORT

chaos: ${SECS}s, $CLIENTS clients, faults:$fault_summary (total $faults_total)
  requests           $requests  (200: $ok, 503: $unavailable, 4xx: $client_4xx, no answer: $no_answer)
  5xx other than 503 $other_5xx
  events acknowledged $acked
  delivered          $delivered
  lost               $lost  (not stored: $not_stored, no delivery row: $without_delivery, never arrived: $undelivered)
  duplicates         $duplicates
  pending at the end $pending
  outage log lines   $outages_started started, $outages_ended ended
REPORT
if ((other_5xx > 0)); then
    grep -E 'status=5[0-9][0-9]' "$WORK/service.log" | grep -v 'status=503' | head -5 >&2 || true
fi
((other_5xx == 0 && lost == 0 && no_answer == 0)) || exit 1
