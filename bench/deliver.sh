#!/usr/bin/env bash
# Delivery benchmark: event intake throughput, end-to-end delivery throughput, light-load latency
# and memory of the release service on PostgreSQL. Run by hand, not in CI.
#
#   bench/deliver.sh [healthy|hosts|mixed]
#
# healthy (the default): one callback on a fast local receiver (bench/receiver.rs).
#   1. Throughput: BENCH_EVENTS BUILD_TASK_END events (~600-byte payloads, distinct eventIds),
#      published in batches of 500 to /service/callbacks/events:batch by 4 concurrent senders.
#      intake = events / wall time of the publishing; end-to-end = events / (last first arrival at
#      the receiver - start of the publishing). Duplicates = receiver's received - distinct.
#   2. Light load: the receiver is reset, 300 single events are published one at a time at about
#      50/s; latency = first arrival - events.created_at (the epoch ms the intake transaction
#      writes), percentiles computed in SQL.
#   3. Resident memory of the service: idle after start, and the peak of 0.2 s samples taken
#      during the throughput run.
#   4. The work per delivery over the throughput run (publishing to the last SUCCESS row): CPU
#      milliseconds of the service and of the PostgreSQL backends serving the bench database (from
#      /proc/<pid>/stat), and WAL bytes (pg_current_wal_lsn() before and after; the whole
#      cluster's, so run it on a quiet one). When the cluster preloads pg_stat_statements (see
#      the README's Benchmarks section), the statements of the run, by total time, follow.
# hosts: the throughput run with four receivers, on 127.0.0.2 to 127.0.0.5, each the callback of
#   its own project; the events are spread over the four (targets as healthy, end-to-end 8000).
# mixed: first the healthy throughput run alone, then the same number of events again with every
#   tenth one going to a second receiver that holds each delivery past DELIVERY_TIMEOUT_MS (a
#   different host name, so the per-host cap applies); reports the healthy receiver's end-to-end
#   deliveries/s in both runs and their ratio (target >= 0.8).
#
# Needs psql, curl and python3, and a PostgreSQL that BENCH_DATABASE_URL can create databases on
# (default postgres://postgres@127.0.0.1:5432/postgres). A fresh database is made for the run and
# dropped at exit. Service and receiver listen on 127.0.0.1 only; nothing leaves this machine.
#
# Environment:
#   BENCH_DATABASE_URL   admin connection used to create/drop the bench database
#   BENCH_EVENTS         events of the throughput run (default 20000)
#   BENCH_BUILD          0 skips `cargo build` and uses the binaries already in the target dir
#
# Exit status: 0 all targets met, 1 error (a rejected request, a server that did not start, a
# delivery not recorded as SUCCESS, ...), 2 the run was clean but missed a target (intake >= 20000
# events/s, end-to-end >= 6000 deliveries/s (8000 to four hosts), PostgreSQL CPU <= 0.18 ms per
# delivery, light-load p50 <= 50 ms, RSS <= 20 MB idle and <= 64 MB under load).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$ROOT/bench/lib.sh"

MODE="${1:-healthy}"
EVENTS="${BENCH_EVENTS:-20000}"
BATCH=500
SENDERS=4
LAT_EVENTS=300
LAT_RATE=50              # events per second of the light-load run
DELIVERY_LIMIT_S=120     # longest wait for the throughput run's deliveries
RECORD_LIMIT_S=15        # longest wait for their SUCCESS rows after the last arrival
LAT_LIMIT_S=30           # longest wait for the light-load deliveries
TARGET_INTAKE=20000      # events/s
TARGET_E2E=6000          # deliveries/s to one host
TARGET_E2E_HOSTS=8000    # deliveries/s to four hosts
TARGET_DB_CPU_MS=0.18    # PostgreSQL CPU ms per delivery
HOSTS=(127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5)
TARGET_P50_MS=50
TARGET_RSS_IDLE_MB=20
TARGET_RSS_LOAD_MB=64
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVICE_BIN="$TARGET_DIR/release/devops-callbacks"
RECEIVER_BIN="$TARGET_DIR/release/examples/bench_receiver"
TOKEN=bench-token
SLOW_HOLD_MS=15000      # the mixed run's dead receiver holds each delivery past the 10 s timeout

