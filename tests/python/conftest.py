"""Shared fixtures: the binaries built by cargo, and the running demo (see support.py for the
processes the tests start)."""
import os
import pathlib

import pytest

from support import Demo, binary

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ttb_bin() -> str:
    path = os.environ.get("TTB_BIN", str(ROOT / "target" / "debug" / "tableau-token-broker"))
    if not os.path.exists(path):
        pytest.fail(f"broker binary {path} not found: run `cargo build` first or set TTB_BIN")
    return path


@pytest.fixture(scope="session")
def double_bin() -> str:
    return binary("DOUBLE_BIN", "tableau-double")


@pytest.fixture(scope="module")
def demo(ttb_bin, tmp_path_factory):
    """`tableau-token-broker demo` for the module's tests: a broker and a double on free ports and
    the development PKI in its state folder. SIGTERMed at the end unless a test stopped it; it
    must exit 0."""
    running = Demo(ttb_bin, tmp_path_factory.mktemp("demo"))
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"demo exited with {code} on SIGTERM"
