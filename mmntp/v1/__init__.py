"""Generated protobuf and gRPC stubs for the mmntp.v1 API (see proto/mmntp/v1/).

Regenerate with scripts/gen_proto.sh; tests/test_proto.py checks they are fresh.
"""
