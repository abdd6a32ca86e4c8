"""The admin listener of a real `serve`, read by real clients of another stack.

Starts the Tableau double (`tableau-double`, $DOUBLE_BIN) and the broker (`serve`, $TTB_BIN) with
`[admin]` on, using the development PKI that `demo --no-wait` leaves in its state folder. Then:

- runs a known sequence of calls with Python gRPC stubs: 1 miss, 3 hits, 1 denial, 1 Tableau
  401001, 1 request refused by a limit (a third sign-in past the caller's burst of 2), plus one
  TCP connect-and-close
  as a Kubernetes TCP probe does;
- scrapes /metrics and parses the whole exposition with prometheus_client's OpenMetrics parser
  (strict: one malformed line fails the test), asserting the exact counter values;
- SIGTERMs the broker while a slow sign-in is in flight and sees /readyz turn 503 (draining)
  while /livez stays 200, then the call finish and the process exit 0.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support import Double, Serve, mtls_channel

REPO = Path(__file__).resolve().parents[2]
import support as example_client  # (the tests' stub generator and reason reader)

PREFIX = "tableau_token_broker_"
RENDERER = "spiffe://demo.local/ns/reports/sa/renderer"
CLIENT_ID = "0d5e2c4b-0000-4000-8000-00000000c1d0"
SECRET_ID = "0d5e2c4b-0000-4000-8000-000000005ec0"
SECRET = "metrics-test-connected-app-secret-32-bytes"
SITE_LUID = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d"
SCOPE = "tableau:content:read"

DOUBLE_TOML = f"""
session_ttl = "240m"

[[sites]]
name = "Finance"
content_url = "finance"
luid = "{SITE_LUID}"

[[sites.users]]
name = "svc-renderer"
luid = "9f9e9d9c-8b8a-4f8e-8d7c-7b7a6f6d6e6d"

[[connected_apps]]
client_id = "{CLIENT_ID}"

[[connected_apps.secrets]]
secret_id = "{SECRET_ID}"
value = "{SECRET}"
"""


def broker_toml(pki: Path, double_url: str) -> str:
    return f"""
version = 1
development = true

[server]
listen = "127.0.0.1:0"
cert = "{pki / 'server.crt'}"
key = "{pki / 'server.key'}"
client_ca = "{pki / 'ca.crt'}"
grace_period = "20s"

[admin]
listen = "127.0.0.1:0"

[telemetry]
log_format = "json"
log_filter = "info"

[sites.finance]
server_url = "{double_url}"
content_url = "finance"

[sites.finance.connected_app]
client_id = "{CLIENT_ID}"
secret_id = "{SECRET_ID}"
secret = "{SECRET}"

[[callers]]
identity = "{RENDERER}"
# Two sign-ins (the miss and the 401001), then the bucket is empty for the rest of the test.
sign_in_burst = 2
sign_ins_per_second = 0.001

