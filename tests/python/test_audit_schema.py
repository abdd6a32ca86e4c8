"""The audit trail of the real `serve` binary against docs/audit-schema.v1.json (Python jsonschema).

The demo (kept running) provides the dev PKI and the Tableau double; a separate `serve` process
runs on a configuration derived from the demo's, with its own callers and an audit file. Each RPC
outcome (granted by sign-in, granted from cache, MintJwt, each denial reason, Tableau failures,
invalidations, every admin call, a reload) must add exactly one `rpc` record with the expected outcome and reason,
and every record must validate against the schema.
"""

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import jsonschema
from support import Serve, mtls_channel

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "audit-schema.v1.json").read_text())
import support as example  # (the tests' stub generator and reason reader)

RENDERER = "spiffe://demo.local/ns/reports/sa/renderer"
CALLERS = f"""
[[callers]]
identity = "{RENDERER}"
# Four sign-ins (the first call, ghost, the 503 and the 429), then a refusal by this limit.
sign_in_burst = 4
sign_ins_per_second = 0.001

[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer", "ghost"]
scopes = ["tableau:content:read", "tableau:views:download"]

[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer"]
scopes = ["tableau:tasks:run"]
"""
# The ops identity is also the admin (issue 27): the admin API's calls are on the trail too.
ADMINS = """
[[admins]]
identity = "spiffe://demo.local/ns/ops/sa/admin"
roles = ["read", "revoke"]
"""
OPS = """
[[callers]]
identity = "spiffe://demo.local/ns/ops/*"

[[callers.grants]]
sites = ["*"]
users = ["svc-ops"]
scopes = ["tableau:tasks:run"]
"""


def fault(double, body):
    req = urllib.request.Request(
        f"{double}/_fake/faults/signin", data=json.dumps(body).encode(), method="PUT",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).read()


def clear_faults(double):
    urllib.request.urlopen(
        urllib.request.Request(f"{double}/_fake/faults", method="DELETE"), timeout=10
    ).read()