case "$MODE" in
healthy | hosts | mixed) ;;
-h | --help)
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
*) die "unknown mode '$MODE' (healthy, hosts or mixed)" ;;
esac
[[ "$EVENTS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_EVENTS must be a positive whole number (got '$EVENTS')"
need_command psql postgresql-client
need_command curl curl
need_command python3 python3
require_postgres

# --- helpers -------------------------------------------------------------------------------------
now_ms() {
    local us=${EPOCHREALTIME/./}
    echo $((us / 1000))
}

# calc EXPRESSION: awk arithmetic, printed with up to 1 decimal.
calc() {
    awk "BEGIN { printf \"%.1f\", $1 }"
}

# start_service: the release service on the bench database; sets BASE (its base url).
start_service() {
    local port
    port="$(free_port)"
    [[ -x "$SERVICE_BIN" ]] || die "$SERVICE_BIN was not built"
    start_process service env \
        DATABASE_URL="$DATABASE_URL" \
        LISTEN_ADDR="127.0.0.1:$port" \
        SERVICE_TOKEN="$TOKEN" \
        CALLBACK_ALLOWED_CIDRS=127.0.0.0/8 \
        RUST_LOG=warn \
        "$SERVICE_BIN"
    BASE="http://127.0.0.1:$port"
    wait_ready service "$BASE/readyz"
}

# register_callback PROJECT URL: one BUILD_TASK_END callback, bench-admin being the project's admin.
register_callback() {
    local project=$1 url=$2 encoded
    encoded="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$url")"
    expect_ok "making bench-admin admin of project $project" -X PUT -H "X-DEVOPS-BK-TOKEN: $TOKEN" \
        "$BASE/op/projects/$project/members/bench-admin?role=admin"
    expect_ok "registering the callback to $url" -X POST \
        "$BASE/apigw-user/v4/projects/$project/callbacks?event=BUILD_TASK_END&region=IDC&url=$encoded&secretToken=bench-secret"
}

# kB of a process's resident memory: rss_kb PID [FIELD], FIELD VmRSS (default) or VmHWM (peak).
rss_kb() {
    local key value _
    while read -r key value _; do
        if [[ "$key" == "${2:-VmRSS}:" ]]; then
            echo "$value"
            return
        fi
    done <"/proc/$1/status"
    return 1
}

# sample_rss PID: VmRSS in kB every 0.2 s, one line each, while PID lives.
sample_rss() {
    while [[ -e "/proc/$1" ]]; do
        rss_kb "$1" || break
        sleep 0.2
    done
}

# machine_busy SECONDS: how busy all CPUs were over SECONDS, in % (others' work shows up here).
machine_busy() {
    local before after
    before="$(head -n 1 /proc/stat)"
    sleep "$1"
    after="$(head -n 1 /proc/stat)"
    awk -v a="$before" -v b="$after" 'BEGIN {
        n = split(a, x); split(b, y)
        for (i = 2; i <= n; i++) { total += y[i] - x[i]; if (i == 5 || i == 6) idle += y[i] - x[i] }
        printf "%.0f", (total > 0 ? 100 * (total - idle) / total : 0)
    }'
}

mb() { # mb KB
    calc "$1 / 1024"
}

# wait_distinct URLS COUNT SECONDS: until the receivers (URLS: space-separated) saw COUNT distinct
# deliveries between them, or SECONDS passed; sets DISTINCT to the last count. Polls every 0.1 s,
# so the waiting costs little CPU.
wait_distinct() {
    local count=$2 deadline url
    deadline=$(($(now_ms) + $3 * 1000))
    while :; do
        DISTINCT=0
        for url in $1; do
            DISTINCT=$((DISTINCT + $(receiver_stat "$url" distinct)))
        done
        ((DISTINCT < count && $(now_ms) < deadline)) || return 0
        sleep 0.1
    done
}

# receivers_stat URLS FIELD: the sum of one /stats field over the receivers.
receivers_stat() {
    local total=0 url
    for url in $1; do
        total=$((total + $(receiver_stat "$url" "$2")))
    done
    echo "$total"
}

# arrivals URLS FILE: the receivers' arrivals as one CSV (one header line).
arrivals() {
    local first=1 url
    for url in $1; do
        curl -s --max-time 30 "$url/arrivals" | if ((first)); then cat; else tail -n +2; fi
        first=0
    done >"$2"
}

