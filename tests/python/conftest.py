"""Shared fixtures: the broker binary built by cargo, and temp folders."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ttb_bin() -> str:
    path = os.environ.get("TTB_BIN", str(ROOT / "target" / "debug" / "tableau-token-broker"))
    if not os.path.exists(path):
        pytest.fail(f"broker binary {path} not found: run `cargo build` first or set TTB_BIN")
    return path
