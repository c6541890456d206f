"""Text-to-audio through the pipeline, the CLI and the service on a tiny random model.

The model is untrained (it draws noise), so what is checked is the plumbing: one frame of
codec tokens per forward, PCM chunks streamed through the causal decoder (a one-frame
first chunk that comes with the prefill step, nothing decoded twice, chunks joined equal
the final clip, over gRPC too), seeds, guidance, and the errors that name the field.
"""

import threading
import time

import grpc
import numpy as np
import pytest
import soundfile as sf
import torch
from serving import ServerThread

from mmntp.api import SamplingParams
from mmntp.api.chunks import pcm16
from mmntp.api.sampling import defaults as sampling_defaults
from mmntp.cli import main
from mmntp.client import AudioChunk as WireChunk
from mmntp.client import Client, ClientError
from mmntp.generation import AudioChunk, AudioOutput, GenerationOutput, Pipeline
from mmntp.model.checkpoint import save_model
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.tokenizers.audio_codec import CodecTokenizer
from mmntp.train.data import build_tokenizers, build_vocab
from mmntp.train.losses import add_frame_heads

CAPTION = "a sine tone at 440 Hz"
LEVELS = 3


@pytest.fixture(scope="module")
def audio_model_dir(tmp_path_factory):
    tokenizers = build_tokenizers()
    tokenizers["audio"] = CodecTokenizer(
        channels=(8, 8), strides=(4, 5), patch=16, latent_dim=8, num_levels=LEVELS, codebook_size=16
    )
    vocab = build_vocab(tokenizers)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size))
    add_frame_heads(model, vocab, tokenizers, {"audio": {"hidden": 32, "depth": 1}})
    path = tmp_path_factory.mktemp("models") / "audio"
    save_model(path, model, vocab, tokenizers)
    return path


@pytest.fixture(scope="module")
def pipe(audio_model_dir):
    return Pipeline.from_pretrained(audio_model_dir)


def _stream(pipe, output, sampling):
    chunks = list(pipe.stream(CAPTION, output, sampling))
    return [c for c in chunks if isinstance(c, AudioChunk)], chunks[-1]


def test_stream_chunks_join_to_the_clip(pipe):
    tok = pipe.tokenizer("audio")
    chunks, result = _stream(pipe, AudioOutput(seconds=0.5), SamplingParams(seed=3))
    frames = 25  # 0.5 s at 50 frames/s
    assert isinstance(result, GenerationOutput) and result.modality == "audio"
    assert result.sample_rate == 16000 and len(result.audio) == frames * tok.hop
    assert [c.frames for c in chunks] == [1, 5, 5, 5, 5, 4]  # small first chunk, then 5
    starts = np.cumsum([0] + [len(c.samples) for c in chunks[:-1]])
    assert [c.first_sample for c in chunks] == starts.tolist()
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), result.audio)
    assert len(result.token_ids) == frames * LEVELS
    for k, token in enumerate(result.token_ids):
        level = pipe.vocab.range("audio", k % LEVELS)
        assert level.start <= token < level.stop


def test_streamed_clip_equals_one_shot_decode_of_its_codes(pipe):
    _, result = _stream(pipe, AudioOutput(seconds=0.3), SamplingParams(seed=4))
    tok = pipe.tokenizer("audio")
    starts = torch.tensor([pipe.vocab.range("audio", k).start for k in range(LEVELS)])
    codes = torch.tensor(result.token_ids).reshape(-1, LEVELS) - starts
    np.testing.assert_allclose(result.audio, tok.decode(codes).numpy(), atol=1e-5)


def test_the_first_chunk_comes_with_the_prefill_step(pipe):
    for frame_head, steps_needed in ((True, 1), (False, LEVELS)):
        before = pipe.engine.stats.steps
        output = AudioOutput(seconds=0.2, frame_head=frame_head)
        for chunk in pipe.stream(CAPTION, output, SamplingParams(seed=1, guidance_scale=1.0)):
            if isinstance(chunk, AudioChunk):
                assert pipe.engine.stats.steps - before == steps_needed
                break


def test_same_seed_same_audio_and_guidance_one_is_unguided(pipe):
    a = pipe(CAPTION, AudioOutput(seconds=0.2), SamplingParams(seed=9, top_k=8))
    b = pipe(CAPTION, AudioOutput(seconds=0.2), SamplingParams(seed=9, top_k=8))
    np.testing.assert_array_equal(a.audio, b.audio)
    guided = pipe.prepare(CAPTION, AudioOutput(), SamplingParams(guidance_scale=3.0))
    plain = pipe.prepare(CAPTION, AudioOutput(), SamplingParams(guidance_scale=1.0))
    assert guided.uncond_ids is not None and plain.uncond_ids is None
    default = pipe.prepare(CAPTION, AudioOutput()).sampling.guidance_scale
    assert default == sampling_defaults("audio").guidance_scale > 1


@pytest.mark.parametrize(
    ("output", "prompt", "match"),
    [
        (AudioOutput(seconds=0), CAPTION, "output.audio.seconds must lie in"),
        (AudioOutput(seconds=float("nan")), CAPTION, "output.audio.seconds must lie in"),
        (AudioOutput(seconds=100.0), CAPTION, "output.audio.seconds must lie in"),
        (AudioOutput(seconds=20.0), CAPTION, "more than max_output_tokens"),
        (AudioOutput(chunk_frames=-1), CAPTION, "output.audio.chunk_frames"),
        (AudioOutput(), "   ", "an audio prompt is one non-empty text part"),
    ],
)
def test_bad_audio_requests_name_the_field(pipe, output, prompt, match):
    with pytest.raises(ValueError, match=match):
        pipe.prepare(prompt, output)