# generate_events DIR PROJECTS COUNT BATCH PREFIX: DIR/NNNNN.json, JSON arrays of BATCH (the last
# maybe fewer) batch items with event ids PREFIX-0 … PREFIX-(COUNT-1), event i of the
# (i mod n)th of the comma-separated PROJECTS.
# generate_single DIR COUNT PREFIX: DIR/NNNNN.json, single-event bodies with ids PREFIX-N.
generate() {
    python3 - "$@" <<'PY'
import json, os, random, sys, time, uuid

kind, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
rng = random.Random(4242)
base_ms = int(time.time() * 1000) - 3_600_000


def hexid():
    return uuid.UUID(int=rng.getrandbits(128)).hex


def data(project, i):
    """A BUILD_TASK_END payload of about 600 bytes, as bk-ci would send for one task."""
    task_id = "e-" + hexid()
    start = base_ms + i * 7
    end = start + 41_000 + (i % 997) * 13
    return {
        "projectId": project,
        "pipelineId": "p-5f2c8a0e4b7d4e19a3c6b8d0f1e2a3b4",
        "pipelineName": "backend-service-ci",
        "buildId": "b-" + hexid(),
        "buildNo": 1000 + i,
        "userId": "bench-admin",
        "triggerUser": "bench-admin",
        "trigger": "WEB_HOOK",
        "status": "SUCCEED",
        "startTime": start,
        "endTime": end,
        "taskId": task_id,
        "model": {
            "name": "backend-service-ci",
            "stages": [{
                "id": "stage-2", "name": "Build", "status": "SUCCEED",
                "containers": [{
                    "id": "2", "name": "Job 2-1", "status": "SUCCEED",
                    "elements": [{
                        "id": task_id, "name": "Unit tests", "atomCode": "linuxScript",
                        "status": "SUCCEED", "elapsed": end - start - 3000,
                    }],
                }],
            }],
        },
    }


def write(n, value):
    with open(os.path.join(out, f"{n:05d}.json"), "w") as f:
        json.dump(value, f, separators=(",", ":"))


if kind == "mixed":
    # Every tenth event goes to the second project (the receiver that times out).
    project, slow, count, batch, prefix = sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    for n, first in enumerate(range(0, count, batch)):
        items = []
        for i in range(first, min(first + batch, count)):
            owner = slow if i % 10 == 9 else project
            items.append({"projectId": owner, "event": "BUILD_TASK_END", "data": data(owner, i),
                          "eventId": f"{prefix}-{i}"})
        write(n, items)
elif kind == "batches":
    projects, count, batch, prefix = sys.argv[3].split(","), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    project = projects[0]
    for n, first in enumerate(range(0, count, batch)):
        write(n, [
            {"projectId": projects[i % len(projects)], "event": "BUILD_TASK_END",
             "data": data(projects[i % len(projects)], i), "eventId": f"{prefix}-{i}"}
            for i in range(first, min(first + batch, count))
        ])
else:
    project, count, prefix = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    for i in range(count):
        write(i, {"event": "BUILD_TASK_END", "data": data(project, i), "eventId": f"{prefix}-{i}"})
print(len(json.dumps(data(project, 0), separators=(",", ":"))))
PY
}

# check_batch_answers DIR: every DIR/N.json was answered (DIR/N.json.answer, codes in DIR.codes)
# with HTTP 200, "status":0 and "deliveries":1 for each of its events. Prints problems.
check_batch_answers() {
    python3 - "$1" <<'PY'
import glob, json, os, sys

folder = sys.argv[1]
codes = {}
with open(folder + ".codes") as f:
    for line in f:
        code, _, path = line.strip().partition(" ")
        codes[path] = code
problems = []
for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
    name = os.path.basename(path)
    sent = len(json.load(open(path)))
    if codes.get(path) != "200":
        try:
            body = open(path + ".answer", errors="replace").read(300)
        except OSError:
            body = ""
        problems.append(f"{name}: HTTP {codes.get(path, 'no answer')}: {body}")
        continue
    try:
        answer = json.load(open(path + ".answer"))
    except (OSError, ValueError) as e:
        problems.append(f"{name}: unreadable answer: {e}")
        continue
    data = answer.get("data") or []
    ones = sum(1 for item in data if item.get("deliveries") == 1)
    if answer.get("status") != 0 or len(data) != sent or ones != sent:
        problems.append(f"{name}: {sent} sent, status {answer.get('status')}, {len(data)} answers, "
                        f"{ones} with deliveries 1: {json.dumps(answer)[:300]}")
for problem in problems[:10]:
    print(problem)
sys.exit(1 if problems else 0)
PY
}

