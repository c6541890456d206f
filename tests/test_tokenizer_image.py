"""Image tokenizers: VQ (LlamaGen-style quantizer) and KL (diffusers AutoencoderKL) wrappers.

Tiny untrained configs test shapes, input forms, errors, card round trips and streaming;
the committed trained cards are checked on held-out photo crops against measured bounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmntp.cli import main as cli_main
from mmntp.data.images import (
    COLORS,
    SHAPES,
    ImageMixture,
    digit_examples,
    heldout_photo,
    heldout_photo_crops,
    shape_examples,
    to_batch,
    training_photos,
)
from mmntp.eval.images import codebook_stats, evaluate_image_tokenizer, psnr, ssim
from mmntp.tokenizers import KLImageTokenizer, VQImageTokenizer, load_tokenizer
from mmntp.tokenizers.image import VectorQuantizer
from mmntp.train.image_tokenizer import parse_recipe, train_image_tokenizer

CARDS = Path(__file__).resolve().parents[1] / "tokenizers"
# The cards report 26.25 dB (VQ) and 24.52 dB (KL) on the 256 held-out chelsea crops; on
# the first 64 used here they measure 26.55 and 24.79 dB. The bounds keep a 1 dB margin.
VQ_PHOTO_PSNR_BOUND = 25.5
KL_PHOTO_PSNR_BOUND = 23.7


@pytest.fixture(scope="module")
def vq() -> VQImageTokenizer:
    return VQImageTokenizer(channels=(8, 16, 16), codebook_size=64, seed=1)


@pytest.fixture(scope="module")
def kl() -> KLImageTokenizer:
    return KLImageTokenizer(block_out_channels=(8, 16, 16), scaling_factor=2.0, shift_factor=0.1)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return heldout_photo_crops(1)[0]  # uint8 (32, 32, 3)


# -- VQ: encode / decode ------------------------------------------------------------------


def test_vq_encode_decode_shapes_and_ranges(vq: VQImageTokenizer, photo: np.ndarray) -> None:
    enc = vq.encode(photo)
    assert enc.codes.shape == (64,) and enc.codes.dtype == torch.long
    assert int(enc.codes.min()) >= 0 and int(enc.codes.max()) < 64
    assert enc.state == {"grid": [8, 8]}
    image = vq.decode(enc.codes, enc.state)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.equal(vq.decode(enc.codes), image)  # the state is optional
    assert vq.codebook_sizes == [64] and vq.sample_range == (0, 64) and vq.num_tokens == 64


def test_vq_input_forms_agree(vq: VQImageTokenizer, photo: np.ndarray) -> None:
    codes = vq.encode(photo).codes
    tensor = torch.from_numpy(photo).permute(2, 0, 1)  # [3, 32, 32] uint8
    assert torch.equal(vq.encode(Image.fromarray(photo)).codes, codes)
    assert torch.equal(vq.encode(tensor).codes, codes)
    assert torch.equal(vq.encode(tensor.float() / 255).codes, codes)
    assert torch.equal(vq.encode(Image.fromarray(photo).convert("RGBA")).codes, codes)
    # Other sizes are resized (short side) and center-cropped; grayscale is replicated.
    assert vq.encode(np.zeros((48, 80, 3), np.uint8)).codes.shape == (64,)
    gray = np.full((32, 32), 7, np.uint8)
    assert torch.equal(vq.encode(gray).codes, vq.encode(np.stack([gray] * 3, 2)).codes)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (torch.rand(4, 32, 32), r"shaped \[3, H, W\]"),
        (torch.rand(32, 32, 3), r"shaped \[3, H, W\]"),
        (torch.rand(3, 0, 32), "empty"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
        (torch.rand(3, 8, 8) * 2, r"\[0, 1\]"),
        (torch.ones(3, 8, 8, dtype=torch.int64), "float in"),
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        (np.zeros((32, 32, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        ("cat.png", "PIL image"),
    ],
)
def test_vq_encode_errors(vq: VQImageTokenizer, image, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vq.encode(image)


def test_vq_decode_errors(vq: VQImageTokenizer) -> None:
    with pytest.raises(ValueError, match=r"shaped \(64,\)"):
        vq.decode(torch.zeros(63, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        vq.decode(torch.full((64,), 64))
    with pytest.raises(ValueError, match="integer"):
        vq.decode(torch.zeros(64))
    with pytest.raises(ValueError, match="does not match"):
        vq.decode(torch.zeros(64, dtype=torch.long), {"grid": [4, 16]})
    with pytest.raises(ValueError, match="rows, cols"):
        vq.decode(torch.zeros(64, dtype=torch.long), {"grid": "8x8"})


def test_vq_config_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        VQImageTokenizer(image_size=30)
    with pytest.raises(ValueError, match="channels"):
        VQImageTokenizer(channels=(8, 6))
    with pytest.raises(ValueError, match="patch"):
        VQImageTokenizer(patch=3)


def test_vq_card_round_trip(vq: VQImageTokenizer, photo: np.ndarray, tmp_path: Path) -> None:
    vq.save(tmp_path / "card")
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == [
        "CARD.md",
        "config.json",
        "tokenizer.safetensors",
    ]
    loaded = load_tokenizer(tmp_path / "card")
    assert isinstance(loaded, VQImageTokenizer) and loaded.config() == vq.config()
    codes = vq.encode(photo).codes
    assert torch.equal(loaded.encode(photo).codes, codes)
    assert torch.equal(loaded.decode(codes), vq.decode(codes))


def test_vq_card_rejects_wrong_weights(vq: VQImageTokenizer) -> None:
    tensors = vq.tensors()
    tensors.pop(next(iter(tensors)))
    with pytest.raises(ValueError, match="missing"):
        VQImageTokenizer.from_config(vq.config(), tensors)


# -- streaming -------------------------------------------------------------------------


def test_vq_stream_rows_then_flush_equals_decode(vq: VQImageTokenizer, photo) -> None:
    enc = vq.encode(photo)
    full = vq.decode(enc.codes, enc.state)
    stream = vq.stream_decoder(enc.state)
    previews = [stream.push(enc.codes[r * 8 : (r + 1) * 8]) for r in range(8)]
    assert all(p is not None and p.shape == (3, 32, 32) for p in previews)
    assert torch.all(previews[2][:, 12:, :] == 0.5)  # rows 3..7 not here yet: gray
    assert not torch.all(previews[2][:, :12, :] == 0.5)
    assert torch.equal(previews[-1], full)
    assert torch.equal(stream.flush(), full)


def test_vq_stream_token_by_token(vq: VQImageTokenizer, photo) -> None:
    enc = vq.encode(photo)
    stream = vq.stream_decoder()
    outs = [stream.push(code) for code in enc.codes]
    assert sum(o is not None for o in outs) == 8  # one preview per completed row
    assert outs[6] is None and outs[7] is not None
    assert torch.equal(stream.flush(), vq.decode(enc.codes))
    with pytest.raises(ValueError, match="grid holds"):
        stream.push(enc.codes[:1])


def test_stream_partial_flush_is_gray_after_last_code(vq: VQImageTokenizer, photo) -> None:
    stream = vq.stream_decoder()
    stream.push(vq.encode(photo).codes[:10])  # one row and two cells
    image = stream.flush()
    assert torch.all(image[:, 8:, 8:] == 0.5) and torch.all(image[:, 12:, :] == 0.5)


# -- the quantizer -----------------------------------------------------------------------


def test_quantizer_codes_are_unit_vectors_and_cosine_nearest() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(32, 8)
    z = torch.randn(2, 8, 4, 4) * 3  # [B, D, h, w]
    out = q(z)
    assert torch.allclose(out.z_q.norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)
    assert torch.allclose(q.codebook().norm(dim=1), torch.ones(32), atol=1e-6)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    cosine = torch.nn.functional.normalize(flat, dim=1) @ q.codebook().T
    assert torch.equal(out.codes.flatten(), cosine.argmax(1))
    assert torch.equal(q.nearest(flat * 10), q.nearest(flat))  # scale does not matter


def test_quantizer_straight_through_and_loss_gradients() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4)
    z = torch.randn(1, 4, 3, 3, requires_grad=True)
    out = q(z)
    weights = torch.randn_like(out.z_q)
    (grad_z,) = torch.autograd.grad((out.z_q * weights).sum(), z, retain_graph=True)
    assert grad_z.abs().sum() > 0  # the decoder's gradient reaches the encoder
    commit_z, commit_e = torch.autograd.grad(
        out.commit_loss, [z, q.embedding], retain_graph=True, allow_unused=True
    )
    assert commit_z.abs().sum() > 0 and commit_e is None  # commitment moves the encoder only
    book_z, book_e = torch.autograd.grad(out.codebook_loss, [z, q.embedding], allow_unused=True)
    assert book_z is None and book_e.abs().sum() > 0  # the codebook loss moves codes only
    assert out.commit_loss.item() == pytest.approx(0.25 * out.codebook_loss.item(), rel=1e-5)


def test_dead_code_restart_revives_unused_codes() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(64, 8, usage_decay=0.5).train()
    target = torch.nn.functional.normalize(torch.randn(8), dim=0)
    near = target[None, :, None, None] + 0.05 * torch.randn(16, 8, 4, 4)  # one small cluster
    for _ in range(20):
        q(near)
    used = set(q(near).codes.unique().tolist())
    assert len(used) < 10
    generator = torch.Generator().manual_seed(0)
    restarted = q.restart_dead_codes(generator=generator)
    assert restarted >= 64 - 10
    restarted_cos = q.codebook() @ target
    assert (restarted_cos > 0.9).sum() >= restarted  # the revived codes sit on the data
    after = set(q(near).codes.unique().tolist())
    assert len(after) > len(used)  # and are chosen again
    assert q.restart_dead_codes(min_usage=0.0) == 0


# -- KL -------------------------------------------------------------------------------


def test_kl_round_trip_and_latent_shape(kl: KLImageTokenizer, photo) -> None:
    enc = kl.encode(photo)
    assert enc.codes.shape == (64, 4) and enc.codes.dtype == torch.float32
    assert kl.latent_dim == 4 and enc.state == {"grid": [8, 8]}
    image = kl.decode(enc.codes, enc.state)
    assert image.shape == (3, 32, 32) and 0 <= float(image.min()) <= float(image.max()) <= 1
    # The latents are the posterior mean, normalised by the stored shift and scale.
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    mean = kl.model.encode(x).latent_dist.mean.flatten(2).transpose(1, 2)[0]  # [64, 4]
    assert torch.allclose(enc.codes, (mean - 0.1) * 2.0, atol=1e-5)
    one = kl.encode(photo, generator=torch.Generator().manual_seed(3)).codes
    two = kl.encode(photo, generator=torch.Generator().manual_seed(3)).codes
    assert torch.equal(one, two) and not torch.allclose(one, enc.codes)


def test_kl_errors_stream_and_card(kl: KLImageTokenizer, photo, tmp_path: Path) -> None:
    enc = kl.encode(photo)
    with pytest.raises(ValueError, match=r"shaped \(64, 4\)"):
        kl.decode(enc.codes[:-1])
    with pytest.raises(ValueError, match="NaN"):
        kl.decode(torch.full((64, 4), float("nan")))
    with pytest.raises(ValueError, match="scaling_factor"):
        KLImageTokenizer(block_out_channels=(8, 16), scaling_factor=0.0)
    stream = kl.stream_decoder(enc.state)
    for row in range(8):
        assert stream.push(enc.codes[row * 8 : (row + 1) * 8]) is not None
    assert torch.equal(stream.flush(), kl.decode(enc.codes))
    kl.save(tmp_path / "kl")
    loaded = load_tokenizer(tmp_path / "kl")
    assert isinstance(loaded, KLImageTokenizer) and loaded.config() == kl.config()
    assert torch.equal(loaded.encode(photo).codes, enc.codes)


# -- the committed trained cards ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bound"), [("image-vq-32", VQ_PHOTO_PSNR_BOUND), ("image-kl-32", KL_PHOTO_PSNR_BOUND)]
)
def test_committed_card_reconstructs_heldout_photo(name: str, bound: float) -> None:
    tok = load_tokenizer(CARDS / name)
    assert sorted(p.name for p in (CARDS / name).iterdir()) == [
        "CARD.md",
        "config.json",
        "recipe.toml",
        "tokenizer.safetensors",
    ]
    assert (CARDS / name / "tokenizer.safetensors").stat().st_size < 8_000_000
    images = to_batch(heldout_photo_crops(64))  # [64, 3, 32, 32]
    recon = tok.decode_batch(tok.encode_batch(images))
    assert float(psnr(recon, images).mean()) > bound
    one = tok.decode(tok.encode(images[0]).codes)
    assert torch.allclose(one, recon[0], atol=1e-5)  # the single-image path agrees


# -- metrics and data ------------------------------------------------------------------


def test_psnr_and_ssim_hand_checked() -> None:
    a = torch.zeros(1, 3, 16, 16)
    assert psnr(a + 0.1, a).item() == pytest.approx(20.0)  # mse 0.01
    # Constant images have zero variance: SSIM is the luminance term (2ab + C1)/(a²+b²+C1).
    c1 = 0.01**2
    expected = (2 * 0.4 * 0.6 + c1) / (0.4**2 + 0.6**2 + c1)
    assert ssim(a + 0.4, a + 0.6).item() == pytest.approx(expected, rel=1e-6)
    noise = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(noise, noise), torch.ones(2, dtype=torch.float64))
    stats = codebook_stats(torch.tensor([0, 0, 1, 1]), 4)
    assert stats == {"usage": 0.5, "perplexity": pytest.approx(2.0)}


def test_procedural_shapes_are_deterministic_and_captioned() -> None:
    first, again = shape_examples(20, seed=5), shape_examples(20, seed=5)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
    assert shape_examples(3, seed=6)[0][1] != first[0][1] or not np.array_equal(
        shape_examples(3, seed=6)[0][0], first[0][0]
    )
    for image, caption in first:
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        words = caption.split()
        color, shape, background = words[1], words[2], words[5]
        assert words[0] in ("a", "an") and words[3] == "on" and words[-1] == "background"
        assert color in COLORS and background in COLORS and shape in SHAPES
        assert color != background
        corner = image[0, 0] if shape != "square" else None
        assert corner is None or np.abs(corner.astype(int) - COLORS[background]).max() < 40


def test_digits_and_heldout_photo_kept_apart() -> None:
    train, held = digit_examples("train"), digit_examples("heldout")
    assert len(train) == 1500 and len(held) == 297
    assert held[0][1].startswith("the digit ") and held[0][0].shape == (32, 32, 3)
    chelsea = heldout_photo()
    assert not any(
        p.shape == chelsea.shape and np.array_equal(p, chelsea) for p in training_photos()
    )
    crops = heldout_photo_crops(4)
    assert all(np.array_equal(a, b) for a, b in zip(crops, heldout_photo_crops(4)))
    mixture = ImageMixture(seed=3)
    batch = mixture.batch(7, 16)
    assert batch.shape == (16, 3, 32, 32) and torch.equal(batch, mixture.batch(7, 16))
    with pytest.raises(ValueError, match="split"):
        digit_examples("test")


# -- training -----------------------------------------------------------------------------


def _tiny_recipe(kind: str, steps: int) -> dict:
    tokenizer = (
        {"channels": [8, 16], "patch": 2, "codebook_size": 32}
        if kind == "vq"
        else {"block_out_channels": [8, 16, 16]}
    )
    return {
        "name": f"tiny-{kind}",
        "kind": kind,
        "batch_size": 8,
        "tokenizer": tokenizer,
        "loss": {"restart_every": 4},
        "optim": {"lr": 5e-3, "warmup_steps": 1, "max_steps": steps},
    }


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_training_smoke_loss_decreases(kind: str, tmp_path: Path) -> None:
    recipe = parse_recipe(_tiny_recipe(kind, 12))
    tok, result = train_image_tokenizer(recipe, out_dir=tmp_path, progress=False, eval_limit=4)
    assert len(result.losses) == 12
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3])
    assert set(result.report["sets"]) == {"photos", "shapes", "digits"}
    assert "## Held-out quality" in (tmp_path / "CARD.md").read_text()
    loaded = load_tokenizer(tmp_path)
    image = heldout_photo_crops(1)[0]
    assert torch.equal(loaded.encode(image).codes, tok.encode(image).codes)
    if kind == "kl":  # the measured latent statistics are stored
        assert loaded.scaling_factor == tok.scaling_factor != 1.0


def test_training_is_deterministic() -> None:
    recipe = parse_recipe(_tiny_recipe("vq", 3))
    runs = [train_image_tokenizer(recipe, progress=False, write=False, eval_limit=2) for _ in "ab"]
    (tok_a, res_a), (tok_b, res_b) = runs
    assert res_a.losses == res_b.losses
    assert all(torch.equal(tok_a.tensors()[k], t) for k, t in tok_b.tensors().items())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"kind": "gan"}, "kind"),
        ({"typo": 1}, "unknown recipe key typo"),
        ({"loss": {"l3": 1}}, "loss.l3"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"tokenizer": {"seed": 3}}, "tokenizer.seed"),
        ({"data": {"photos": -1.0}}, "mixture weights"),
    ],
)
def test_recipe_errors(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_recipe({**_tiny_recipe("vq", 2), **change})


def test_evaluate_reports_codebook_usage(vq: VQImageTokenizer) -> None:
    report = evaluate_image_tokenizer(vq, limit=4)
    assert set(report["codebook"]) == {"usage", "perplexity"}
    assert 0 < report["sets"]["photos"]["usage"] <= 1


# -- the tokenize / detokenize CLI ---------------------------------------------------------


def test_cli_image_round_trip(vq: VQImageTokenizer, photo, tmp_path: Path) -> None:
    vq.save(tmp_path / "card")
    Image.fromarray(photo).save(tmp_path / "in.png")
    codes = tmp_path / "codes.npy"
    assert (
        cli_main(["tokenize", str(tmp_path / "card"), str(tmp_path / "in.png"), "-o", str(codes)])
        == 0
    )
    saved = np.load(codes, allow_pickle=False)
    assert saved.shape == (64,) and torch.equal(torch.from_numpy(saved), vq.encode(photo).codes)
    meta = json.loads(codes.with_suffix(".json").read_text())
    assert meta["tokenizer"] == "image_vq" and meta["state"] == {"grid": [8, 8]}
    out = tmp_path / "out.png"
    assert cli_main(["detokenize", str(tmp_path / "card"), str(codes), "-o", str(out)]) == 0
    pixels = np.asarray(Image.open(out))
    expected = (vq.decode(torch.from_numpy(saved)) * 255).round().byte().permute(1, 2, 0)
    assert pixels.shape == (32, 32, 3) and np.array_equal(pixels, expected.numpy())


def test_cli_timeseries_round_trip(tmp_path: Path) -> None:
    card = str(CARDS / "chronos-4096")
    values = [3.0, 4.5, float("nan"), 6.25, 5.0]
    csv = tmp_path / "series.csv"
    csv.write_text(
        "timestamp,value\n" + "".join(f"2024-01-0{i + 1},{v}\n" for i, v in enumerate(values))
    )
    codes = tmp_path / "s.npy"
    assert cli_main(["tokenize", card, str(csv), "-o", str(codes)]) == 0
    meta = json.loads(codes.with_suffix(".json").read_text())
    scale = meta["state"]["scale"]
    assert scale == pytest.approx(np.nanmean(np.abs(values)))
    assert meta["timestamps"][0] == "2024-01-01"
    out = tmp_path / "back.csv"
    assert cli_main(["detokenize", card, str(codes), "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "timestamp,value" and rows[1].startswith("2024-01-01,")
    back = [float(r.split(",")[1]) for r in rows[1:]]
    assert np.isnan(back[2])
    bound = scale * (30 / 4092) / 2 + 1e-5
    assert np.allclose(np.delete(back, 2), np.delete(values, 2), atol=bound, rtol=0)


def test_cli_text_round_trip_and_errors(tmp_path: Path, capsys) -> None:
    card = str(CARDS / "text-bytes")
    (tmp_path / "in.txt").write_text("héllo\n")
    codes = tmp_path / "t.npy"
    assert cli_main(["tokenize", card, str(tmp_path / "in.txt"), "-o", str(codes)]) == 0
    assert cli_main(["detokenize", card, str(codes), "-o", str(tmp_path / "out.txt")]) == 0
    assert (tmp_path / "out.txt").read_text() == "héllo\n"
    assert cli_main(["tokenize", card, str(tmp_path / "in.txt"), "-o", str(tmp_path / "t")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    assert cli_main(["detokenize", str(CARDS / "chronos-4096"), str(codes), "-o", "x.csv"]) == 2
    assert "was made by 'text_bytes'" in capsys.readouterr().err
