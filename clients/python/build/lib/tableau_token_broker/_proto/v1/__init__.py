"""Generated from proto/tableau_token_broker/v1/broker.proto by scripts/gen_proto.py."""
