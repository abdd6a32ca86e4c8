"""Server reflection, both versions, with clients from another stack than the broker's own.

- v1alpha: Python's grpcio-reflection (`ProtoReflectionDescriptorDatabase`), the client that
  several GUI tools also speak;
- v1: stubs generated here by grpcio-tools from gRPC's own `reflection.proto` (kept in
  tests/python/vendor/protos), called over the same mTLS channel.
"""

import importlib
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

# gRPC's own reflection.proto, vendored unchanged (Apache-2.0).
PROTOS = Path(__file__).resolve().parent / "vendor" / "protos"
SERVICE = "tableau_token_broker.v1.TokenBroker"


@pytest.fixture(scope="module")
def broker(ttb_bin, tmp_path_factory):
    state = tmp_path_factory.mktemp("reflection-demo")
    proc = subprocess.Popen(
        [ttb_bin, "demo", "--listen", "127.0.0.1:0", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    addr = None
    try:
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("broker listening on "):
                addr = line[len("broker listening on "):]
            elif line == "Serving until Ctrl-C.":
                break
        assert addr, f"demo printed no address (exit code {proc.poll()})"
        yield addr, state
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@pytest.fixture
def channel(broker):
    addr, state = broker
    creds = grpc.ssl_channel_credentials(
        root_certificates=(state / "pki" / "ca.crt").read_bytes(),
        private_key=(state / "renderer.key").read_bytes(),
        certificate_chain=(state / "renderer.crt").read_bytes(),
    )
    with grpc.secure_channel(
        addr, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as ch:
        yield ch


def test_v1alpha_with_grpcio_reflection(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    assert SERVICE in services, services
    assert "grpc.health.v1.Health" in services, services
    # The whole file comes back, so a client can build requests from it.
    desc = db.FindFileContainingSymbol(SERVICE)
    assert desc.package == "tableau_token_broker.v1"
    assert any(s.name == "TokenBroker" for s in desc.service)


def test_v1_with_generated_stubs(channel, tmp_path):
    # Generated under a folder of its own: a `grpc/` folder would be shadowed by the grpc package.
    # The proto's package (what travels on the wire) stays grpc.reflection.v1.
    src = tmp_path / "src" / "reflection_v1"
    src.mkdir(parents=True)
    (src / "reflection.proto").write_bytes(
        (PROTOS / "grpc" / "reflection" / "v1" / "reflection.proto").read_bytes()
    )
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path / 'src'}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            str(src / "reflection.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("reflection_v1.reflection_pb2")
        pb2_grpc = importlib.import_module("reflection_v1.reflection_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    stub = pb2_grpc.ServerReflectionStub(channel)
    answers = list(
        stub.ServerReflectionInfo(
            iter([pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    )
    names = {s.name for s in answers[0].list_services_response.service}
    assert SERVICE in names and "grpc.health.v1.Health" in names, names
