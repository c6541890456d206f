"""The two sides of `mmntp bench engine`: the model sizes, one set of random Llama weights
as a transformers model and as an mmntp Transformer, and a greedy generate on each."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmntp.api import SamplingParams
from mmntp.bench.common import now
from mmntp.engine import Engine, Request, free_plan
from mmntp.model.checkpoint import load_model
from mmntp.model.hf_import import import_hf
from mmntp.model.transformer import Transformer

GREEDY = SamplingParams(temperature=0.0)
SEED = 0

# Llama configs (transformers keyword arguments). intermediate_size follows mmntp's own
# SwiGLU rule: 8/3 * hidden rounded up to a multiple of 32.
TINY = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=4096,
    max_position_embeddings=2048,
)
M50 = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=12,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocab_size=16384,
    max_position_embeddings=2048,
)
QUICK_TINY = dict(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=256,
    max_position_embeddings=256,
)
QUICK_M50 = {**QUICK_TINY, "num_hidden_layers": 3, "num_key_value_heads": 2, "vocab_size": 512}


@dataclass(frozen=True)
class Settings:
    """Every size the scenarios use; `quick()` shrinks them for the smoke test.

    `models` maps a row label to a Llama config: the first model serves every scenario
    (its decode row carries the >= 2x target), the others only scenario 1. The label
    names the model measured ("50m" is ~51.6M parameters; the quick one ~0.2M).
    """

    models: dict[str, dict[str, int]] = field(default_factory=lambda: {"tiny": TINY, "50m": M50})
    decode_prompt: int = 16
    decode_new: int = 128
    decode_runs: int = 5
    compile_decode: bool = True  # scenario 1 also runs the engine with compile_decode
    load_requests: int = 32
    load_prompt: tuple[int, int] = (16, 512)  # uniform, inclusive
    load_new: int = 64
    load_rate: float = 8.0  # requests per second (Poisson)
    load_max_batch: int = 8  # transformers baseline batch size
    load_kv_cache_bytes: int = 128 << 20  # holds all 32 requests at once: no preemption
    idle_trials: int = 5
    prefix_shared: int = 960
    prefix_prompt: int = 1024
    prefix_trials: int = 5

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            models={"tiny": QUICK_TINY, "0.2m": QUICK_M50},
            decode_prompt=8,
            decode_new=8,
            decode_runs=1,
            compile_decode=False,  # the smoke test skips the ~15 s compile
            load_requests=4,
            load_prompt=(8, 32),
            load_new=4,
            load_rate=200.0,
            load_max_batch=2,
            load_kv_cache_bytes=8 << 20,
            idle_trials=1,
            prefix_shared=48,
            prefix_prompt=64,
            prefix_trials=1,
        )

    @property
    def reference(self) -> str:
        """The label of the model every scenario runs (the first of `models`)."""
        return next(iter(self.models))


@dataclass
class Pair:
    """The same weights as a transformers model and as an mmntp Transformer."""

    name: str
    hf: Any  # transformers.LlamaForCausalLM
    model: Transformer
    vocab_size: int

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters()


def build_pair(name: str, llama: dict[str, int], workdir: Path) -> Pair:
    """Random Llama weights (fixed seed) -> safetensors -> import_hf -> load_model."""
    import transformers

    config = transformers.LlamaConfig(
        **llama,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(SEED)
    hf = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
    src, dst = workdir / f"{name}-hf", workdir / f"{name}-mmntp"
    hf.save_pretrained(src, safe_serialization=True)
    import_hf(src, dst)
    model = load_model(dst, dtype=torch.float32).model.eval()
    return Pair(name, hf, model, llama["vocab_size"])


def random_ids(rng: random.Random, vocab_size: int, n: int) -> list[int]:
    return [rng.randrange(vocab_size) for _ in range(n)]


# -- the two generators ----------------------------------------------------------------


class StampStreamer:
    """A transformers streamer that timestamps each step's tokens (the first put is the prompt).

    On CPU `generate` calls put() synchronously right after each step picks its tokens,
    so stamp k is when every row of the batch had its token k.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:  # noqa: ARG002 - only the time matters
        if self._prompt_seen:
            self.stamps.append(now())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def hf_generate(hf, prompts: list[list[int]], new_tokens: int, streamer=None) -> torch.Tensor:
    """Greedy, exactly `new_tokens` per row, left-padded batch -> new ids [B, new_tokens]."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)  # pad id 0, masked out
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    out = hf.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        min_new_tokens=new_tokens,
        max_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
        streamer=streamer,
    )
    new = out[:, width:]
    if new.shape[1] != new_tokens:
        raise RuntimeError(f"transformers produced {new.shape[1]} tokens, not {new_tokens}")
    return new


def mmntp_generate(engine: Engine, prompt: list[int], new_tokens: int, rid: str) -> list[int]:
    """One greedy request through the Engine, exactly `new_tokens` tokens -> its ids."""
    req = Request(rid, prompt, free_plan(new_tokens), GREEDY)
    engine.run_to_completion([req])
    if len(req.output_ids) != new_tokens:
        raise RuntimeError(f"mmntp produced {len(req.output_ids)} tokens, not {new_tokens}")
    return list(req.output_ids)


_ids = itertools.count()  # request ids unique across a whole run


def request_id(prefix: str) -> str:
    """A request id unique across the whole run: `prefix-N`."""
    return f"{prefix}-{next(_ids)}"


def warm_up(pair: Pair, engine: Engine, prompt_len: int) -> None:
    """Run both sides once on short and long prompts so kernels and allocators are warm."""
    rng = random.Random(SEED + 99)
    for n in (8, prompt_len):
        prompt = random_ids(rng, pair.vocab_size, n)
        hf_generate(pair.hf, [prompt, prompt[: max(1, n // 2)]], 4)
        mmntp_generate(engine, prompt, 4, request_id("warm"))
