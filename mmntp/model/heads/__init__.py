"""Output heads, one module per family, all behind one per-step interface (`base.py`).

- `token.py`: the token head (softmax over the vocabulary; every model has it);
- `frame.py`: a multi-token head emitting a whole frame of tokens per forward;
- `flow.py`, `diffusion.py`: latent heads turning noise into a vector with diffusers'
  schedulers, over the adaLN denoiser (`denoiser.py`) and the shared loop (`latent.py`),
  their shared settings in `config.py`;
- `registry.py`: heads by type name, for checkpoints and for registering on a model.

Each implements `OutputHead.step(StepRows) -> StepOutput`, the engine runner's one call.
Classifier-free guidance is `mmntp.model.guidance`.
"""

from mmntp.model.guidance import guided
from mmntp.model.heads.base import (
    ContinuousHead,
    Guidance,
    OutputHead,
    StepOutput,
    StepRows,
    TokenSampler,
    as_output_head,
)
from mmntp.model.heads.config import ContinuousSettings, DenoiserConfig, positive_int
from mmntp.model.heads.denoiser import AdaLNDenoiser, above_in_sequence, above_rows
from mmntp.model.heads.diffusion import DiffusionHead, DiffusionHeadConfig
from mmntp.model.heads.flow import FlowHead, FlowHeadConfig
from mmntp.model.heads.frame import FrameHead, FrameHeadConfig, frame_starts
from mmntp.model.heads.registry import HEAD_TYPES, head_from_spec, register_head
from mmntp.model.heads.token import TokenHead

__all__ = [
    "HEAD_TYPES",
    "AdaLNDenoiser",
    "ContinuousHead",
    "ContinuousSettings",
    "DenoiserConfig",
    "DiffusionHead",
    "DiffusionHeadConfig",
    "FlowHead",
    "FlowHeadConfig",
    "FrameHead",
    "FrameHeadConfig",
    "Guidance",
    "OutputHead",
    "StepOutput",
    "StepRows",
    "TokenHead",
    "TokenSampler",
    "above_in_sequence",
    "above_rows",
    "as_output_head",
    "frame_starts",
    "guided",
    "head_from_spec",
    "positive_int",
    "register_head",
]