def test_every_outcome_writes_one_valid_record(ttb_bin, demo, tmp_path):
    state, double = demo.state, demo.double
    base = (state / "broker.toml").read_text()
    head = base[: base.index("\n# The report renderer")]
    # The demo's issuer listener is the demo's: this serve process signs with the same keys but
    # serves no metadata of its own (its port would be taken), so no listen, cert or key.
    before, issuer = head.split("[issuer]\n", 1)
    issuer_head, keys = issuer.split("[[issuer.keys]]", 1)
    issuer_head = re.sub(r'^(listen|cert|key) = "[^"]*"\n', "", issuer_head, flags=re.M)
    issuer = issuer_head + "[[issuer.keys]]" + keys
    head = before + "[issuer]\n" + issuer
    trail = tmp_path / "audit.jsonl"
    head = head.replace(f'path = "{state / "audit.jsonl"}"', f'path = "{trail}"')
    assert str(trail) in head
    config = tmp_path / "broker.toml"
    config.write_text(head + CALLERS + OPS + ADMINS)
    serve = Serve(ttb_bin, config, env={**os.environ, "RUST_LOG": "info"}, timeout=20)

    pb2, pb2_grpc = example.generate_stubs(tmp_path / "stubs")

    def stub(who):
        return pb2_grpc.TokenBrokerStub(mtls_channel(state, who, serve.addr))

    renderer, ops = stub("renderer"), stub("ops")

    def rpc_records():
        out = []
        for line in trail.read_text().splitlines():
            r = json.loads(line)
            if r["event"] == "rpc":
                out.append(r)
        return out

    def call(fn, request, outcome, reason):
        """One call: exactly one new rpc record, with this outcome and reason."""
        before = len(rpc_records())
        try:
            answer = fn(request, timeout=30)
            got = "OK"
        except grpc.RpcError as e:
            answer, got = None, example.error_reason(e)
        assert got == reason, f"{request}: {got}"
        after = rpc_records()
        assert len(after) == before + 1, after[before:]
        assert (after[-1]["outcome"], after[-1]["reason"]) == (outcome, reason), after[-1]
        return answer, after[-1]

    def get(who, site, user, *scopes):
        return pb2.GetCredentialsRequest(site=site, user=user, scopes=list(scopes))

    R = renderer.GetCredentials
    read = "tableau:content:read"
    first, rec = call(R, get("renderer", "finance", "svc-renderer", read), "granted", "OK")
    assert rec["from_cache"] is False and rec["jti"] and rec["caller"]["source"] == "uri_san"
    _, rec = call(R, get("renderer", "finance", "svc-renderer", read), "granted", "OK")
    assert rec["from_cache"] is True and rec["jti"] is None
    _, rec = call(
        renderer.MintJwt,
        pb2.MintJwtRequest(site="finance", user="svc-renderer", scopes=[read]),
        "granted", "OK",
    )
    assert rec["rpc"] == "MintJwt" and rec["jti"]
    call(R, get("renderer", "sales", "svc-renderer", read), "denied", "SITE_NOT_ALLOWED")
    call(R, get("renderer", "finance", "mallory", read), "denied", "USER_NOT_ALLOWED")
    call(R, get("renderer", "finance", "svc-renderer", "tableau:users:read"), "denied", "SCOPE_NOT_ALLOWED")
    call(R, get("renderer", "finance", "svc-renderer", read, "tableau:tasks:run"), "denied",
         "SCOPES_SPLIT_ACROSS_GRANTS")
    call(R, get("renderer", "finance", "svc-renderer"), "denied", "NO_SCOPES")
    call(R, get("renderer", "finance", "svc-renderer", "not a scope"), "denied", "MALFORMED_SCOPE")
    call(R, get("renderer", "finance", "svc-renderer", "tableau:nope:read"), "denied", "UNKNOWN_SCOPE")
    call(R, get("renderer", "finance", "", read), "denied", "INVALID_REQUEST")
    call(ops.GetCredentials, get("ops", "nowhere", "svc-ops", "tableau:tasks:run"), "denied", "UNKNOWN_SITE")
    call(R, get("renderer", "finance", "ghost", read), "failed", "TABLEAU_SIGNIN_16")
    try:
        fault(double, {"error_share": 1.0, "error_statuses": [503]})
        call(R, get("renderer", "finance", "svc-renderer", "tableau:views:download"), "failed",
             "TABLEAU_UNAVAILABLE")
        fault(double, {"throttle_share": 1.0})
        call(R, get("renderer", "finance", "svc-renderer", "tableau:views:download"), "failed",
             "TABLEAU_RATE_LIMITED")
    finally:
        clear_faults(double)
    # The caller entry's sign-in budget is spent: a forced sign-in is refused before Tableau.
    limited = pb2.GetCredentialsRequest(site="finance", user="svc-renderer", scopes=[read],
                                        force_refresh=True)
    call(R, limited, "denied", "SIGN_IN_RATE_LIMITED")
    _, rec = call(ops.GetCredentials, get("ops", "sales", "svc-ops", "tableau:tasks:run"), "granted", "OK")
    call(ops.InvalidateCredentials, pb2.InvalidateCredentialsRequest(token=first.token), "denied",
         "TOKEN_NOT_YOURS")
    _, rec = call(renderer.InvalidateCredentials,
                  pb2.InvalidateCredentialsRequest(token=first.token), "ok", "OK")
    assert rec["evicted"] is True

    # Every admin call, each with its own record and an `admin` object (issue 27).
    apb2, apb2_grpc = example.generate_admin_stubs(tmp_path / "stubs")
    admin = apb2_grpc.AdminStub(mtls_channel(state, "ops", serve.addr))
    not_admin = apb2_grpc.AdminStub(mtls_channel(state, "renderer", serve.addr))
    _, rec = call(admin.Explain, apb2.ExplainRequest(identity=RENDERER, site="finance",
                                                     user="svc-renderer", scopes=[read]), "ok", "OK")
    assert rec["rpc"] == "Explain" and rec["admin"]["verdict"] == "granted OK", rec
    _, rec = call(admin.ListSessions, apb2.ListSessionsRequest(site="finance"), "ok", "OK")
    assert rec["admin"]["role"] == "read" and rec["admin"]["selector"]["site"] == "finance", rec
    _, rec = call(not_admin.Revoke, apb2.RevokeRequest(site="finance"), "denied", "NOT_AN_ADMIN")
    assert rec["admin"]["entry"] is None, rec
    revoked, rec = call(admin.Revoke, apb2.RevokeRequest(site="finance"), "ok", "OK")
    assert rec["admin"]["sessions"] == revoked.revoked, rec
    assert rec["admin"]["fingerprints"] == list(revoked.fingerprints), rec

    # A reload that drops the ops entry: generation 2, and ops is now an unknown caller.
    config.write_text(head + CALLERS)
    serve.proc.send_signal(signal.SIGHUP)
    serve.wait_for("configuration reloaded", timeout=20)  # fails the test if none is logged
    # The reload's own record is on the trail by then (queued before the log line).
    deadline = time.monotonic() + 20
    while not any(
        r["event"] == "reload" and r["config_generation"] == 2
        for r in map(json.loads, trail.read_text().splitlines())
    ):
        assert time.monotonic() < deadline, "no reload record"
        time.sleep(0.05)
    _, rec = call(ops.GetCredentials, get("ops", "sales", "svc-ops", "tableau:tasks:run"), "denied",
                  "CALLER_NOT_ALLOWED")
    # The file watcher may apply the new file as well as SIGHUP (generations 2 and 3, the same
    # policy): the decision names one of the applied reloads, never the first configuration.
    applied = [
        r["config_generation"]
        for r in map(json.loads, trail.read_text().splitlines())
        if r["event"] == "reload" and r["outcome"] == "ok"
    ]
    assert rec["config_generation"] >= 2 and rec["config_generation"] in applied, (rec, applied)
    assert rec["caller"]["entry"] is None
    assert serve.stop(timeout=20) == 0

    records = [json.loads(line) for line in trail.read_text().splitlines()]
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for r in records:
        errors = [e.message for e in validator.iter_errors(r)]
        assert not errors, (r, errors)
    events = {r["event"] for r in records}
    assert {"start", "rpc", "sign_in", "sign_out", "reload"} <= events, events
    text = trail.read_text()
    assert first.token not in text and "eyJ" not in text
