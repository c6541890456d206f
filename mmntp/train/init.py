"""Start a training run from an existing model folder (recipe `model.init_from`).

Every weight whose name and shape match is copied. The embedding table and the token
head are copied row by vocabulary entry instead of by position: each special token by
name, each (modality, codebook) range by its codes. Ids that are new in this vocabulary
(a new modality's range) keep their fresh initialisation.

`layers` grows a model deeper (block expansion, as in LLaMA Pro): entry i names the
source block that block i starts from. A source block named a second time starts as an
identity copy, its residual output projections (o_proj, down_proj) zeroed, so the grown
model computes exactly what the source did at step 0 and training decides what the new
blocks add.

A continuous input or head whose vector width changed (cells of another size) starts
fresh: the trunk and the token side carry over, the vectors' projections do not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmntp.model.checkpoint import load_model
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout

VOCAB_ROWS = ("tok_embeddings.weight", "heads.token.proj.weight")
RESIDUAL_OUTPUTS = ("attn.o_proj.weight", "attn.o_proj.bias", "mlp.down_proj.weight")


@torch.no_grad()
def init_from_model(
    model: Transformer,
    vocab: VocabLayout,
    folder: str | Path,
    tokenizers: dict | None = None,
    layers: list[int] | None = None,
) -> dict:
    """Copy weights from `folder` into `model`; returns counts of what was carried over and
    the modalities that start fresh because `tokenizers` (this run's) differ from its cards.
    `layers` maps each of `model`'s blocks to a source block (see the module's docstring)."""
    source = load_model(folder)
    changed = changed_tokenizers(source.tokenizers, tokenizers or {})
    old_state = source.model.state_dict()
    if layers is not None:
        old_state = expand_layers(old_state, layers, source.model.config.n_layers, folder)
    new_state = model.state_dict()
    mapping = row_mapping(source.vocab, vocab, skip=changed)  # (old ids [N], new ids [N])
    resized = resized_vectors(source.model, model)
    skip = tuple(f"heads.{m}." for m in changed) + tuple(f"{r}." for r in resized)
    copied = rows = 0
    for name, tensor in new_state.items():
        old = old_state.get(name)
        if old is None or name.startswith(skip):
            continue
        if name in VOCAB_ROWS and old.shape[1:] == tensor.shape[1:]:
            tensor[mapping[1]] = old[mapping[0]].to(tensor.dtype)
            rows += len(mapping[0])
        elif old.shape == tensor.shape:
            tensor.copy_(old)
            copied += 1
        else:
            raise ValueError(
                f"model.init_from {folder}: {name} is {tuple(old.shape)} there but "
                f"{tuple(tensor.shape)} here (use the same model preset)"
            )
    return {"tensors": copied, "vocab_rows": rows, "fresh": sorted(changed), "resized": resized}


def resized_vectors(source: Transformer, model: Transformer) -> list[str]:
    """Input projections and continuous heads whose vector width differs between the two
    (another cell size, say): their vectors mean something else, so they start fresh."""
    old, new = source.config.continuous_inputs, model.config.continuous_inputs
    out = [f"input_proj.{m}" for m in old.keys() & new.keys() if old[m] != new[m]]
    for name in source.heads.keys() & model.heads.keys():
        a, b = source.heads[name], model.heads[name]
        if hasattr(a, "width") and hasattr(b, "width") and a.width != b.width:
            out.append(f"heads.{name}")
    return sorted(out)


def changed_tokenizers(old: dict, new: dict) -> set[str]:
    """Names in both dicts whose tokenizers would give other codes: another type, or another
    `code_identity()` (config or tensors). A retrained decoder alone changes nothing."""
    return {name for name in old.keys() & new.keys() if not same_codes(old[name], new[name])}


def same_codes(a, b) -> bool:
    if type(a) is not type(b):
        return False
    (ca, ta), (cb, tb) = a.code_identity(), b.code_identity()
    return ca == cb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def row_mapping(
    old: VocabLayout, new: VocabLayout, skip: set[str] = frozenset()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the entries both vocabularies share: (ids in old, the same entries in new);
    the ranges of the modalities in `skip` are left out."""
    pairs = [(i, new.specials[name]) for name, i in old.specials.items() if name in new.specials]
    for r in old.ranges:
        if r.modality in skip:
            continue
        match = [n for n in new.ranges if (n.modality, n.codebook) == (r.modality, r.codebook)]
        if not match:
            continue
        if match[0].size != r.size:
            raise ValueError(
                f"model.init_from: the {r.modality} codebook {r.codebook} has {r.size} codes "
                f"there and {match[0].size} here"
            )
        pairs.extend(zip(range(r.start, r.stop), range(match[0].start, match[0].stop)))
    # Padding ids (past the last code, up to a friendly multiple) that are padding in both
    # stay where they are: a run on an unchanged vocabulary then starts bit-equal.
    same = sorted(padding_ids(old) & padding_ids(new))
    pairs.extend(zip(same, same))
    old_ids, new_ids = zip(*pairs)
    return torch.tensor(old_ids), torch.tensor(new_ids)


def padding_ids(vocab: VocabLayout) -> set[int]:
    """Ids that are neither a special token nor any codebook's code."""
    used = set(vocab.specials.values())
    for r in vocab.ranges:
        used.update(range(r.start, r.stop))
    return set(range(vocab.size)) - used


def expand_layers(state: dict, layers: list[int], n_source: int, folder) -> dict:
    """`state` with its blocks renumbered by `layers` (entry i: the source block of block i);
    repeats of a source block get zeroed residual output projections (identity blocks)."""
    bad = [i for i in layers if not 0 <= i < n_source]
    if bad:
        raise ValueError(f"model.init_layers: {folder} has blocks 0-{n_source - 1}, not {bad}")
    out = {k: v for k, v in state.items() if not k.startswith("layers.")}
    seen = set()
    for i, src in enumerate(layers):
        prefix = f"layers.{src}."
        for name, tensor in state.items():
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                repeat = src in seen and rest in RESIDUAL_OUTPUTS
                out[f"layers.{i}.{rest}"] = torch.zeros_like(tensor) if repeat else tensor
        seen.add(src)
    return out
