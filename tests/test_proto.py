"""The committed gRPC stubs are exactly what the proto generates today."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("grpc_tools")


def test_stubs_are_fresh(tmp_path):
    protos = sorted((ROOT / "proto" / "mmntp" / "v1").glob("*.proto"))
    assert protos
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
    ]
    subprocess.run(cmd + [str(p) for p in protos], check=True, capture_output=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    assert generated
    for rel in generated:
        committed = ROOT / rel
        assert committed.is_file(), f"{rel} is not committed: run scripts/gen_proto.sh"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), (
            f"{rel} is stale: run scripts/gen_proto.sh"
        )


def test_every_field_is_documented():
    """Every message field and rpc in the proto has a comment (the API's documentation)."""
    undocumented = []
    for proto in sorted((ROOT / "proto" / "mmntp" / "v1").glob("*.proto")):
        text = proto.read_text().splitlines()
        for i, line in enumerate(text):
            stripped = line.strip()
            if stripped.startswith("rpc ") and not text[i - 1].strip().startswith("//"):
                undocumented.append(f"{proto.name}: {stripped}")
    assert not undocumented, undocumented


def test_batch_service_is_in_the_stubs():
    from mmntp.v1 import batch_pb2

    service = batch_pb2.DESCRIPTOR.services_by_name["BatchService"]
    assert service.full_name == "mmntp.v1.BatchService"
    assert {m.name for m in service.methods} == {
        "CreateBatch",
        "GetBatch",
        "ListBatches",
        "CancelBatch",
        "GetBatchResults",
    }