# --- results and report --------------------------------------------------------------------------
ERRORS=()
declare -A RESULT=()
DISTINCT=0
THROUGHPUT_COMPLETE=0
ROWS=()

# row LABEL KEY OP TARGET: a summary line for RESULT[KEY] (OP is >= or <=, TARGET empty: report only).
row() {
    ROWS+=("$1|$2|$3|$4")
}

report() {
    local line label key op target value verdict missed=0
    echo
    printf '%-34s %12s %12s %8s\n' "deliver bench ($MODE, $EVENTS events)" measured target result
    for line in "${ROWS[@]}"; do
        IFS='|' read -r label key op target <<<"$line"
        value="${RESULT[$key]:-}"
        if [[ -z "$target" ]]; then
            verdict=""
            target=""
        elif [[ -z "$value" ]]; then
            verdict=FAIL
            missed=1
            target="$op $target"
        else
            if awk "BEGIN { exit !($value $op $target) }"; then verdict=PASS; else
                verdict=FAIL
                missed=1
            fi
            target="$op $target"
        fi
        printf '%-34s %12s %12s %8s\n' "$label" "${value:-n/a}" "$target" "$verdict"
    done
    if ((${#ERRORS[@]} > 0)); then
        echo
        printf 'bench: error: %s\n' "${ERRORS[@]}" >&2
        exit 1
    fi
    ((missed == 0)) || exit 2
}

# --- scenarios -----------------------------------------------------------------------------------
# throughput_run RECEIVER_URLS [PROJECTS]: publish $EVENTS events spread over PROJECTS (comma-
# separated, default bench), wait for all their deliveries at the receivers (space-separated).
throughput_run() {
    local receivers=$1 dir="$WORK/batches" size start end last success deadline service_pid
    local service_ticks wal_start
    size="$(generate batches "$dir" "${2:-bench}" "$EVENTS" "$BATCH" tp)"
    echo "bench: throughput: $EVENTS events of ${size}-byte data in batches of $BATCH, $SENDERS senders"
    service_pid="$(process_pid service)"
    start_process rss-sampler sample_rss "$service_pid"
    statements_reset
    db_ticks_mark
    service_ticks="$(cpu_ticks "$service_pid")"
    wal_start="$(psql_admin -c 'SELECT pg_current_wal_lsn()')"

    start="$(now_ms)"
    find "$dir" -name '*.json' | sort | xargs -P "$SENDERS" -I{} \
        curl -s --max-time 60 -o {}.answer -w '%{http_code} {}\n' \
        -H "X-DEVOPS-BK-TOKEN: $TOKEN" -H 'Content-Type: application/json' \
        --data-binary @{} "$BASE/service/callbacks/events:batch" >"$dir.codes" || true
    end="$(now_ms)"
    local problems
    if ! problems="$(check_batch_answers "$dir")"; then
        tail -n 20 "$WORK/service.log" >&2
        die "not every batch was accepted with one delivery per event (service log above):"$'\n'"$problems"
    fi
    RESULT[publish_s]="$(calc "($end - $start) / 1000")"
    RESULT[intake]="$(calc "$EVENTS * 1000 / ($end - $start)")"

    wait_distinct "$receivers" "$EVENTS" "$DELIVERY_LIMIT_S"
    if ((DISTINCT < EVENTS)); then
        # Too slow to measure, or deliveries lost: either way the end-to-end target is missed.
        stop_process rss-sampler
        echo "bench: only $DISTINCT of $EVENTS deliveries arrived within $DELIVERY_LIMIT_S s; skipping the rest" >&2
        RESULT[rss_load]="$(mb "$(sort -n "$WORK/rss-sampler.log" | tail -n 1)")"
        return
    fi
    arrivals "$receivers" "$WORK/arrivals-throughput.csv"
    last="$(awk -F, 'NR > 1 && $2 > max { max = $2 } END { printf "%.0f", max }' "$WORK/arrivals-throughput.csv")"
    RESULT[deliver_s]="$(calc "($last - $start) / 1000")"
    RESULT[e2e]="$(calc "$EVENTS * 1000 / ($last - $start)")"
    RESULT[duplicates]=$(($(receivers_stat "$receivers" received) - $(receivers_stat "$receivers" distinct)))

    # Outcomes are written in batches after the sends: give them a few seconds.
    deadline=$(($(now_ms) + RECORD_LIMIT_S * 1000))
    while :; do
        success="$(psql_db -c "SELECT count(*) FROM deliveries WHERE status = 'SUCCESS'")"
        ((success < EVENTS && $(now_ms) < deadline)) || break
        sleep 0.2
    done
    RESULT[service_cpu]="$(cpu_ms_per "$EVENTS" $(($(cpu_ticks "$service_pid") - service_ticks)))"
    RESULT[db_cpu]="$(cpu_ms_per "$EVENTS" "$(db_ticks_since)")"
    RESULT[wal]="$(psql_admin -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal_start') / $EVENTS)")"
    statements_report
    stop_process rss-sampler
    RESULT[success]="$success"
    if ((success != EVENTS)); then
        ERRORS+=("$success of $EVENTS deliveries are SUCCESS in the database $RECORD_LIMIT_S s after the last arrival: $(
            psql_db -F ' ' -c "SELECT status, count(*) FROM deliveries GROUP BY status ORDER BY status" | paste -sd ','
        )")
    fi
    RESULT[rss_load]="$(mb "$(sort -n "$WORK/rss-sampler.log" | tail -n 1)")"
    RESULT[rss_hwm]="$(mb "$(rss_kb "$service_pid" VmHWM)")"
    THROUGHPUT_COMPLETE=1
}

# latency_run RECEIVER_URL: $LAT_EVENTS single events at $LAT_RATE/s; latency percentiles.
latency_run() {
    local receiver=$1 dir="$WORK/single" interval_us start_us now_us due_us wait_us i out code status
    generate single "$dir" bench "$LAT_EVENTS" lat >/dev/null
    curl -s --max-time 5 -X POST "$receiver/reset" >/dev/null || die "the receiver did not reset"
    echo "bench: light load: $LAT_EVENTS single events at $LAT_RATE/s"
    interval_us=$((1000000 / LAT_RATE))
    start_us=${EPOCHREALTIME/./}
    for ((i = 0; i < LAT_EVENTS; i++)); do
        # Paced against the clock, so the time the requests take does not lower the rate.
        due_us=$((start_us + i * interval_us))
        now_us=${EPOCHREALTIME/./}
        wait_us=$((due_us - now_us))
        if ((wait_us > 0)); then
            sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))"
        fi
        status=0
        out="$(curl -s -w '\n%{http_code}' --max-time 10 -H "X-DEVOPS-BK-TOKEN: $TOKEN" \
            -H 'Content-Type: application/json' --data-binary "@$dir/$(printf '%05d' "$i").json" \
            "$BASE/service/callbacks/projects/bench/events")" || status=$?
        # curl killed by a signal (Ctrl-C reaches the whole process group): not a service error.
        ((status < 128)) || exit "$status"
        code="${out##*$'\n'}"
        if [[ "$code" != 200 || "$out" != *'"status":0'* || "$out" != *'"deliveries":1'* ]]; then
            tail -n 20 "$WORK/service.log" >&2
            die "single event lat-$i was not accepted with one delivery: HTTP $code: ${out%$'\n'*}"
        fi
    done
    now_us=${EPOCHREALTIME/./}
    RESULT[lat_rate]="$(calc "$LAT_EVENTS * 1000000 / ($now_us - $start_us)")"
    wait_distinct "$receiver" "$LAT_EVENTS" "$LAT_LIMIT_S"
    ((DISTINCT >= LAT_EVENTS)) ||
        die "only $DISTINCT of $LAT_EVENTS light-load deliveries arrived within $LAT_LIMIT_S s"
    curl -s --max-time 10 "$receiver/arrivals" >"$WORK/arrivals-latency.csv"

    local stats
    stats="$(psql_db -F ' ' <<SQL
CREATE TEMP TABLE arrivals (unique_id BIGINT PRIMARY KEY, arrived_ms DOUBLE PRECISION NOT NULL);
\\copy arrivals FROM '$WORK/arrivals-latency.csv' WITH (FORMAT csv, HEADER true)
SELECT count(*),
       round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY a.arrived_ms - e.created_at) AS numeric), 1),
       round(CAST(percentile_cont(0.99) WITHIN GROUP (ORDER BY a.arrived_ms - e.created_at) AS numeric), 1),
       round(CAST(max(a.arrived_ms - e.created_at) AS numeric), 1)
