"""Fuzzing the wire: arbitrary bytes, and valid requests with bytes flipped, sent to a real
server's Generate and Tokenize. Each call ends OK or with a client-side status (never
UNKNOWN, INTERNAL or UNAVAILABLE), and the server stays SERVING."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import ServerThread

from mmntp.generation import Pipeline
from mmntp.v1 import generation_pb2 as pb

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
SEED_REQUESTS = [
    pb.GenerateRequest(
        prompt=[pb.PromptPart(text="hi")], output=pb.OutputSpec(text=pb.TextSpec(max_tokens=4))
    ).SerializeToString(),
    pb.GenerateRequest(
        prompt=[pb.PromptPart(timeseries=pb.TimeSeriesInput(values=[1.0, 2.0] * 8))],
        output=pb.OutputSpec(timeseries=pb.TimeSeriesSpec(horizon=2, num_samples=2)),
    ).SerializeToString(),
    pb.TokenizeRequest(part=pb.PromptPart(text="hello")).SerializeToString(),
]


@st.composite
def wire_bytes(draw) -> bytes:
    """Random bytes, or a valid request with a few bytes replaced."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    data = bytearray(draw(st.sampled_from(SEED_REQUESTS)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ServerThread(Pipeline.from_pretrained(tiny_model_dir)) as srv:
        yield srv


def _status(channel: grpc.Channel, method: str, data: bytes) -> grpc.StatusCode:
    try:
        if method.endswith("Generate"):
            list(channel.unary_stream(method)(data, timeout=20))
        else:
            channel.unary_unary(method)(data, timeout=20)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=wire_bytes(), method=st.sampled_from(["Generate", "Tokenize"]))
def test_any_bytes_get_a_client_status_and_the_server_keeps_serving(server, data, method):
    with grpc.insecure_channel(server.target) as channel:
        status = _status(channel, f"/mmntp.v1.GenerationService/{method}", data)
        assert status in ALLOWED, (status, data)
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
