"""Helpers of the client tests (see conftest.py): the configurations, the running system and
counters of RPCs and callers.

The client against a real broker (`serve`, $TTB_BIN) and the Tableau double (`tableau-double`,
$DOUBLE_BIN) over HTTPS, with client certificates of the development PKI that `demo --no-wait`
leaves in its state folder. Processes are started the way tests/python starts them (its
support.py); the client under test is the installed `tableau_token_broker` package.
"""

import collections
import json
import os
import re
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import grpc.aio

REPO = Path(__file__).resolve().parents[3]

RENDERER = "spiffe://demo.local/ns/reports/sa/renderer"
OPS = "spiffe://demo.local/ns/ops/sa/admin"
FINANCE_LUID = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d"
RENDERER_LUID = "9f9e9d9c-8b8a-4f8e-8d7c-7b7a6f6d6e6d"
CLIENT_ID = "5c1e7a11-0000-4000-8000-00000000c11e"
SECRET_ID = "5c1e7a11-0000-4000-8000-000000005ec0"
SECRET = "python-client-tests-connected-app-secret"
READ = "tableau:content:read"
DOWNLOAD = "tableau:views:download"
USER = "svc-renderer"
# The renderer's claims allowlist (its second grant): region emea or us, any department, groups
# matching Finance-*, on-demand access; on site finance only.
REGIONS = ("emea", "us")
GROUP_GLOB = "Finance-*"

DOUBLE_TOML = """
session_ttl = "240m"

[tls]
self_signed = true
write_cert = "{cert}"

[[sites]]
name = "Finance"
content_url = "finance"
luid = "{luid}"

[[sites.users]]
name = "svc-renderer"
luid = "{user_luid}"

[[connected_apps]]
client_id = "{client_id}"

[[connected_apps.secrets]]
secret_id = "{secret_id}"
value = "{secret}"
"""


def broker_toml(pki, double_url, double_cert, audit):
    app = f"""
client_id = "{CLIENT_ID}"
secret_id = "{SECRET_ID}"
secret = "{SECRET}"
"""
    return f"""
version = 1
development = true

[server]
listen = "127.0.0.1:0"
cert = "{pki / 'server.crt'}"
key = "{pki / 'server.key'}"
client_ca = "{pki / 'ca.crt'}"
grace_period = "5s"

[admin]
listen = "127.0.0.1:0"

[telemetry]
log_format = "json"
log_filter = "info"

[cache]
safety_margin = "10s"

[audit]
path = "{audit}"

[sites.finance]
server_url = "{double_url}"
content_url = "finance"
ca_bundle = "{double_cert}"

[sites.finance.connected_app]{app}
# The same Tableau site with short sessions (70s, handed out for 60s): refresh-ahead in seconds.
[sites.short]
server_url = "{double_url}"
content_url = "finance"
ca_bundle = "{double_cert}"
session_ttl = "70s"

[sites.short.connected_app]{app}
[[callers]]
identity = "{RENDERER}"
sign_in_burst = 100
sign_ins_per_second = 50

[[callers.grants]]
sites = ["finance", "short"]
users = ["{USER}"]
scopes = ["{READ}", "{DOWNLOAD}"]

# Claims beyond scp (test_claims.py): allowed on finance only, so a claim on "short" meets the
# grant above, which allows none.
[[callers.grants]]
sites = ["finance"]
users = ["{USER}"]
scopes = ["{READ}", "{DOWNLOAD}"]
attributes = {{ region = ["{REGIONS[0]}", "{REGIONS[1]}"], department = ["*"] }}
groups = ["{GROUP_GLOB}"]
on_demand_access = true

[[callers]]
identity = "spiffe://demo.local/ns/ops/*"

[[callers.grants]]
sites = ["finance"]
users = ["{USER}"]
scopes = ["{READ}"]
"""


# The broker's environment: the configuration alone decides logging and telemetry.
BROKER_ENV = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("OTEL_")}


