"""Every GenerationService method is behind the API key, not only Generate: ListModels,
Tokenize and Detokenize without a key (or with a wrong one) answer UNAUTHENTICATED, and
with a right key they answer; health stays open."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import DEFAULT_SERVICE, ServerThread

from mmntp.generation import Pipeline
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

KEY = "k-secret"


@pytest.fixture(scope="module")
def target():
    with ServerThread(Pipeline.from_pretrained(DEFAULT_SERVICE), api_keys=[KEY]) as srv:
        yield srv.target


CALLS = {
    "ListModels": lambda stub, md: stub.ListModels(pb.ListModelsRequest(), metadata=md, timeout=10),
    "Tokenize": lambda stub, md: stub.Tokenize(
        pb.TokenizeRequest(part=pb.PromptPart(text="hi")), metadata=md, timeout=10
    ),
    "Detokenize": lambda stub, md: stub.Detokenize(
        pb.DetokenizeRequest(modality=pb.MODALITY_TEXT, ids=[]), metadata=md, timeout=10
    ),
    "Generate": lambda stub, md: list(
        stub.Generate(
            pb.GenerateRequest(
                prompt=[pb.PromptPart(token_ids=pb.TokenIds(ids=[5, 6]))],
                output=pb.OutputSpec(tokens=pb.TokensSpec(max_tokens=1)),
            ),
            metadata=md,
            timeout=30,
        )
    ),
}


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer wrong")]])
def test_every_method_refuses_a_call_without_the_key(target, method, metadata):
    with grpc.insecure_channel(target) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            CALLS[method](stub, metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_method_answers_with_the_key(target, method):
    with grpc.insecure_channel(target) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        CALLS[method](stub, [("authorization", f"Bearer {KEY}")])  # raises on any error
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
