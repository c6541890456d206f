"""Fuzzing the request path: any GenerateRequest the wire can carry either passes the one
validation step and encodes, or is refused with a FieldError naming a request field —
never another exception (which the server would answer INTERNAL)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmntp.api import FieldError
from mmntp.generation import Pipeline
from mmntp.serve import convert
from mmntp.v1 import generation_pb2 as pb

FIELD_ROOTS = ("prompt", "output", "sampling", "request_id", "model")

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
small_ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)

text_part = st.builds(lambda t: pb.PromptPart(text=t), st.text(max_size=40))
ids_part = st.builds(
    lambda ids: pb.PromptPart(token_ids=pb.TokenIds(ids=ids)), st.lists(small_ints, max_size=8)
)
series_part = st.builds(
    lambda v, ts: pb.PromptPart(timeseries=pb.TimeSeriesInput(values=v, timestamps=ts)),
    st.lists(floats, max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
)
image_part = st.builds(lambda b: pb.PromptPart(image=pb.ImageInput(data=b)), st.binary(max_size=64))
audio_part = st.builds(
    lambda b, r: pb.PromptPart(audio=pb.AudioInput(pcm=pb.PcmAudio(data=b, sample_rate=r))),
    st.binary(max_size=64),
    small_ints,
)
motion_part = st.builds(
    lambda n, v: pb.PromptPart(motion=pb.MotionInput(num_features=n, values=v)),
    small_ints,
    st.lists(st.floats(width=32), max_size=12),
)
empty_part = st.just(pb.PromptPart())
parts = st.one_of(text_part, ids_part, series_part, image_part, audio_part, motion_part, empty_part)

outputs = st.one_of(
    st.just(pb.OutputSpec()),
    st.builds(lambda n: pb.OutputSpec(text=pb.TextSpec(max_tokens=n)), small_ints),
    st.builds(
        lambda n, s: pb.OutputSpec(tokens=pb.TokensSpec(max_tokens=n, stop_ids=s)),
        small_ints,
        st.lists(small_ints, max_size=4),
    ),
    st.builds(
        lambda h, n, q: pb.OutputSpec(
            timeseries=pb.TimeSeriesSpec(horizon=h, num_samples=n, quantiles=q)
        ),
        st.integers(-3, 80),
        st.integers(-3, 200),
        st.lists(floats, max_size=6),
    ),
    st.builds(
        lambda w, h, head: pb.OutputSpec(image=pb.ImageSpec(width=w, height=h, head=head)),
        small_ints,
        small_ints,
        st.sampled_from(["", "vq", "flow", "bogus"]),
    ),
    st.builds(lambda s: pb.OutputSpec(audio=pb.AudioSpec(seconds=s)), st.floats(width=32)),
    st.builds(lambda f: pb.OutputSpec(motion=pb.MotionSpec(frames=f)), small_ints),
)


def _sampling(values: dict) -> pb.SamplingParams:
    return pb.SamplingParams(**{k: v for k, v in values.items() if v is not None})


sampling = st.builds(
    _sampling,
    st.fixed_dictionaries(
        {
            "temperature": st.none() | st.floats(width=32),
            "top_k": st.none() | small_ints,
            "top_p": st.none() | st.floats(width=32),
            "min_p": st.none() | st.floats(width=32),
            "repetition_penalty": st.none() | st.floats(width=32),
            "seed": st.none() | st.integers(0, 2**64 - 1),
            "guidance_scale": st.none() | st.floats(width=32),
            "num_steps": st.none() | small_ints,
        }
    ),
)
requests = st.builds(
    lambda p, o, s: pb.GenerateRequest(prompt=p, output=o, sampling=s),
    st.lists(parts, max_size=3),
    outputs,
    sampling,
)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_any_wire_request_is_encoded_or_refused_naming_a_field(pipe, request):
    try:
        args = convert.generate_args(request)
        valid = pipe.validate(args.prompt, args.output, args.sampling)
        job = pipe.prepare(valid)
    except FieldError as err:
        assert err.field.startswith(FIELD_ROOTS), err
        assert str(err).startswith(err.field)
        return
    assert job.prompt_ids and job.segment.max_tokens >= 1
