"""The Python example client (examples/python/client.py) against a real broker and double.

Starts `tableau-token-broker demo --listen 127.0.0.1:0` (binary from $TTB_BIN), reads the broker
address and the double's URL from its output, runs the example with the renderer's certificate,
checks that it got credentials and listed the site's workbooks through tableauserverclient, and
that a scope outside the renderer's grant is refused. Then SIGTERMs the demo and expects exit 0.
"""

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "examples" / "python" / "client.py"
FINANCE_LUID = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d"


def run_client(demo, *extra):
    state = demo.state
    return subprocess.run(
        [
            sys.executable, str(CLIENT),
            "--addr", demo.addr,
            "--ca", str(state / "pki" / "ca.crt"),
            "--cert", str(state / "renderer.crt"),
            "--key", str(state / "renderer.key"),
            "--site", "finance",
            "--user", "svc-renderer",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def stats(url):
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as resp:
        return json.load(resp)


def test_example_lists_workbooks_with_a_broker_token(demo):
    before = stats(demo.double)
    out = run_client(demo, "--scope", "tableau:content:read")
    assert out.returncode == 0, out.stderr
    assert f"site LUID {FINANCE_LUID}" in out.stdout, out.stdout
    assert f"workbook(s) on site {FINANCE_LUID}:" in out.stdout, out.stdout
    assert "Superstore" in out.stdout and "Budget" in out.stdout, out.stdout
    after = stats(demo.double)
    # The workbooks came from the double, with the broker's session: Python never signed in.
    assert after["requests"].get("Query Workbooks for Site", 0) > before["requests"].get(
        "Query Workbooks for Site", 0
    ), after
    assert after["signins_ok"] == before["signins_ok"], "the demo already signed in; expected a cache hit"


def test_example_reports_a_refused_scope(demo):
    out = run_client(demo, "--scope", "tableau:users:read")
    assert out.returncode != 0
    assert "PERMISSION_DENIED (SCOPE_NOT_ALLOWED)" in out.stderr and "tableau:users:read" in out.stderr, out.stderr


def test_demo_exits_cleanly_on_sigterm(demo):
    proc = demo.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    rest = proc.stdout.read()
    assert "stopped" in rest, rest
