#!/usr/bin/env bash
# Regenerate the protobuf/gRPC stubs in mmntp/v1/ from proto/mmntp/v1/*.proto.
# tests/test_proto.py fails when the committed stubs differ from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. proto/mmntp/v1/*.proto
