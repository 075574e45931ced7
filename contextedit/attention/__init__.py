"""Attention processors: sparse-causal + temporal inflation, and source-attention fusion."""

from .control import BlendMask, PromptEdit, prompt_edit
from .fusion import FusionPlan, FusionStore, fuse_attention, record_attention
from .processors import (
    CrossAttnProcessor,
    InflatedSelfAttnProcessor,
    TemporalAttention,
    sdpa,
    sparse_causal_kv,
)

__all__ = [
    "BlendMask",
    "CrossAttnProcessor",
    "FusionPlan",
    "FusionStore",
    "InflatedSelfAttnProcessor",
    "PromptEdit",
    "TemporalAttention",
    "fuse_attention",
    "prompt_edit",
    "record_attention",
    "sdpa",
    "sparse_causal_kv",
]
