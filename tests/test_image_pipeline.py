"""Text-to-image through the pipeline and the service on a tiny random model.

What is checked is the plumbing (a tiny untrained model draws noise): raster-order codes in
the image range, previews streamed before the final image, the requested size, guidance
rows, and the errors that name the field.
"""

import io
import json

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from serving import ServerThread

from mmntp.api import SamplingParams
from mmntp.client import Client, Final, ImageChunk
from mmntp.generation import GenerationOutput, ImageOutput, Pipeline
from mmntp.model.checkpoint import save_model
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.tokenizers.image import VQImageTokenizer
from mmntp.train.data import build_tokenizers, build_vocab
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

CAPTION = "a red circle on a blue background"


@pytest.fixture(scope="module")
def image_model_dir(tmp_path_factory):
    tokenizers = build_tokenizers()
    tokenizers["image"] = VQImageTokenizer(image_size=16, channels=(8, 8, 8), codebook_size=32)
    vocab = build_vocab(tokenizers)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size))
    path = tmp_path_factory.mktemp("models") / "image"
    save_model(path, model, vocab, tokenizers)
    return path


@pytest.fixture(scope="module")
def pipe(image_model_dir):
    return Pipeline.from_pretrained(image_model_dir)


def test_stream_previews_rows_then_the_final_image(pipe):
    chunks = list(pipe.stream(CAPTION, ImageOutput(preview_every_rows=1), SamplingParams(seed=1)))
    steps = [c for c in chunks if isinstance(c, ImageChunk)]
    result = chunks[-1]
    assert isinstance(result, GenerationOutput) and result.modality == "image"
    assert [s.rows_done for s in steps] == [1, 2, 3, 4]  # a 4x4 grid, preview every row
    assert [s.final for s in steps] == [False, False, False, True]
    assert steps[0].image().shape == (16, 16, 3) and steps[0].image().dtype == np.uint8
    assert (steps[0].image()[4:] == 128).all()  # rows not generated yet are gray
    np.testing.assert_array_equal(steps[-1].image(), result.image)
    span = pipe.vocab.range("image")
    assert len(result.token_ids) == 16
    assert all(span.start <= t < span.stop for t in result.token_ids)
    png = Image.open(io.BytesIO(steps[-1].png))
    assert png.format == "PNG" and png.size == (16, 16)


def test_requested_size_and_seed(pipe):
    a = pipe(CAPTION, ImageOutput(width=40, height=24), SamplingParams(seed=5))
    b = pipe(CAPTION, ImageOutput(width=40, height=24), SamplingParams(seed=5))
    assert a.image.shape == (24, 40, 3)
    assert a.token_ids == b.token_ids


def test_guidance_adds_an_unconditional_row_unless_scale_is_one(pipe):
    guided = pipe.prepare(CAPTION, ImageOutput(), SamplingParams(guidance_scale=3.0))
    plain = pipe.prepare(CAPTION, ImageOutput(), SamplingParams(guidance_scale=1.0))
    assert guided.uncond_ids is not None and len(guided.uncond_ids) < len(guided.prompt_ids)
    assert plain.uncond_ids is None
    one = pipe(CAPTION, ImageOutput(), SamplingParams(seed=2, guidance_scale=1.0))
    again = pipe(CAPTION, ImageOutput(), SamplingParams(seed=2, guidance_scale=1.0))
    assert one.token_ids == again.token_ids


@pytest.mark.parametrize(
    ("prompt", "output", "message"),
    [
        (CAPTION, ImageOutput(head="flow"), "output.image.head: 'flow' is not available"),
        ("  ", ImageOutput(), "prompt: an image prompt is one non-empty text part"),
        (CAPTION, ImageOutput(width=5000, height=5000), "exceeds max_image_pixels"),
        (CAPTION, ImageOutput(width=-1), "output.image.width must be an integer >= 0"),
    ],
)
def test_image_request_errors(pipe, prompt, output, message):
    with pytest.raises(ValueError, match=message):
        pipe(prompt, output)


