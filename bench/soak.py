#!/usr/bin/env python3
"""Traffic, receivers and the report of bench/soak.sh (run that script, not this file).

Mixed traffic against a running service for SOAK_SECONDS: valid creates, hostile creates and
intakes (NUL and CR/LF in urls and tokens, the reserved project id, deeply nested data), junk
methods, dripping headers, reads, and event batches whose deliveries go to local receivers that
answer 200 with NUL or invalid UTF-8 in the body, 500, or hang past the delivery timeout. Then it
waits for every delivery to finish and reports requests, 5xx answers, deliveries lost,
duplicates and the service's peak RSS. Exit status 0 when 5xx = 0, lost = 0 and peak RSS <= 64 MB.
"""

import http.client
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict

BASE = os.environ["SOAK_BASE"]
TOKEN = os.environ["SOAK_TOKEN"]
DATABASE_URL = os.environ["SOAK_DATABASE_URL"]
SERVICE_PID = int(os.environ["SOAK_SERVICE_PID"])
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "6"))
# Events published per second, spread over the projects. The failing receivers (one project
# each) take every attempt of the retry schedule, at most 16 at a time, so this stays modest.
EVENTS_PER_SECOND = int(os.environ.get("SOAK_EVENTS_PER_SECOND", "10"))
DRAIN_LIMIT_S = 120
TARGET_RSS_MB = 64
PROJECTS = [f"soak{i}" for i in range(8)]
GOOD_PATHS = ["/ok0", "/ok1", "/ok2", "/nul", "/latin1"]
# Registered in one project each: soak0 delivers to /fail, soak1 to /hang.
BAD_PATHS = ["/fail", "/hang"]
HANG_S = 5

host, port = urllib.parse.urlsplit(BASE).netloc.split(":")
port = int(port)