FROM arrivals a
JOIN deliveries d ON d.id = a.unique_id
JOIN events e ON e.id = d.event_pk
WHERE e.event_id LIKE 'lat-%';
SQL
    )"
    local count p50 p99 max
    read -r count p50 p99 max <<<"$stats"
    ((count == LAT_EVENTS)) ||
        ERRORS+=("only $count of $LAT_EVENTS light-load arrivals match a delivery of a lat-N event")
    RESULT[p50]="$p50"
    RESULT[p99]="$p99"
    RESULT[lat_max]="$max"
}

# The rows of the work per delivery.
work_rows() {
    row "PostgreSQL CPU per delivery (ms)" db_cpu "<=" "$TARGET_DB_CPU_MS"
    row "service CPU per delivery (ms)" service_cpu "" ""
    row "WAL per delivery (bytes)" wal "" ""
}

# statements_reset / statements_report: when the cluster preloads pg_stat_statements, the
# statements of the throughput run by total time, into $WORK/statements.txt and the output.
STATEMENTS=0
statements_reset() {
    if [[ "$(psql_admin -c "SHOW shared_preload_libraries")" == *pg_stat_statements* ]]; then
        psql_db -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
        psql_db -c "SELECT pg_stat_statements_reset()" >/dev/null
        STATEMENTS=1
    fi
}
statements_report() {
    ((STATEMENTS)) || return 0
    psql "$DATABASE_URL" -X -q -P pager=off <<SQL | tee "$WORK/statements.txt"
SELECT calls, round(CAST(total_exec_time AS numeric), 0) AS total_ms,
       round(CAST(1000 * total_exec_time / $EVENTS AS numeric), 1) AS us_per_delivery,
       rows, wal_bytes / $EVENTS AS wal_per_delivery, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND query NOT LIKE '%pg_stat_statements%'
ORDER BY total_exec_time DESC LIMIT 15;
SQL
}

