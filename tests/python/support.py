"""The processes the interop tests start, started (and stopped) one way for every module: the demo
kept running, the Tableau double, a `serve` read through its JSON log, and an mTLS channel with a
certificate of the development PKI. The fixtures in conftest.py build on these."""
import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary(var: str, name: str) -> str:
    """The binary named by $`var`, else cargo's debug build of `name`; a relative path is taken
    from the repository root."""
    path = pathlib.Path(os.environ.get(var, ROOT / "target" / "debug" / name))
    if not path.is_absolute():
        path = ROOT / path
    assert path.exists(), f"{path} is missing: run `cargo build --workspace --bins` or set {var}"
    return str(path)


def generate_stubs(out_dir):
    """Runs grpc_tools.protoc on proto/'s broker.proto into `out_dir` and imports the generated
    modules: the tests' own stubs, independent of the client package (clients/python)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proto_root = ROOT / "proto"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
            str(proto_root / "tableau_token_broker" / "v1" / "broker.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("tableau_token_broker.v1.broker_pb2")
    pb2_grpc = importlib.import_module("tableau_token_broker.v1.broker_pb2_grpc")
    return pb2, pb2_grpc


def generate_admin_stubs(out_dir):
    """Like generate_stubs, for the admin service (proto/tableau_token_broker/admin/v1)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proto_root = ROOT / "proto"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
            str(proto_root / "tableau_token_broker" / "admin" / "v1" / "admin.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("tableau_token_broker.admin.v1.admin_pb2")
    pb2_grpc = importlib.import_module("tableau_token_broker.admin.v1.admin_pb2_grpc")
    return pb2, pb2_grpc


def error_reason(err):
    """The broker's stable reason (google.rpc.ErrorInfo in the status details), e.g. SCOPE_NOT_ALLOWED."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return "no reason"


def terminate(proc, timeout):
    """SIGTERM unless `proc` has exited; its exit code. One that outlives `timeout` is killed and
    the wait's TimeoutExpired raised, so a process that ignores SIGTERM fails the test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return proc.returncode


def mtls_channel(state, who, addr):
    """A channel to the broker at `addr` as `who` (a certificate in the demo's state folder)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(state / "pki" / "ca.crt").read_bytes(),
        private_key=(state / f"{who}.key").read_bytes(),
        certificate_chain=(state / f"{who}.crt").read_bytes(),
    )
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])


class Demo:
    """`tableau-token-broker demo` on a free port, running until `stop`: the broker's address
    (`addr`), the double's URL (`double`) and the state folder with the development PKI."""

    def __init__(self, ttb_bin, state):
        self.state = state
        self.proc = subprocess.Popen(
            [ttb_bin, "demo", "--listen", "127.0.0.1:0", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addr = self.double = None
        lines = []
        try:
            for line in self.proc.stdout:
                lines.append(line)
                line = line.strip()
                if line.startswith("broker listening on "):
                    self.addr = line[len("broker listening on "):]
                elif line.startswith("tableau double on "):
                    self.double = line[len("tableau double on "):]
                elif line == "Serving until Ctrl-C.":
                    break
            assert self.addr and self.double, (
                f"demo output lacks its address lines (exit code {self.proc.poll()}):\n{''.join(lines)}"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout=20):
        return terminate(self.proc, timeout)


class Double:
    """The `tableau-double` program on a free port with `config`; its URL from its first line."""

    PREFIX = "fake-tableau listening on "

    def __init__(self, double_bin, config):
        self.proc = subprocess.Popen(
            [double_bin, "--config", str(config), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = self.proc.stdout.readline().strip()
            assert line.startswith(self.PREFIX), (
                f"unexpected first line {line!r} (exit code {self.proc.poll()})"
            )
        except BaseException:
            self.stop()
            raise
        self.url = line[len(self.PREFIX):]

    def stop(self, timeout=10):
        return terminate(self.proc, timeout)


def _fields(line):
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record.get("fields", {}) if isinstance(record, dict) else {}


class Serve:
    """A `serve` process on `config`. A thread keeps every stderr line in `lines`, so a test can
    wait for a JSON log line with a deadline; `addr` is from its "broker listening" line."""

    def __init__(self, ttb_bin, config, env, timeout=30):
        self.proc = subprocess.Popen(
            [ttb_bin, "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines = []
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.addr = self.wait_for("broker listening (mTLS)", timeout)["addr"]
        except BaseException:
            self.stop()
            raise

    def _read(self):
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, message, timeout=20):
        """The fields of the first log line since the start whose message begins with `message`,
        waiting at most `timeout` seconds; fails at once if the process has ended without it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    fields = _fields(line)
                    if str(fields.get("message", "")).startswith(message):
                        return fields
                if self._ended:
                    pytest.fail(
                        f"serve exited (code {self.proc.poll()}) before {message!r}:\n" + "\n".join(self.lines)
                    )
                left = deadline - time.monotonic()
                assert left > 0, f"no {message!r} within {timeout}s:\n" + "\n".join(self.lines)
                self._changed.wait(left)

    def stop(self, timeout=30):
        return terminate(self.proc, timeout)
