#!/usr/bin/env python3
"""Generates the package's gRPC modules from the repository's proto/, or checks them.

    python clients/python/scripts/gen_proto.py           # rewrite tableau_token_broker/_proto/v1/
    python clients/python/scripts/gen_proto.py --check   # regenerate into a temporary folder and
                                                         # diff against the committed files

Uses grpcio-tools (its bundled protoc; no system protoc), pinned in requirements-dev.txt: the
output depends on its version. The generated imports are made package-relative, so the modules
live inside `tableau_token_broker._proto.v1` and never clash with another copy of the stubs.
"""
import argparse
import difflib
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = HERE.parent / "tableau_token_broker" / "_proto" / "v1"
REPO = HERE.parents[2]
PROTO_ROOT = REPO / "proto"
PROTO = "tableau_token_broker/v1/broker.proto"
FILES = ("broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py")
GRPC_TOOLS_VERSION = "1.71.0"


def generate(out: Path) -> None:
    """Runs protoc (from grpcio-tools) on broker.proto and writes the fixed-up files to `out`."""
    import grpc_tools
    from grpc_tools import protoc

    version = getattr(__import__("grpc_tools.grpc_version", fromlist=["VERSION"]), "VERSION", "?")
    if version != GRPC_TOOLS_VERSION:
        sys.exit(
            f"grpcio-tools {version} is installed; the committed modules come from "
            f"{GRPC_TOOLS_VERSION} (pip install grpcio-tools=={GRPC_TOOLS_VERSION})"
        )
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="ttb-gen-") as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                PROTO,
            ]
        )
        if code != 0:
            sys.exit(f"protoc failed with exit code {code}")
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            text = (Path(tmp) / "tableau_token_broker" / "v1" / name).read_text()
            (out / name).write_text(fix_imports(text))


def fix_imports(text: str) -> str:
    """`from tableau_token_broker.v1 import broker_pb2` -> `from . import broker_pb2`."""
    return re.sub(r"^from tableau_token_broker\.v1 import ", "from . import ", text, flags=re.M)


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="ttb-check-") as tmp:
        generate(Path(tmp))
        stale = []
        for name in FILES:
            want = (Path(tmp) / name).read_text().splitlines(keepends=True)
            path = PACKAGE_DIR / name
            have = path.read_text().splitlines(keepends=True) if path.exists() else []
            if want != have:
                stale.append(name)
                sys.stdout.writelines(
                    difflib.unified_diff(have, want, f"committed/{name}", f"generated/{name}")
                )
    if stale:
        print(
            f"\nerror: {', '.join(stale)} do not match {PROTO}; run "
            "`python clients/python/scripts/gen_proto.py` and commit the result",
            file=sys.stderr,
        )
        return 1
    print(f"ok: the generated modules match proto/{PROTO}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="diff against the committed files; exit 1 on a mismatch")
    args = p.parse_args()
    if args.check:
        return check()
    generate(PACKAGE_DIR)
    print(f"wrote {', '.join(FILES)} to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
