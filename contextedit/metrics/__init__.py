"""Metrics of ``contextedit eval``: CLIP text and frame consistency (the paper's Table 2 and V2VBench's
scales), PickScore, DINO consistency, flow error and warp error against the source, PSNR (also
outside a mask), and the shapes-world oracle. Each is one :class:`Metric` record in
:data:`METRICS` (:mod:`.registry`); :func:`register` adds one. The HTML report is :mod:`.report`."""

from .clip import DEFAULT_CLIP_MODEL, ClipScorer, clip_temporal_score, clip_text_score, load_clip
from .collect import EvalItem, collect_items, load_frames
from .evaluate import evaluate, parse_metrics, results_table
from .metric import Context, Metric
from .psnr import PSNR_CAP_DB, psnr, psnr_frames
from .registry import METRICS, register, unregister

__all__ = [
    "DEFAULT_CLIP_MODEL", "METRICS", "ClipScorer", "Context", "EvalItem", "Metric", "PSNR_CAP_DB", "clip_temporal_score",
    "clip_text_score", "collect_items", "evaluate", "load_clip", "load_frames", "parse_metrics", "psnr", "psnr_frames",
    "register", "results_table", "unregister",
]
