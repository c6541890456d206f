"""Training with frame heads: the objective adds each complete frame's teacher-forced loss,
DDP-safe inside one module, and recipes create the heads from the tokenizers."""

import pytest
import torch
import torch.nn.functional as F

from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.train.losses import IGNORE_INDEX, TrainingLosses, add_frame_heads
from mmntp.train.recipe import Recipe


class _Codes:
    """The two facts add_frame_heads reads from a 2-level audio tokenizer."""

    num_codebooks = 2
    codebook_sizes = [16, 16]
    sample_range = (0, 16)


def _setup(group=None):
    vocab = VocabLayout.build(text_size=64, codebooks={"audio": [16, 16]})
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size))
    spec = {"hidden": 32, "depth": 1, **({"group": group} if group else {})}
    losses = add_frame_heads(model, vocab, {"audio": _Codes()}, {"audio": spec})
    return vocab, model, losses


def _batch(vocab, frames=5):
    a0, a1 = vocab.range("audio", 0).start, vocab.range("audio", 1).start
    begin, end = vocab.special("<begin_audio>"), vocab.special("<end_audio>")
    row = [vocab.special("<bos>"), 30, 31, begin]
    for f in range(frames):
        row += [a0 + f, a1 + (f * 3) % 16]
    row += [end, vocab.special("<eos>")]
    ids = torch.tensor([row, row])
    targets = torch.cat([ids[:, 1:], torch.full((2, 1), IGNORE_INDEX)], 1)
    return ids, targets


def test_objective_is_token_ce_plus_frame_ce():
    vocab, model, losses = _setup()
    ids, targets = _batch(vocab)
    total = TrainingLosses(model, losses)(ids, targets)
    hidden = model.hidden_states(ids)
    token = F.cross_entropy(
        model.heads["token"](hidden).flatten(0, 1), targets.flatten(), reduction="sum"
    )
    head = model.heads["audio"]
    begin = ids[0].tolist().index(vocab.special("<begin_audio>"))
    positions = [begin + 2 * f for f in range(5)]
    frames = torch.stack([ids[:, p + 1 : p + 3] for p in positions], 1).flatten(0, 1)
    h = hidden[:, positions].flatten(0, 1)
    assert torch.allclose(total, token + head.loss(h, frames), rtol=1e-5)


def test_frame_loss_trains_down():
    vocab, model, losses = _setup()
    objective = TrainingLosses(model, losses)
    ids, targets = _batch(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = objective(ids, targets)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_a_group_of_two_frames_repeats_the_spans():
    vocab, model, _ = _setup(group=4)
    spans = model.heads["audio"].config.spans
    assert len(spans) == 4 and spans[0] == spans[2] and spans[1] == spans[3]
    with pytest.raises(ValueError, match="group must be a multiple"):
        _setup(group=3)


def test_recipe_frame_heads_are_checked():
    base = {"name": "x", "data": {"mixture": [{"source": "text"}]}}
    recipe = Recipe.from_dict({**base, "model": {"frame_heads": {"audio": {"hidden": 64}}}})
    assert recipe.model.to_dict()["frame_heads"] == {"audio": {"hidden": 64}}
    with pytest.raises(ValueError, match="model.frame_heads.audio.hidden"):
        Recipe.from_dict({**base, "model": {"frame_heads": {"audio": {"hidden": 0}}}})
    with pytest.raises(ValueError, match="model.frame_heads.audio.width"):
        Recipe.from_dict({**base, "model": {"frame_heads": {"audio": {"width": 3}}}})


def test_compiled_objective_equals_the_eager_one_in_loss_and_gradients():
    """train.compile runs the trunk, token head and cross-entropy through torch.compile:
    the same loss and gradients as eager to float rounding (frame head included, eager),
    and the recipe key only takes true or false."""
    vocab, model, losses = _setup()
    ids, targets = _batch(vocab)
    results = []
    for compile in (False, True):
        model.zero_grad(set_to_none=True)
        objective = TrainingLosses(model, losses, compile=compile)
        compiled = getattr(objective._token_part, "_torchdynamo_orig_callable", None)
        assert (compiled is not None) == compile  # the token part goes through torch.compile
        loss = objective(ids, targets)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (eager, eager_grads), (compiled, compiled_grads) = results
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert eager_grads.keys() == compiled_grads.keys()
    assert any(name.startswith("heads.audio.") for name in eager_grads)  # the frame head too
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="train.compile must be true or false"):
        Recipe.from_dict({"train": {"compile": "yes"}})