def test_image_chunks_over_grpc(image_model_dir):
    pipe = Pipeline.from_pretrained(image_model_dir)
    with ServerThread(pipe) as srv, Client(srv.target, timeout=60) as client:
        chunks = list(client.generate(CAPTION, ImageOutput(width=32, height=32), None))
        images = [c for c in chunks if isinstance(c, ImageChunk)]
        assert images[0].rows_done < images[-1].rows_done == images[-1].total_rows == 4
        assert [c.final for c in images][-1] and not any(c.final for c in images[:-1])
        assert Image.open(io.BytesIO(images[-1].png)).size == (32, 32)
        assert isinstance(chunks[-1], Final) and chunks[-1].output_tokens == 16
        with grpc.insecure_channel(srv.target) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            request = pb.GenerateRequest(
                prompt=[pb.PromptPart(text=CAPTION)],
                output=pb.OutputSpec(image=pb.ImageSpec(head="diffusion")),
            )
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(request, timeout=30))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "output.image.head" in err.value.details()


def test_generate_image_cli_locally_and_over_grpc(image_model_dir, tmp_path, capsys):
    from mmntp.cli import main

    common = ["generate", "--modality", "image", "--prompt", CAPTION, "--seed", "3"]
    common += ["--width", "48", "--height", "48", "--guidance", "2"]
    local = tmp_path / "local.png"
    assert main([*common, "--model", str(image_model_dir), "-o", str(local)]) == 0
    assert "rows 2/4" in capsys.readouterr().err  # previews came before the final image
    with ServerThread(Pipeline.from_pretrained(image_model_dir)) as srv:
        remote = tmp_path / "remote.png"
        assert main([*common, "--server", srv.target, "-o", str(remote)]) == 0
    for path in (local, remote):
        image = Image.open(path)
        assert image.format == "PNG" and image.size == (48, 48)
    np.testing.assert_array_equal(np.asarray(Image.open(local)), np.asarray(Image.open(remote)))
    with pytest.raises(SystemExit):
        main([*common, "--head", "pixel", "-o", str(local)])
    assert main([*common, "--model", str(image_model_dir)]) == 2  # no -o
    assert "-o/--output FILE.png is required" in capsys.readouterr().err


def test_generate_many_equals_one_at_a_time(pipe):
    from mmntp.api import TextOutput

    items = [(CAPTION, ImageOutput(), SamplingParams(seed=i)) for i in range(5)]
    items.append(("The ", TextOutput(max_tokens=6), SamplingParams(seed=9)))
    seen = []
    batched = pipe.generate_many(items, progress=lambda done, total: seen.append((done, total)))
    for item, result in zip(items, batched):
        alone = pipe(*item)
        assert result.token_ids == alone.token_ids
        if result.image is not None:
            np.testing.assert_array_equal(result.image, alone.image)
    assert seen[-1] == (6, 6)
    assert not pipe.engine.has_unfinished()


def test_eval_image_reports_adherence_and_speed(image_model_dir, capsys):
    from mmntp.cli import main
    from mmntp.eval.text_to_image import captions

    assert len(set(captions(30, 0))) > 20 and captions(5, 1) == captions(5, 1)
    args = ["eval", "image", "--model", str(image_model_dir), "--num-prompts", "3", "--batch", "2"]
    assert main([*args, "--guidance", "1,2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(a["head"], a["guidance"]) for a in report["adherence"]] == [("vq", 1.0), ("vq", 2.0)]
    for a, s in zip(report["adherence"], report["speed"]):
        assert a["images"] == 3 and 0 <= a["both"] <= min(a["color"], a["shape"]) <= 1
        assert 0 < s["first_preview_s"] <= s["final_s"] and s["images_per_s"] > 0
    assert main([*args, "--guidance", "x"]) == 2