[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer", "ghost"]
scopes = ["{SCOPE}"]

# A second caller with a budget of its own, for the drain test after the renderer's is spent.
[[callers]]
identity = "spiffe://demo.local/ns/ops/*"

[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer"]
scopes = ["{SCOPE}"]
"""


# The broker's environment: the configuration alone decides logging and telemetry.
BROKER_ENV = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("OTEL_")}


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def wait_until(what, check, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def scrape(admin):
    status, ctype, text = http_get(admin + "/metrics")
    assert status == 200, text
    assert ctype.startswith("application/openmetrics-text"), ctype
    # The real parser, over the whole exposition: a malformed line raises.
    families = list(text_string_to_metric_families(text))
    samples = {}
    for fam in families:
        assert fam.name.startswith(PREFIX), fam.name
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, families, samples


def value(samples, name, **labels):
    return samples.get((PREFIX + name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def system(ttb_bin, double_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("metrics")
    # The development PKI (CA, server and renderer certificates): made by the demo, which runs
    # its own script against its own broker and exits.
    demo = subprocess.run(
        [ttb_bin, "demo", "--no-wait", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--state-dir", str(d / "demo")],
        capture_output=True, text=True, timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    (d / "double.toml").write_text(DOUBLE_TOML)
    double = Double(double_bin, d / "double.toml")
    double_url = double.url
    broker = None
    try:
        (d / "broker.toml").write_text(broker_toml(d / "demo" / "pki", double_url))
        broker = Serve(ttb_bin, d / "broker.toml", env=BROKER_ENV)
        # The admin listener's line may come before or after the gRPC one.
        broker.admin = "http://" + broker.wait_for("admin listening", timeout=30)["addr"]
        pb2, pb2_grpc = example_client.generate_stubs(d / "gen")
        state = d / "demo"
        with mtls_channel(state, "renderer", broker.addr) as channel, \
                mtls_channel(state, "ops", broker.addr) as ops_channel:
            yield {
                "broker": broker,
                "double_url": double_url,
                "stub": pb2_grpc.TokenBrokerStub(channel),
                "ops_stub": pb2_grpc.TokenBrokerStub(ops_channel),
                "pb2": pb2,
            }
    finally:
        if broker is not None:
            broker.stop()
        double.stop(timeout=30)


def get(system, user="svc-renderer", scope=SCOPE, force_refresh=False, stub="stub"):
    pb2 = system["pb2"]
    req = pb2.GetCredentialsRequest(site="finance", user=user, scopes=[scope], force_refresh=force_refresh)
    return system[stub].GetCredentials(req, timeout=30)


def refuse_one_request_by_a_limit(system):
    """A third sign-in (a force refresh) after the caller's burst of 2 is spent: refused with
    RESOURCE_EXHAUSTED before it reaches Tableau; a cache hit right after is still served."""
    with pytest.raises(grpc.RpcError) as limited:
        get(system, force_refresh=True)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert example_client.error_reason(limited.value) == "SIGN_IN_RATE_LIMITED"


def test_known_sequence_gives_exact_counters(system):
    broker = system["broker"]
    first = get(system)  # 1 miss: signs in at the double
    assert not first.from_cache
    for _ in range(3):  # 3 hits
        assert get(system).from_cache
    with pytest.raises(grpc.RpcError) as denied:  # 1 denial: scope outside the grant
        get(system, scope="tableau:users:read")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:  # 1 Tableau 401001: user unknown to Tableau
        get(system, user="ghost")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert example_client.error_reason(refused.value) == "TABLEAU_SIGNIN_16"
    refuse_one_request_by_a_limit(system)

    # A TCP probe: connect, then close without a TLS handshake.
    host, port = broker.addr.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=10).close()
    wait_until(
        "the probe to be counted",
        lambda: value(scrape(broker.admin)[2], "tls_handshake_failures_total", reason="closed") == 1,
    )

    text, families, samples = scrape(broker.admin)
    expected = {
        ("rpc_requests_total", (("method", "GetCredentials"), ("code", "OK"))): 4,
        ("rpc_requests_total", (("method", "GetCredentials"), ("code", "PERMISSION_DENIED"))): 1,
        ("rpc_requests_total", (("method", "GetCredentials"), ("code", "FAILED_PRECONDITION"))): 1,
        ("rpc_requests_total", (("method", "GetCredentials"), ("code", "RESOURCE_EXHAUSTED"))): 1,
        ("rpc_duration_seconds_count", (("method", "GetCredentials"),)): 7,
        ("cache_hits_total", ()): 3,
        ("cache_misses_total", ()): 2,  # the miss, and the 401001 sign-in (not cached)
        ("cache_coalesced_waiters_total", ()): 0,
        ("cache_entries", ()): 1,
        ("sign_ins_total", (("site", "finance"), ("outcome", "ok"))): 1,
        ("sign_ins_total", (("site", "finance"), ("outcome", "401001"))): 1,
        ("sign_in_duration_seconds_count", ()): 2,
        ("sign_ins_in_flight", ()): 0,
        ("tls_handshake_failures_total", (("reason", "closed"),)): 1,
        ("tls_handshake_failures_total", (("reason", "failed"),)): 0,
        ("reloads_total", (("outcome", "ok"),)): 0,
        ("reloads_total", (("outcome", "error"),)): 0,
        ("requests_refused_total", (("limit", "sign_in_rate"),)): 1,
        ("requests_refused_total", (("limit", "site_concurrency"),)): 0,
    }
    for (name, labels), want in expected.items():
        got = value(samples, name, **dict(labels))
        assert got == want, f"{name}{dict(labels)} = {got}, want {want}\n{text}"
    # Sign-ins only for the two misses; nothing else signed in.
    assert sum(v for (n, _), v in samples.items() if n == PREFIX + "sign_ins_total") == 2

    build = [s for f in families if f.name == PREFIX + "build" for s in f.samples]
    assert len(build) == 1 and build[0].labels["version"] and build[0].labels["revision"], build
    now = time.time()
    for cert in ("server", "client_ca"):
        assert value(samples, "certificate_not_after_seconds", cert=cert) > now, cert
    assert value(samples, "config_last_reload_success_timestamp_seconds") <= now + 1

    # Bounded labels: no username, identity, token or secret anywhere in the exposition.
    for secret in (first.token, SECRET, "svc-renderer", "ghost", RENDERER):
        assert secret not in text, secret
    # The probe was logged at DEBUG (not shown at the configured INFO), not as a failed handshake.
    assert not [l for l in broker.lines if "TLS handshake" in l], broker.lines


def test_probes_and_read_only_paths(system):
    admin = system["broker"].admin
    assert http_get(admin + "/livez")[0] == 200
    assert http_get(admin + "/readyz") == (200, "text/plain; charset=utf-8", "ready\n")
    status, _, body = http_get(admin + "/debug")
    assert status == 404 and "/metrics" in body
    req = urllib.request.Request(admin + "/metrics", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_readyz_is_503_while_draining_after_sigterm(system):
    """Last in the module: it stops the broker."""
    broker, admin = system["broker"], system["broker"].admin
    put = urllib.request.Request(
        system["double_url"] + "/_fake/faults/signin",
        method="PUT",
        data=json.dumps({"latency": {"fixed": "3s"}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(put, timeout=10) as resp:
        assert resp.status == 204
    result = {}

    def slow_call():
        try:
            # The ops caller: the renderer's sign-in budget was spent by the sequence above.
            result["response"] = get(system, force_refresh=True, stub="ops_stub")
        except grpc.RpcError as e:  # reported below
            result["error"] = e

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_until(
        "the slow sign-in to be in flight",
        lambda: value(scrape(admin)[2], "sign_ins_in_flight") == 1,
    )
    broker.proc.send_signal(signal.SIGTERM)
    status, _, body = wait_until(
        "/readyz to report draining",
        lambda: (lambda r: r if r[0] == 503 else None)(http_get(admin + "/readyz")),
    )
    assert "draining" in body, body
    assert body.count("\n") == 1, "a one-line reason"
    assert http_get(admin + "/livez")[0] == 200, "alive while draining"
    caller.join(timeout=30)
    assert "response" in result, result.get("error")
    assert broker.proc.wait(timeout=30) == 0
