"""Generated gRPC modules (scripts/gen_proto.py); not a public API."""