scenario_healthy() {
    start_receiver receiver
    local receiver=$RECEIVER_URL
    register_callback bench "$receiver/hook"
    sleep 1
    RESULT[rss_idle]="$(mb "$(rss_kb "$(process_pid service)")")"

    row "intake (events/s)" intake ">=" "$TARGET_INTAKE"
    row "end-to-end (deliveries/s)" e2e ">=" "$TARGET_E2E"
    row "light-load p50 (ms)" p50 "<=" "$TARGET_P50_MS"
    row "light-load p99 (ms)" p99 "" ""
    row "RSS idle (MB)" rss_idle "<=" "$TARGET_RSS_IDLE_MB"
    row "RSS peak under load (MB)" rss_load "<=" "$TARGET_RSS_LOAD_MB"
    work_rows
    row "  publishing took (s)" publish_s "" ""
    row "  last delivery after (s)" deliver_s "" ""
    row "  SUCCESS rows in deliveries" success "" ""
    row "  duplicates (received-distinct)" duplicates "" ""
    row "  VmHWM after the run (MB)" rss_hwm "" ""
    row "  light-load send rate (/s)" lat_rate "" ""
    row "  light-load max (ms)" lat_max "" ""
    row "  CPU busy before the start (%)" busy_before "" ""

    throughput_run "$receiver"
    if ((THROUGHPUT_COMPLETE)); then
        latency_run "$receiver"
    fi
}

# Four receiving hosts, each its own project's callback: the per-host cap must not bound.
scenario_hosts() {
    local receivers="" projects="" i
    for i in "${!HOSTS[@]}"; do
        start_receiver "receiver-$i" 0 "${HOSTS[$i]}"
        receivers+="$RECEIVER_URL "
        projects+="${projects:+,}bench-$i"
        register_callback "bench-$i" "$RECEIVER_URL/hook"
    done
    sleep 1
    RESULT[rss_idle]="$(mb "$(rss_kb "$(process_pid service)")")"

    row "intake (events/s)" intake ">=" "$TARGET_INTAKE"
    row "end-to-end, 4 hosts (deliveries/s)" e2e ">=" "$TARGET_E2E_HOSTS"
    row "RSS peak under load (MB)" rss_load "<=" "$TARGET_RSS_LOAD_MB"
    work_rows
    row "  last delivery after (s)" deliver_s "" ""
    row "  SUCCESS rows in deliveries" success "" ""
    row "  duplicates (received-distinct)" duplicates "" ""
    row "  CPU busy before the start (%)" busy_before "" ""

    throughput_run "$receivers" "$projects"
}