class System:
    """The running broker and double, and how to read their counters."""

    def __init__(self, state, double, double_cert, broker, admin, audit):
        self.state = state
        self.double = double
        self.double_cert = double_cert
        self.broker = broker
        self.addr = broker.addr
        self.admin = admin
        self.audit = audit
        self.ca = str(state / "pki" / "ca.crt")
        self._ssl = ssl.create_default_context(cafile=str(double_cert))

    def cert(self, who="renderer"):
        return str(self.state / f"{who}.crt"), str(self.state / f"{who}.key")

    def client(self, who="renderer", **kwargs):
        from tableau_token_broker import BrokerClient

        cert, key = self.cert(who)
        return BrokerClient(self.addr, cert, key, self.ca, **kwargs)

    def aio_client(self, who="renderer", **kwargs):
        from tableau_token_broker import aio

        cert, key = self.cert(who)
        return aio.BrokerClient(self.addr, cert, key, self.ca, **kwargs)

    def double_request(self, path, method="GET"):
        req = urllib.request.Request(self.double + path, method=method)
        with urllib.request.urlopen(req, timeout=10, context=self._ssl) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def double_stats(self):
        return self.double_request("/_fake/stats")

    def session_claims(self, token):
        """The claims of the JWT the double's session for `token` was signed in with."""
        req = urllib.request.Request(self.double + "/_fake/session/claims", headers={"X-Tableau-Auth": token})
        with urllib.request.urlopen(req, timeout=10, context=self._ssl) as resp:
            return json.loads(resp.read())

    def end_tableau_sessions(self):
        """The double ends every session, as a Tableau restart would: their tokens get 401000."""
        self.double_request("/_fake/sessions", method="DELETE")

    def metrics(self):
        """{(name, frozenset(labels)): value} from the admin listener's /metrics."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
            if m:
                labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                out[(m.group(1), labels)] = float(m.group(3))
        return out

    def metric(self, name, **labels):
        return self.metrics().get(("tableau_token_broker_" + name, frozenset(labels.items())), 0.0)

    def rpcs(self, method, code="OK"):
        return self.metric("rpc_requests_total", method=method, code=code)

    def audit_records(self, rpc=None):
        records = [json.loads(l) for l in self.audit.read_text().splitlines() if l.strip()]
        return [r for r in records if rpc is None or (r.get("event") == "rpc" and r.get("rpc") == rpc)]


class Counting(grpc.UnaryUnaryClientInterceptor):
    """Counts the client's RPCs by method; `gate(method)` (if set) runs before each is sent.
    `finished` lists (method, time.time() at the answer) for completed calls."""

    def __init__(self, gate=None):
        self.gate = gate
        self.started = collections.Counter()
        self.finished = []
        self.changed = threading.Condition()

    def intercept_unary_unary(self, continuation, details, request):
        method = details.method.rsplit("/", 1)[-1]
        with self.changed:
            self.started[method] += 1
            self.changed.notify_all()
        if self.gate is not None:
            self.gate(method)
        outcome = continuation(details, request)
        with self.changed:
            self.finished.append((method, time.time()))
            self.changed.notify_all()
        return outcome

    def wait_finished(self, method, count, timeout=60):
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum(1 for m, _ in self.finished if m == method) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{method} did not finish {count} time(s) within {timeout}s: {self.finished}"
                self.changed.wait(left)
            return [t for m, t in self.finished if m == method]


class AioCounting(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts the asyncio client's RPCs; `gate` is awaited before each is sent."""

    def __init__(self, gate=None):
        self.gate = gate
        self.started = collections.Counter()

    async def intercept_unary_unary(self, continuation, details, request):
        method = details.method
        method = (method.decode() if isinstance(method, bytes) else method).rsplit("/", 1)[-1]
        self.started[method] += 1
        if self.gate is not None:
            await self.gate(method)
        return await continuation(details, request)


class CountingClock:
    """time.time that counts its calls: the client reads the clock once per `credentials` call
    while deciding under its lock, so a count of N means N callers have decided."""

    def __init__(self):
        self.calls = 0
        self.changed = threading.Condition()

    def __call__(self):
        with self.changed:
            self.calls += 1
            self.changed.notify_all()
        return time.time()

    def wait_for(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.calls < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {self.calls} of {n} callers arrived within {timeout}s"
                self.changed.wait(left)
