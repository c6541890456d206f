"""Limits at their exact boundary, through the local pipeline and through the gRPC server:
token id vocab_size - 1 accepted and vocab_size refused (prompt and stop ids), horizon
timeseries_max_horizon accepted and one more refused."""

import grpc
import numpy as np
import pytest
from serving import DEFAULT_SERVICE, ServerThread

from mmntp.api import FieldError, TimeSeriesOutput, TimeSeriesPart, TokenIdsPart, TokensOutput
from mmntp.generation import Pipeline
from mmntp.serve.server import ServerConfig
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

HISTORY = np.sin(np.arange(48) / 4.0) + 2.0


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(DEFAULT_SERVICE)


@pytest.fixture(scope="module")
def stub(pipe):
    with (
        ServerThread(pipe, ServerConfig(port=0, warmup=False)) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        yield generation_pb2_grpc.GenerationServiceStub(channel)


def _vocab_size(pipe) -> int:
    return pipe.capabilities().vocab_size


def _max_horizon(pipe) -> int:
    return pipe.limits.timeseries_max_horizon


# -- the local pipeline -----------------------------------------------------------------


def test_pipeline_token_id_bound(pipe):
    last = _vocab_size(pipe) - 1
    out = pipe(TokenIdsPart([5, last]), TokensOutput(max_tokens=1, stop_ids=[last]))
    assert len(out.token_ids) == 1
    with pytest.raises(FieldError) as err:
        pipe.validate(TokenIdsPart([5, last + 1]), TokensOutput(max_tokens=1))
    assert err.value.field == "prompt[0].token_ids.ids[1]"
    with pytest.raises(FieldError) as err:
        pipe.validate(TokenIdsPart([5]), TokensOutput(max_tokens=1, stop_ids=[last + 1]))
    assert err.value.field.endswith("stop_ids[0]")
    with pytest.raises(FieldError):
        pipe.validate(TokenIdsPart([-1]), TokensOutput(max_tokens=1))


def test_pipeline_horizon_bound(pipe):
    top = _max_horizon(pipe)
    spec = TimeSeriesOutput(horizon=top, num_samples=1, quantiles=[0.5])
    assert pipe.validate(TimeSeriesPart(HISTORY), spec).output.horizon == top
    out = pipe(TimeSeriesPart(HISTORY), spec)
    assert out.forecast.samples.shape == (1, top) and len(out.forecast.median) == top
    with pytest.raises(FieldError) as err:
        pipe.validate(TimeSeriesPart(HISTORY), TimeSeriesOutput(horizon=top + 1, num_samples=1))
    assert err.value.field.endswith("horizon")


# -- over gRPC ----------------------------------------------------------------------------


def _tokens_request(ids, stop_ids=()):
    return pb.GenerateRequest(
        prompt=[pb.PromptPart(token_ids=pb.TokenIds(ids=ids))],
        output=pb.OutputSpec(tokens=pb.TokensSpec(max_tokens=1, stop_ids=stop_ids)),
    )


def _forecast_request(horizon):
    return pb.GenerateRequest(
        prompt=[pb.PromptPart(timeseries=pb.TimeSeriesInput(values=HISTORY.tolist()))],
        output=pb.OutputSpec(
            timeseries=pb.TimeSeriesSpec(horizon=horizon, num_samples=1, quantiles=[0.5])
        ),
    )


def _refused(stub, request) -> str:
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(request, timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value.details()


def test_grpc_token_id_bound(stub, pipe):
    last = _vocab_size(pipe) - 1
    replies = list(stub.Generate(_tokens_request([5, last], [last]), timeout=60))
    assert replies and replies[-1].HasField("final")
    assert "prompt[0].token_ids.ids[1]" in _refused(stub, _tokens_request([5, last + 1]))
    assert "stop_ids[0]" in _refused(stub, _tokens_request([5], [last + 1]))


def test_grpc_horizon_bound(stub, pipe):
    top = _max_horizon(pipe)
    replies = list(stub.Generate(_forecast_request(top), timeout=120))
    assert replies and replies[-1].HasField("final")
    assert "output.timeseries.horizon" in _refused(stub, _forecast_request(top + 1))