# 90 % of the events to a healthy receiver, 10 % to one that never answers in time, after an
# all-healthy run of the same size for comparison.
scenario_mixed() {
    start_receiver receiver
    local healthy=$RECEIVER_URL
    start_receiver slow-receiver "$SLOW_HOLD_MS"
    # The same machine under another name: a different host for the per-host cap.
    local slow="${RECEIVER_URL/127.0.0.1/localhost}"
    register_callback bench "$healthy/hook"
    register_callback bench-slow "$slow/hook"
    sleep 1
    RESULT[rss_idle]="$(mb "$(rss_kb "$(process_pid service)")")"

    row "healthy alone (deliveries/s)" e2e "" ""
    row "healthy beside a dead one (/s)" e2e_mixed "" ""
    row "ratio mixed/alone" ratio ">=" 0.8
    row "RSS peak under load (MB)" rss_load "<=" "$TARGET_RSS_LOAD_MB"
    row "  intake, all-healthy run (events/s)" intake "" ""
    row "  intake, mixed run (events/s)" intake_mixed "" ""
    row "  timed-out attempts started" slow_started "" ""

    throughput_run "$healthy"
    ((THROUGHPUT_COMPLETE)) || return 0
    curl -s --max-time 5 -X POST "$healthy/reset" >/dev/null || die "the receiver did not reset"

    local dir="$WORK/mixed" start end last want
    want=$((EVENTS - EVENTS / 10))
    generate mixed "$dir" bench bench-slow "$EVENTS" "$BATCH" mx >/dev/null
    echo "bench: mixed: $EVENTS events, every tenth to a receiver holding each delivery ${SLOW_HOLD_MS} ms"
    start="$(now_ms)"
    find "$dir" -name '*.json' | sort | xargs -P "$SENDERS" -I{} \
        curl -s --max-time 60 -o {}.answer -w '%{http_code} {}\n' \
        -H "X-DEVOPS-BK-TOKEN: $TOKEN" -H 'Content-Type: application/json' \
        --data-binary @{} "$BASE/service/callbacks/events:batch" >"$dir.codes" || true
    end="$(now_ms)"
    local problems
    problems="$(check_batch_answers "$dir")" || die "not every mixed batch was accepted:"$'\n'"$problems"
    RESULT[intake_mixed]="$(calc "$EVENTS * 1000 / ($end - $start)")"
    wait_distinct "$healthy" "$want" "$DELIVERY_LIMIT_S"
    ((DISTINCT >= want)) || die "only $DISTINCT of $want healthy deliveries arrived within $DELIVERY_LIMIT_S s"
    curl -s --max-time 30 "$healthy/arrivals" >"$WORK/arrivals-mixed.csv"
    last="$(awk -F, 'NR > 1 && $2 > max { max = $2 } END { printf "%.0f", max }' "$WORK/arrivals-mixed.csv")"
    RESULT[e2e_mixed]="$(calc "$want * 1000 / ($last - $start)")"
    RESULT[ratio]="$(awk -v a="${RESULT[e2e_mixed]}" -v b="${RESULT[e2e]}" 'BEGIN { printf "%.3f", a / b }')"
    RESULT[slow_started]="$(receiver_stat "$RECEIVER_URL" received)"
}

# --- run -----------------------------------------------------------------------------------------
# Everything started from here on is stopped, and the database dropped, on any exit.
bench_workdir
create_database
if [[ "${BENCH_BUILD:-1}" != 0 ]]; then
    cargo build --release --bin devops-callbacks --example bench_receiver
fi
for binary in "$SERVICE_BIN" "$RECEIVER_BIN"; do
    [[ -x "$binary" ]] || die "$binary was not built"
done
# Other work on the machine lowers every figure: say so when there is some.
RESULT[busy_before]="$(machine_busy 1)"
if ((RESULT[busy_before] > 20)); then
    echo "bench: warning: the machine was ${RESULT[busy_before]} % busy before the start without this bench; the figures may be low" >&2
fi
start_service
echo "bench: service at $BASE (pid $(process_pid service))"
"scenario_$MODE"
report
