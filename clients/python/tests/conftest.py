"""Fixtures of the client tests: a real broker (`serve`, $TTB_BIN) and the Tableau double
(`tableau-double`, $DOUBLE_BIN) over HTTPS, with client certificates of the development PKI that
`demo --no-wait` leaves in its state folder. Processes are started with tests/python's support.py;
the client under test is the installed `tableau_token_broker` package.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "python"))
from support import Double, Serve, binary  # noqa: E402
from ttb_testing import (  # noqa: E402
    BROKER_ENV, CLIENT_ID, DOUBLE_TOML, FINANCE_LUID, RENDERER_LUID, SECRET, SECRET_ID, System, broker_toml,
)


@pytest.fixture(scope="session")
def ttb_bin():
    return binary("TTB_BIN", "tableau-token-broker")


@pytest.fixture(scope="session")
def double_bin():
    return binary("DOUBLE_BIN", "tableau-double")


@pytest.fixture(scope="session")
def system(ttb_bin, double_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("client")
    # The development PKI and the renderer's and ops' certificates: made by the demo, which runs
    # its own script against its own broker and exits.
    demo = subprocess.run(
        [ttb_bin, "demo", "--no-wait", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--state-dir", str(d / "demo")],
        capture_output=True, text=True, timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    cert = d / "double.pem"
    (d / "double.toml").write_text(DOUBLE_TOML.format(
        cert=cert, luid=FINANCE_LUID, user_luid=RENDERER_LUID, client_id=CLIENT_ID,
        secret_id=SECRET_ID, secret=SECRET,
    ))
    double = Double(double_bin, d / "double.toml")
    broker = None
    try:
        assert double.url.startswith("https://"), double.url
        audit = d / "audit.jsonl"
        (d / "broker.toml").write_text(broker_toml(d / "demo" / "pki", double.url, cert, audit))
        broker = Serve(ttb_bin, d / "broker.toml", env=BROKER_ENV)
        admin = "http://" + broker.wait_for("admin listening", timeout=30)["addr"]
        yield System(d / "demo", double.url, cert, broker, admin, audit)
    finally:
        if broker is not None:
            assert broker.stop() == 0
        double.stop(timeout=30)