# --- receivers ------------------------------------------------------------------------------------
receipts = defaultdict(Counter)  # path -> delivery id -> times received
receipts_lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        delivery = self.headers.get("X-DEVOPS-WEBHOOK-UNIQUE-ID", "")
        with receipts_lock:
            receipts[self.path][delivery] += 1
        status, body = {
            "/nul": (200, b"ok\0\0"),
            "/latin1": (200, b"caf\xe9 \xff\xfe"),
            "/fail": (500, b"\0broken\0"),
        }.get(self.path, (200, b"ok"))
        if self.path == "/hang":
            time.sleep(HANG_S)
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the service gave up waiting (the hanging receiver): expected


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def start_receiver(address):
    server = QuietServer((address, 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://{address}:{server.server_address[1]}"


# --- the client side ------------------------------------------------------------------------------
statuses = Counter()  # HTTP status -> count
five_xx = []  # (what, status, body) of every 5xx
stats_lock = threading.Lock()
acknowledged = Counter()  # events, deliveries promised


class Client:
    def __init__(self):
        self.connection = None

    def call(self, what, method, path, headers=None, body=None):
        for attempt in range(2):
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection(host, port, timeout=30)
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the server closed (idle timeout): once more, fresh.
                self.connection = None
                if attempt == 1:
                    raise
        with stats_lock:
            statuses[response.status] += 1
            if response.status >= 500:
                five_xx.append((what, response.status, data[:200]))
        if response.getheader("Connection", "").lower() == "close":
            self.connection = None
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, None


def q(text):
    return urllib.parse.quote(text, safe="")


def service_headers(user=None):
    headers = {"X-DEVOPS-BK-TOKEN": TOKEN, "Content-Type": "application/json"}
    if user:
        headers["X-DEVOPS-UID"] = user
    return headers


def expect(what, answer, status):
    if answer[0] != status:
        raise SystemExit(f"soak: {what} answered {answer[0]}: {answer[1]}")


def setup(client, good, bad):
    for project in PROJECTS + ["evil"]:
        user = "mallory" if project == "evil" else "admin"
        expect(
            "adding a member",
            client.call("member", "PUT", f"/op/projects/{project}/members/{user}?role=admin",
                        service_headers()),
            200,
        )
    for project in PROJECTS:
        for path in GOOD_PATHS:
            register(client, project, good + path)
    for project, path in zip(PROJECTS, BAD_PATHS):
        register(client, project, bad + path)


def register(client, project, url, event="BUILD_END", user="admin", token="soak-token"):
    return client.call(
        "create", "POST",
        f"/apigw-user/v4/projects/{project}/callbacks?event={event}&region=IDC&url={q(url)}"
        f"&secretToken={q(token)}",
        {"X-DEVOPS-UID": user},
    )


event_counter = iter(range(10**9))
counter_lock = threading.Lock()


def next_event_id():
    with counter_lock:
        return f"soak-{next(event_counter)}"


def publisher(deadline, failures):
    """EVENTS_PER_SECOND events a second, in one batch, until the deadline."""
    rng = random.Random(-1)
    client = Client()
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            events = [
                {"projectId": PROJECTS[i % len(PROJECTS)], "event": "BUILD_END",
                 "eventId": next_event_id(),
                 "data": {"buildId": rng.randrange(10**6), "note": "x" * rng.randrange(300)}}
                for i in range(EVENTS_PER_SECOND)
            ]
            status, body = client.call("publish", "POST", "/service/callbacks/events:batch",
                                       service_headers(), json.dumps(events))
            if status == 200:
                with stats_lock:
                    acknowledged["events"] += len(events)
                    acknowledged["deliveries"] += sum(item["deliveries"] for item in body["data"])
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
        failures.append(repr(error))


def valid_create(client, rng, good, bad):
    # BUILD_START is never published, so these registrations are never delivered to.
    project = rng.choice(PROJECTS)
    register(client, project, f"{good}/registered/{rng.randrange(5000)}", event="BUILD_START")


HOSTILE_CREATES = [
    ("url with NUL", lambda good: ("evil", good + "/a\0b", "t")),
    ("url with CR/LF", lambda good: ("evil", good + "/a\r\nX-Injected: 1", "t")),
    ("token with NUL", lambda good: ("evil", good + "/t", "ab\0cd")),
    ("token with CR/LF", lambda good: ("evil", good + "/t", "ab\r\nX-Injected: 1")),
    ("reserved project", lambda good: ("DEVOPS_ALL_PROJECT", good + "/g", "t")),
]


def hostile_create(client, rng, good, bad):
    what, make = rng.choice(HOSTILE_CREATES)
    project, url, token = make(good)
    status, body = register(client, project, url, user="mallory", token=token)
    if status != 400:
        raise SystemExit(f"soak: hostile create ({what}) answered {status}: {body}")


def hostile_intake(client, rng, good, bad):
    if rng.random() < 0.5:
        deep = "[" * 70 + "]" * 70
        body = f'{{"event":"BUILD_END","data":{{"a":{deep}}}}}'
        project = rng.choice(PROJECTS)
    else:
        body = '{"event":"PROJECT_UPDATE","data":{}}'
        project = "DEVOPS_ALL_PROJECT"
    status, answer = client.call("hostile intake", "POST",
                                 f"/service/callbacks/projects/{project}/events",
                                 service_headers(), body)
    if status != 400:
        raise SystemExit(f"soak: hostile intake answered {status}: {answer}")


def junk_method(client, rng, good, bad):
    method = f"M{rng.randrange(10**6):06d}" + "Q" * rng.randrange(2000)
    client.call("junk method", method, "/healthz")


def read(client, rng, good, bad):
    project = rng.choice(PROJECTS)
    base = f"/apigw-user/v4/projects/{project}/callbacks"
    path = rng.choice([f"{base}/callback_list?pageSize=50", f"{base}/callback_history?pageSize=20"])
    client.call("read", "GET", path, {"X-DEVOPS-UID": "admin"})


def dripping_headers(client, rng, good, bad):
    # A slow-loris connection in the background: the header read timeout must cut it off.
    def drip():
        try:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                for i in range(60):
                    time.sleep(1)
                    sock.sendall(f"X-Drip-{i}: y\r\n".encode())
        except OSError:
            pass  # cut off, as it should be

    threading.Thread(target=drip, daemon=True).start()


ACTIONS = [
    (valid_create, 35), (hostile_create, 25), (hostile_intake, 5), (junk_method, 5),
    (read, 29), (dripping_headers, 1),
]


def worker(seed, deadline, good, bad, failures):
    rng = random.Random(seed)
    client = Client()
    functions = [f for f, _ in ACTIONS]
    weights = [w for _, w in ACTIONS]
    try:
        while time.monotonic() < deadline:
            rng.choices(functions, weights)[0](client, rng, good, bad)
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
        failures.append(repr(error))


# --- the report -----------------------------------------------------------------------------------
def psql(sql):
    out = subprocess.run(["psql", DATABASE_URL, "-X", "-q", "-A", "-t", "-F", "\t", "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def peak_rss_mb():
    with open(f"/proc/{SERVICE_PID}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    good = start_receiver("127.0.0.1")
    bad = start_receiver("127.0.0.2")
    setup(Client(), good, bad)
    print(f"soak: {SECONDS} s of mixed traffic from {WORKERS} workers and {EVENTS_PER_SECOND} "
          f"events/s; receivers {good} and {bad}")
    deadline = time.monotonic() + SECONDS
    failures = []
    threads = [threading.Thread(target=worker, args=(i, deadline, good, bad, failures))
               for i in range(WORKERS)]
    threads.append(threading.Thread(target=publisher, args=(deadline, failures)))
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(30)
        with stats_lock:
            print(f"soak: {sum(statuses.values())} requests, {acknowledged['events']} events "
                  f"acknowledged, peak RSS {peak_rss_mb():.1f} MB", flush=True)
    for thread in threads:
        thread.join()
    if failures:
        print("soak: a worker stopped:", *failures, sep="\n  ")

    # Every acknowledged delivery must finish: SUCCESS at the 200 receivers, FAILED after the
    # retry schedule at the 500 and hanging ones.
    drain_deadline = time.monotonic() + DRAIN_LIMIT_S
    while True:
        pending = int(psql("SELECT COUNT(*) FROM deliveries WHERE status = 'PENDING'")[0][0])
        if pending == 0 or time.monotonic() > drain_deadline:
            break
        time.sleep(1)
    rows = psql("SELECT d.id, c.url, d.status, d.attempts FROM deliveries d "
                "JOIN callbacks c ON c.id = d.callback_id")
    expected_status = {path: "SUCCESS" for path in GOOD_PATHS}
    expected_status.update({path: "FAILED" for path in BAD_PATHS})
    lost = duplicates = wrong_state = 0
    by_path = Counter()
    with receipts_lock:
        for delivery, url, status, attempts in rows:
            path = urllib.parse.urlsplit(url).path
            by_path[path] += 1
            received = receipts[path][delivery]
            if received == 0:
                lost += 1
            if status != expected_status[path]:
                wrong_state += 1
            # A 200 receiver is sent each delivery once; the others once per attempt.
            duplicates += received - (1 if path in GOOD_PATHS else int(attempts))
    unrecorded = int(psql(
        "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS "
        "(SELECT 1 FROM callback_history h WHERE h.delivery_id = d.id)")[0][0])
    missing = acknowledged["deliveries"] - len(rows)
    total = sum(statuses.values())
    rss = peak_rss_mb()
    print()
    print(f"requests            {total} ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})")
    print(f"5xx answers         {len(five_xx)}")
    for what, status, body in five_xx[:10]:
        print(f"  {what}: {status} {body!r}")
    print(f"events acknowledged {acknowledged['events']} ({acknowledged['deliveries']} deliveries)")
    print(f"deliveries stored   {len(rows)} (missing: {missing}); per receiver: "
          + ", ".join(f"{p} {n}" for p, n in sorted(by_path.items())))
    print(f"deliveries lost     {lost} (never received); not in their expected state: {wrong_state}; "
          f"without history: {unrecorded}")
    print(f"duplicates          {duplicates}")
    print(f"peak RSS            {rss:.1f} MB (target <= {TARGET_RSS_MB})")
    ok = (not failures and not five_xx and lost == 0 and missing == 0 and wrong_state == 0
          and unrecorded == 0 and rss <= TARGET_RSS_MB)
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
