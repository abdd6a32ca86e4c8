"""Server reflection, both versions, with clients from another stack than the broker's own.

- v1alpha: Python's grpcio-reflection (`ProtoReflectionDescriptorDatabase`), the client that
  several GUI tools also speak;
- v1: stubs generated here by grpcio-tools from gRPC's own `reflection.proto` (kept in
  tests/python/vendor/protos), called over the same mTLS channel.
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from support import mtls_channel

# gRPC's own reflection.proto, vendored unchanged (Apache-2.0).
PROTOS = Path(__file__).resolve().parent / "vendor" / "protos"
SERVICE = "tableau_token_broker.v1.TokenBroker"


@pytest.fixture
def channel(demo):
    with mtls_channel(demo.state, "renderer", demo.addr) as ch:
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
