"""Attention processors: sparse-causal + temporal inflation, and source-attention fusion."""

from .fusion import FusionStore, fuse_attention, record_attention, token_alignment
from .processors import (
    CrossAttnProcessor,
    InflatedSelfAttnProcessor,
    TemporalAttention,
    sdpa,
    sparse_causal_kv,
)

__all__ = [
    "CrossAttnProcessor",
    "FusionStore",
    "InflatedSelfAttnProcessor",
    "TemporalAttention",
    "fuse_attention",
    "record_attention",
    "sdpa",
    "sparse_causal_kv",
    "token_alignment",
]
