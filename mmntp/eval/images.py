"""Image tokenizer quality on held-out data: PSNR, SSIM, codebook usage and perplexity.

The held-out sets (`heldout_sets`): 256 fixed crops of scikit-image's `chelsea` photo
(never trained on), 256 procedural shapes from a seed training never uses, and the 297
held-out scikit-learn digits. `evaluate_image_tokenizer(tok)` computes every figure a
card reports, so a card's numbers can be regenerated:

    python -m mmntp.eval.images tokenizers/image-vq-32
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import torch

from mmntp.data.images import digit_examples, heldout_photo_crops, shape_examples, to_batch

HELDOUT_SHAPES_SEED = 987_654_321  # training draws its shape seeds from a different stream


def heldout_sets(size: int = 32, limit: int | None = None) -> dict[str, torch.Tensor]:
    """name -> images [N, 3, size, size] in [0, 1]: "photos", "shapes", "digits".

    `limit` keeps the first images of each set only (quick checks; cards use all).
    """
    n = 256 if limit is None else min(256, limit)
    shapes = [image for image, _ in shape_examples(n, HELDOUT_SHAPES_SEED, size)]
    digits = [image for image, _ in digit_examples("heldout", size)][:limit]
    return {
        "photos": to_batch(heldout_photo_crops(n, size)),
        "shapes": to_batch(shapes),
        "digits": to_batch(digits),
    }


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [B, 3, H, W] images in [0, 1] (peak 1); shaped [B]."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)  # [B]
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of [B, 3, H, W] images in [0, 1]; shaped [B].

    scikit-image's `structural_similarity` with Wang et al.'s settings: Gaussian window
    sigma 1.5, population covariance, data range 1, averaged over the RGB channels.
    """
    from skimage.metrics import structural_similarity

    a = x.double().permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
    b = y.double().permute(0, 2, 3, 1).numpy()
    values = [
        structural_similarity(
            p,
            q,
            data_range=1.0,
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for p, q in zip(a, b)
    ]
    return torch.tensor(values, dtype=torch.float64)


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage (fraction of the codebook that occurs) and perplexity (exp entropy) of codes."""
    counts = torch.bincount(codes.flatten(), minlength=codebook_size).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    return {"usage": float((counts > 0).double().mean()), "perplexity": math.exp(entropy)}


def reconstruct(tok: Any, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, Any]:
    """Encodes and decodes [N, 3, S, S] in batches -> (reconstructions, codes or latents)."""
    recons, codes = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        encoded = tok.encode_batch(batch)
        codes.append(encoded)
        recons.append(tok.decode_batch(encoded))
    return torch.cat(recons), torch.cat(codes)


def evaluate_image_tokenizer(
    tok: Any, batch_size: int = 64, limit: int | None = None
) -> dict[str, Any]:
    """Every card figure: per held-out set PSNR / SSIM (+ codebook usage for VQ tokenizers).

    Returns {"sets": {name: {"n", "psnr", "ssim"[, "usage", "perplexity"]}}[, "codebook":
    {"usage", "perplexity"} over all held-out sets]}; PSNR and SSIM are per-image means.
    `limit` evaluates only the first images of each set (quick checks).
    """
    discrete = tok.kind == "discrete"
    report: dict[str, Any] = {"sets": {}}
    all_codes = []
    for name, images in heldout_sets(tok.image_size, limit).items():
        recon, codes = reconstruct(tok, images, batch_size)
        figures = {
            "n": int(images.shape[0]),
            "psnr": float(psnr(recon, images).mean()),
            "ssim": float(ssim(recon, images).mean()),
        }
        if discrete:
            figures.update(codebook_stats(codes, tok.codebook_size))
            all_codes.append(codes.flatten())
        report["sets"][name] = figures
    if discrete:
        report["codebook"] = codebook_stats(torch.cat(all_codes), tok.codebook_size)
    return report


def format_figures(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per held-out set)."""
    discrete = "codebook" in report
    head = "| held-out set | images | PSNR (dB) | SSIM |"
    rule = "|---|---|---|---|"
    if discrete:
        head, rule = head + " codebook usage | perplexity |", rule + "---|---|"
    rows = [head, rule]
    for name, f in report["sets"].items():
        row = f"| {name} | {f['n']} | {f['psnr']:.2f} | {f['ssim']:.3f} |"
        if discrete:
            row += f" {f['usage']:.1%} | {f['perplexity']:.0f} |"
        rows.append(row)
    if discrete:
        c = report["codebook"]
        rows.append(f"| all three | | | | {c['usage']:.1%} | {c['perplexity']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Prints a tokenizer card's figures: `python -m mmntp.eval.images CARD_DIR [--json]`."""
    from mmntp.tokenizers import load_tokenizer

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m mmntp.eval.images CARD_DIR [--json]", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    report = evaluate_image_tokenizer(load_tokenizer(args[0]))
    print(json.dumps(report, indent=2) if "--json" in args else format_figures(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