def test_cli_writes_a_wav_of_the_requested_length(audio_model_dir, tmp_path):
    out = tmp_path / "tone.wav"
    args = ["generate", "--model", str(audio_model_dir), "--modality", "audio"]
    args += ["--prompt", CAPTION, "--seconds", "0.4", "--seed", "1", "-o", str(out)]
    assert main(args) == 0
    samples, rate = sf.read(out)
    assert rate == 16000 and len(samples) == 20 * 320
    assert main([*args[:-1], str(tmp_path / "tone.mp3")]) == 2  # not a .wav


class _SlowSteps:
    """Makes every engine step last at least `seconds` and records when each ended."""

    def __init__(self, engine, seconds: float) -> None:
        self.engine, self.seconds, self.ends = engine, seconds, []
        self.original = engine.step

    def __enter__(self):
        def step():
            begin = time.perf_counter()
            out = self.original()
            time.sleep(max(0.0, self.seconds - (time.perf_counter() - begin)))
            self.ends.append(time.perf_counter())
            return out

        self.engine.step = step
        return self

    def __exit__(self, *exc):
        self.engine.step = self.original


def test_grpc_first_chunk_before_the_second_frame_and_equal_to_offline(audio_model_dir):
    pipe = Pipeline.from_pretrained(audio_model_dir)
    output = AudioOutput(seconds=0.3)
    sampling = SamplingParams(seed=11, top_k=8)
    # Offline on a second pipeline in the same cache state as the server's (a warm-up run
    # first: the measured request then reuses the cached prompt blocks in both).
    local = Pipeline.from_pretrained(audio_model_dir)
    local(CAPTION, output, sampling)
    offline = local(CAPTION, output, sampling)
    with ServerThread(pipe) as server, Client(server.target) as client:
        list(client.generate(CAPTION, output, sampling))  # warm-up
        first, pieces = None, []
        with _SlowSteps(pipe.engine, 0.15) as slow:
            for chunk in client.generate(CAPTION, output, sampling):
                if isinstance(chunk, WireChunk):
                    first = first or time.perf_counter()
                    pieces.append(chunk)
        # The second frame is made by the second engine step of this request.
        assert first < slow.ends[1]
    assert pieces[0].first_sample == 0 and pieces[0].sample_rate == 16000
    assert len(pieces[0].pcm16()) == 2 * 320  # one frame
    assert b"".join(c.pcm16() for c in pieces) == pcm16(offline.audio)


def test_grpc_audio_errors_and_the_server_keeps_serving(audio_model_dir):
    pipe = Pipeline.from_pretrained(audio_model_dir)
    with ServerThread(pipe) as server, Client(server.target) as client:
        with pytest.raises(ClientError) as err:
            list(client.generate(CAPTION, AudioOutput(seconds=-1.0)))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "output.audio.seconds" in err.value.details
        chunks = list(client.generate(CAPTION, AudioOutput(seconds=0.1), SamplingParams(seed=0)))
        assert any(isinstance(c, WireChunk) for c in chunks)


def test_concurrent_audio_streams_stay_independent(audio_model_dir):
    pipe = Pipeline.from_pretrained(audio_model_dir)
    output, results = AudioOutput(seconds=0.2), {}
    expected = {s: pipe(CAPTION, output, SamplingParams(seed=s, top_k=8)).audio for s in (1, 2)}
    with ServerThread(Pipeline.from_pretrained(audio_model_dir)) as server:

        def run(seed):
            with Client(server.target) as client:
                chunks = client.generate(CAPTION, output, SamplingParams(seed=seed, top_k=8))
                results[seed] = b"".join(c.pcm16() for c in chunks if isinstance(c, WireChunk))

        threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for seed in (1, 2):
        assert results[seed] == pcm16(expected[seed])


def test_a_one_codebook_tokenizer_with_a_four_frame_head(tmp_path):
    """Cochlear tokens (200/s, one codebook): the head emits 4 frames per forward."""
    from mmntp.tokenizers.audio_cochlear import CochlearTokenizer

    tokenizers = build_tokenizers()
    tokenizers["audio"] = CochlearTokenizer(channels=16, fir_length=128, codebook_size=32)
    vocab = build_vocab(tokenizers)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size))
    add_frame_heads(model, vocab, tokenizers, {"audio": {"hidden": 32, "depth": 1, "group": 4}})
    save_model(tmp_path / "m", model, vocab, tokenizers)
    pipe = Pipeline.from_pretrained(tmp_path / "m")
    before = pipe.engine.stats.steps
    chunks, result = [], None
    for chunk in pipe.stream(CAPTION, AudioOutput(seconds=0.1), SamplingParams(seed=0)):
        if isinstance(chunk, AudioChunk):
            if not chunks:
                assert pipe.engine.stats.steps - before == 1  # with the prefill step
            chunks.append(chunk)
        result = chunk
    assert len(result.token_ids) == 20 and len(result.audio) == 20 * 80  # 0.1 s at 200/s
    assert pipe.engine.stats.steps - before == 5  # 4 frames per forward
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), result.audio)
