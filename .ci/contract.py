"""Helpers of the contract run (.ci/contract.sh).

  python3 .ci/contract.py seed BASE_URL CONFIG_OUT
      Seeds the running server with what the operations need to succeed (alice admin of `demo`,
      project callbacks, global callbacks, a history row, a recovery job of each kind) and writes
      schemathesis' configuration to CONFIG_OUT: .ci/schemathesis.toml followed by the seeded ids, bound to the operations
      that take them.

  python3 .ci/contract.py check WFC_REPORT
      Fails unless every operation schemathesis tested got at least one 2xx, and prints the
      statuses each one saw.
"""

import json
import pathlib
import sys
import time
import urllib.parse
import urllib.request

TOKEN = "contract-token"
# A loopback URL the server's allowlist accepts; nothing listens on the discard port, so every
# delivery to it fails quickly and leaves a history row.
HOOK = "http://127.0.0.1:9/contract"


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("X-DEVOPS-BK-TOKEN", TOKEN)
    request.add_header("X-DEVOPS-UID", "alice")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        envelope = json.load(response)
    if envelope.get("status") != 0:
        raise SystemExit(f"seeding {method} {path} failed: {envelope}")
    return envelope.get("data")


def register(base, event, path="/apigw-user/v4/projects/demo/callbacks"):
    query = urllib.parse.urlencode({"event": event, "region": "IDC", "url": HOOK})
    call(base, "POST", f"{path}?{query}")


def project_callback_id(base, event):
    page = call(base, "GET", "/apigw-user/v4/projects/demo/callbacks/callback_list?pageSize=100")
    return next(r["id"] for r in page["records"] if r["events"] == event)


def global_callback_id(base, event):
    page = call(base, "GET", "/op/callbacks/global?pageSize=100")
    return next(r["id"] for r in page["records"] if r["events"] == event)


def history_id(base):
    """The first history row of `demo`, once the first delivery attempt has failed."""
    for _ in range(150):
        page = call(base, "GET", "/apigw-user/v4/projects/demo/callbacks/callback_history")
        if page["records"]:
            return page["records"][0]["id"]
        time.sleep(0.1)
    raise SystemExit("seeding: no delivery attempt was recorded within 15 s")


def seed(base, config_out):
    call(base, "PUT", "/op/projects/demo/members/alice?role=admin")
    # Enabled, disabled and re-sent by the tests; and one that callback_delete deletes.
    register(base, "BUILD_START")
    register(base, "BUILD_END")
    # One global callback for each of the two global deletes, and one kept for its deliveries and
    # recoveries.
    register(base, "PROJECT_CREATE", "/op/callbacks/global")
    register(base, "PROJECT_UPDATE", "/op/callbacks/global")
    register(base, "PROJECT_ENABLE", "/op/callbacks/global")
    call(base, "POST", "/service/callbacks/projects/demo/events", {"event": "BUILD_START", "data": {}})
    kept = project_callback_id(base, "BUILD_START")
    doomed = project_callback_id(base, "BUILD_END")
    attempt = history_id(base)
    global_a = global_callback_id(base, "PROJECT_CREATE")
    global_b = global_callback_id(base, "PROJECT_UPDATE")
    global_kept = global_callback_id(base, "PROJECT_ENABLE")
    since = urllib.parse.quote("2020-01-01 00:00:00")
    global_job = call(base, "POST", f"/op/callbacks/global/{global_kept}/recover?since={since}")["jobId"]
    recover = f"/apigw-user/v4/projects/demo/callbacks/callback_recover?id={kept}&since={since}"
    project_job = call(base, "POST", recover)["jobId"]
    static = pathlib.Path(__file__).with_name("schemathesis.toml").read_text()
    # Ids the tests may change but not destroy are offered half of the time, so the other half
    # still tries arbitrary ids; a delete always gets its own victim, so that it cannot take the
    # callbacks the other operations need.
    seeded = f"""
# --- seeded by .ci/contract.py for this run ---
[dictionaries.kept-callback]
values = [{kept}]

[dictionaries.history-row]
values = [{attempt}]

[[operations]]
include-operation-id = ["callback_enable", "callback_disable", "callback_deliveries", "callback_recover"]
parameters = {{ "query.id" = {{ dictionary = "kept-callback", probability = 0.5 }} }}

[[operations]]
include-operation-id = "callback_history_retry"
parameters = {{ "query.id" = {{ dictionary = "history-row", probability = 0.5 }} }}

[dictionaries.kept-global]
values = [{global_kept}]

[dictionaries.global-job]
values = [{global_job}]

[dictionaries.project-job]
values = [{project_job}]

[[operations]]
include-operation-id = ["global_callback_deliveries", "global_callback_recover"]
parameters = {{ "path.id" = {{ dictionary = "kept-global", probability = 0.5 }} }}

[[operations]]
include-operation-id = ["global_recover_job_get", "global_recover_job_cancel"]
parameters = {{ "path.job_id" = {{ dictionary = "global-job", probability = 0.5 }} }}

[[operations]]
include-operation-id = ["recover_job_get", "recover_job_cancel"]
parameters = {{ "path.job_id" = {{ dictionary = "project-job", probability = 0.5 }} }}

[[operations]]
include-operation-id = "callback_delete"
parameters = {{ "query.id" = {doomed} }}

[[operations]]
include-operation-id = "global_callback_delete"
parameters = {{ "path.id" = {global_a} }}

[[operations]]
include-operation-id = "bkci_op_callback_delete"
parameters = {{ "path.id" = {global_b} }}
"""
    pathlib.Path(config_out).write_text(static + seeded)


def check(report):
    rest = json.loads(pathlib.Path(report).read_text())["problemDetails"]["rest"]
    if not rest["endpointIds"]:
        raise SystemExit(f"{report} names no operations")
    covered = {entry["endpointId"]: entry["httpStatus"] for entry in rest["coveredHttpStatus"]}
    missing = []
    for endpoint in rest["endpointIds"]:
        # The document itself is what schemathesis loads, not one of the operations it tests.
        if endpoint == "GET:/openapi.json":
            continue
        statuses = covered.get(endpoint, [])
        succeeded = any(status is not None and 200 <= status < 300 for status in statuses)
        print(f"  {'ok  ' if succeeded else 'NO  '} {endpoint}: {statuses}")
        if not succeeded:
            missing.append(endpoint)
    if missing:
        print(f"{len(missing)} operation(s) never answered a 2xx: {', '.join(missing)}", file=sys.stderr)
        sys.exit(1)
    print(f"every one of {len(rest['endpointIds']) - 1} operations answered a 2xx")


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["seed", base, config_out]:
            seed(base, config_out)
        case ["check", report]:
            check(report)
        case _:
            raise SystemExit(__doc__)
