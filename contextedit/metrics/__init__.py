"""Metrics of the paper's Table 2 (CLIP-text, CLIP-temporal) and PSNR against the source clip."""

from .clip import DEFAULT_CLIP_MODEL, ClipScorer, clip_temporal_score, clip_text_score, load_clip
from .evaluate import EvalItem, collect_items, evaluate, load_frames, parse_metrics, results_table
from .psnr import PSNR_CAP_DB, psnr

__all__ = [
    "DEFAULT_CLIP_MODEL", "ClipScorer", "EvalItem", "PSNR_CAP_DB", "clip_temporal_score", "clip_text_score",
    "collect_items", "evaluate", "load_clip", "load_frames", "parse_metrics", "psnr", "results_table",
]
