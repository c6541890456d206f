"""The engine: continuous batching over a block KV cache (see docs/architecture.md)."""

from mmntp.engine.async_engine import AsyncEngine
from mmntp.engine.engine import Engine, EngineConfig, EngineStats, RequestOutput
from mmntp.engine.plans import (
    SegmentPlan,
    codes_plan,
    continuous_plan,
    frames_plan,
    free_plan,
    text_plan,
)
from mmntp.engine.request import (
    BACKGROUND_PRIORITY,
    PromptVector,
    QueueFullError,
    Request,
    RequestStatus,
)

__all__ = [
    "BACKGROUND_PRIORITY",
    "AsyncEngine",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "PromptVector",
    "QueueFullError",
    "Request",
    "RequestOutput",
    "RequestStatus",
    "SegmentPlan",
    "codes_plan",
    "frames_plan",
    "continuous_plan",
    "free_plan",
    "text_plan",
]
