#!/usr/bin/env python3
"""Get Tableau credentials from tableau-token-broker over mTLS, then use them with
tableauserverclient (TSC): the model for teams integrating from Python.

The gRPC stubs are generated at run time from the repository's proto/ with grpcio-tools (into
a temporary folder, or --gen-dir), so nothing generated is committed.

    python examples/python/client.py --addr 127.0.0.1:7443 \
        --ca .tableau-token-broker-demo/pki/ca.crt \
        --cert .tableau-token-broker-demo/renderer.crt \
        --key .tableau-token-broker-demo/renderer.key \
        --site finance --user svc-renderer --scope tableau:content:read
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import tableauserverclient as TSC

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
PROTO = PROTO_ROOT / "tableau_token_broker" / "v1" / "broker.proto"


def generate_stubs(out_dir: Path):
    """Runs grpc_tools.protoc on broker.proto and imports the generated modules."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ],
        check=True,
    )
    sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("tableau_token_broker.v1.broker_pb2")
    pb2_grpc = importlib.import_module("tableau_token_broker.v1.broker_pb2_grpc")
    return pb2, pb2_grpc


def get_credentials(pb2, pb2_grpc, args):
    """GetCredentials over mTLS: the broker knows this caller by its client certificate."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(args.ca).read_bytes(),
        private_key=Path(args.key).read_bytes(),
        certificate_chain=Path(args.cert).read_bytes(),
    )
    # The address may be an IP; check the broker's certificate against this name.
    options = [("grpc.ssl_target_name_override", args.server_name)]
    with grpc.secure_channel(args.addr, creds, options=options) as channel:
        stub = pb2_grpc.TokenBrokerStub(channel)
        request = pb2.GetCredentialsRequest(site=args.site, user=args.user, scopes=args.scope)
        try:
            return stub.GetCredentials(request, timeout=30)
        except grpc.RpcError as e:
            sys.exit(f"error: {e.code().name} ({error_reason(e)}): {e.details()}")


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


def list_workbooks(resp):
    """Uses the broker's token with TSC: no sign-in from Python, the broker did it."""
    server = TSC.Server(resp.server_url, use_server_version=False)
    server.version = resp.api_version
    # TSC has no public way to adopt an existing session; _set_auth is what sign_in calls.
    server._set_auth(resp.site_luid, resp.user_luid, resp.token)
    return list(TSC.Pager(server.workbooks))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", default=os.environ.get("TTB_ADDR", "localhost:7443"))
    p.add_argument("--ca", default=os.environ.get("TTB_CA"), required="TTB_CA" not in os.environ)
    p.add_argument("--cert", default=os.environ.get("TTB_CERT"), required="TTB_CERT" not in os.environ)
    p.add_argument("--key", default=os.environ.get("TTB_KEY"), required="TTB_KEY" not in os.environ)
    p.add_argument("--server-name", default=os.environ.get("TTB_SERVER_NAME", "localhost"))
    p.add_argument("--site", default="finance")
    p.add_argument("--user", default="svc-renderer")
    p.add_argument("--scope", action="append", default=None)
    p.add_argument("--gen-dir", help="where to generate the stubs (default: a temporary folder)")
    args = p.parse_args()
    args.scope = args.scope or ["tableau:content:read"]

    with tempfile.TemporaryDirectory(prefix="ttb-stubs-") as tmp:
        pb2, pb2_grpc = generate_stubs(Path(args.gen_dir or tmp))
        resp = get_credentials(pb2, pb2_grpc, args)
    # Never print the token itself: it is a live Tableau session.
    print(f"credentials: site LUID {resp.site_luid}, from_cache={resp.from_cache}, "
          f"server {resp.server_url}, REST API {resp.api_version}")
    workbooks = list_workbooks(resp)
    print(f"{len(workbooks)} workbook(s) on site {resp.site_luid}:")
    for wb in workbooks:
        print(f"  {wb.name} (project {wb.project_name}, id {wb.id})")


if __name__ == "__main__":
    main()
