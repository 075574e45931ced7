"""``contextedit eval``: score clips with CLIP, PickScore, DINO, optical flow, PSNR and the shapes oracle.

:func:`evaluate` returns a plain dict (written as JSON by the CLI): the backbones and the scale of
every figure (``models``, ``scales``), one row per clip with its per-frame series (``per_frame``),
and the means. :func:`results_table` renders it. Which published tables each figure matches is in
:data:`SCALES` and the README.

A clip compared with a source of another length or shape is compared over the first min(len)
frames, the source resized to the clip's size: each row says how many frames each source metric
compared (``compared_frames``, with ``source_frames``), and its ``notes`` say when the lengths or
the aspects differ (and when only the edit half of a side-by-side output was scored, ``cropped``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Iterable

import numpy as np
import torch

from ..errors import InputError, UsageError
from ..progress import ProgressFactory, progress_bar
from .clip import DEFAULT_CLIP_MODEL, TEMPORAL_MODES, ClipScorer, clip_temporal_score, load_clip
from .collect import EvalItem, collect_items, load_frames
from .dino import DEFAULT_DINO_MODEL, DinoScorer, load_dino
from .pickscore import DEFAULT_PICKSCORE_MODEL, load_pickscore, pickscore_per_frame
from .psnr import psnr_frames

KNOWN_METRICS = ("clip", "pickscore", "dino", "flow", "warp", "psnr", "oracle")
NEEDS_PROMPT = ("clip", "pickscore", "oracle")
NEEDS_SOURCE = ("flow", "warp", "psnr")
KEYS = {
    "clip": ("clip_text", "clip_text_logit", "clip_temporal"), "pickscore": ("pickscore",), "dino": ("dino_temporal",),
    "flow": ("flow_epe",), "warp": ("warp_error",), "psnr": ("psnr", "bg_psnr"),
    "oracle": ("oracle_colour", "oracle_shape", "oracle_background", "oracle_success", "oracle_frames_right",
               "oracle_background_kept", "oracle_centroid_error", "oracle_temporal_iou"),
}
# The scale of each figure, written into the JSON so that nobody compares a cosine with a logit.
SCALES = {
    "clip_text": "cosine(frame, prompt) of CLIP embeddings, mean over frames; the paper's Table 2 scale (0.274)",
    "clip_text_logit": "100 x clip_text: V2VBench's and LOVEU-TGVE's CLIP-T scale (27.5 for Tune-A-Video)",
    "clip_temporal": "cosine of CLIP frame embeddings, {temporal} pairs (V2VBench CLIP-F: consecutive)",
    "pickscore": "PickScore_v1: exp(logit_scale) x cosine(frame, prompt), about 100 x cosine; mean over frames",
    "dino_temporal": "cosine of DINOv2 [CLS] embeddings, {temporal} pairs",
    "flow_epe": "pixels at the edit's size: mean end-point error between the source's and the edit's optical flow "
                "(lower is better; V2VBench's motion alignment is -flow_epe)",
    "warp_error": "MSE on [0,1] pixels between each edit frame and the next one warped back with the source's flow, "
                  "non-occluded pixels only (lower is better)",
    "psnr": "dB against the source, per frame capped at 100, mean over frames",
    "bg_psnr": "dB against the source outside --mask (white = edited region)",
    "oracle_colour": "share of frames whose colour the shapes oracle reads as the prompt's (0..1)",
    "oracle_shape": "share of frames whose shape matches the prompt (0..1)",
    "oracle_background": "share of frames whose background matches the prompt (0..1)",
    "oracle_success": "1 when most frames show the prompt's changed attribute (bench/quality.py's success)",
    "oracle_frames_right": "share of frames right on the changed attribute",
    "oracle_background_kept": "share of background pixels off the object's path still of the source's colour",
    "oracle_centroid_error": "pixels between the edited and the source object's centroids, mean over frames",
    "oracle_temporal_iou": "IoU of consecutive object masks after the source's motion",
}
PER_FRAME = ("clip_text", "pickscore", "flow_epe", "warp_error", "psnr")
USES_SOURCE = ("flow", "warp", "psnr", "oracle")  # the metrics that compare with the source (the oracle when given one)
# Row fields that are not metrics (the table, the means and the report leave them out).
ROW_INFO = ("path", "prompt", "frames", "source_frames", "compared_frames", "cropped", "notes", "per_frame")
ASPECT_TOLERANCE = 0.01  # relative: rounding a size to a multiple of 8 is no change of aspect


@dataclass
class Scorers:
    """The backbones the chosen metrics need, loaded once for all clips."""

    clip: ClipScorer | None = None
    pickscore: ClipScorer | None = None
    dino: DinoScorer | None = None
    flow: object | None = None
    names: list[str] = field(default_factory=list)

    def models(self) -> dict:
        return {"clip": _id(self.clip), "pickscore": _id(self.pickscore), "dino": _id(self.dino),
                "flow": getattr(self.flow, "name", None)}


def _id(scorer) -> str | None:
    return None if scorer is None else scorer.model_id


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    """``"clip,psnr"`` → ``["clip", "psnr"]``; an unknown name is a UsageError listing the known ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in names if n not in KNOWN_METRICS]
    if unknown or not names:
        what = f"unknown metric {', '.join(unknown)}" if unknown else "no metric given"
        raise UsageError(f"{what}; `metrics` takes a comma list of: {', '.join(KNOWN_METRICS)}")
    return names


def evaluate(
    paths: Iterable[str | os.PathLike],
    metrics: str | Iterable[str] = "clip",
    prompt: str | None = None,
    clip_model: str = DEFAULT_CLIP_MODEL,
    temporal: str = "consecutive",
    source: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    scorer: ClipScorer | None = None,
    progress: ProgressFactory | None = None,
    *,
    pickscore_model: str = DEFAULT_PICKSCORE_MODEL,
    dino_model: str = DEFAULT_DINO_MODEL,
    flow: str = "farneback",
    flow_model: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    items: list[EvalItem] | None = None,
    source_frames: np.ndarray | None = None,
) -> dict:
    """Score every clip in ``paths`` (or the already read ``items``) with ``metrics``.

    ``flow``, ``warp`` and ``psnr`` compare each clip with ``source`` (or ``source_frames``);
    ``bg_psnr`` needs ``mask`` too. A preloaded ``scorer`` replaces ``clip_model``. Returns
    ``{"metrics", "models", "scales", "temporal", "source", "mask", "clip_model", "results", "mean"}``.
    """
    names = parse_metrics(metrics)
    if temporal not in TEMPORAL_MODES:
        raise UsageError(f"`temporal` {temporal!r} is not one of {', '.join(TEMPORAL_MODES)}")
    has_source = source is not None or source_frames is not None
    needing = [n for n in names if n in NEEDS_SOURCE]
    if needing and not has_source:
        raise UsageError(f"`metrics` {', '.join(needing)} compare with the source clip; pass `source` VIDEO")
    if mask is not None and "psnr" not in names:
        raise UsageError("`mask` serves bg_psnr; add psnr to `metrics` and pass `source`")
    items = items if items is not None else collect_items(paths, prompt)
    if any(n in NEEDS_PROMPT for n in names):
        for item in items:
            if not item.prompt:
                raise UsageError(f"no prompt for {item.path}: pass `prompt` or point at an edit/generate output folder")
    if "oracle" in names:
        from .oracle import check_prompts

        check_prompts([item.prompt for item in items])
    if source_frames is None and source is not None:
        source_frames = load_frames(source)
    keep = _mask(mask, source_frames) if mask is not None else None
    scorers = load_scorers(names, device, clip_model=clip_model, pickscore_model=pickscore_model,
                           dino_model=dino_model, flow=flow, flow_model=flow_model, clip_scorer=scorer)

    results = []
    with (progress or partial(progress_bar, enabled=False))("evaluating", len(items)) as advance:
        for item in items:
            results.append(score_item(item, scorers, temporal, source_frames, keep))
            advance()
    keys = [key for name in names for key in KEYS[name] if key != "bg_psnr" or mask is not None]
    return {
        "metrics": names, "models": scorers.models(), "clip_model": _id(scorers.clip),
        "scales": {k: SCALES[k].format(temporal=temporal) for k in keys}, "temporal": temporal,
        "source": str(source) if source is not None else None, "mask": str(mask) if mask is not None else None,
        "results": results, "mean": _means(results, keys),
    }


def load_scorers(names: list[str], device, *, clip_model: str = DEFAULT_CLIP_MODEL, pickscore_model: str = DEFAULT_PICKSCORE_MODEL,
                 dino_model: str = DEFAULT_DINO_MODEL, flow: str = "farneback", flow_model=None,
                 clip_scorer: ClipScorer | None = None) -> Scorers:
    """Load each backbone that ``names`` needs (and only those) on ``device``."""
    from .flow import FLOW_METHODS, load_flow

    if flow not in FLOW_METHODS:
        raise UsageError(f"`flow` {flow!r} is not one of {', '.join(FLOW_METHODS)}")
    if flow_model is not None and flow != "raft":
        raise UsageError("`flow_model` is RAFT's weights file; pass `flow` raft with it")
    device = _device(device)
    scorers = Scorers(names=names)
    if "clip" in names:
        scorers.clip = clip_scorer or load_clip(clip_model, device)
    if "pickscore" in names:
        scorers.pickscore = load_pickscore(pickscore_model, device)
    if "dino" in names:
        scorers.dino = load_dino(dino_model, device)
    if "flow" in names or "warp" in names:
        scorers.flow = load_flow(flow, flow_model, device)
    return scorers


def score_item(item: EvalItem, scorers: Scorers, temporal: str, source: np.ndarray | None, keep: np.ndarray | None) -> dict:
    """One clip's row: its metrics and their per-frame series."""
    from .flow import flow_epe, warp_error
    from .oracle import oracle_scores

    names = scorers.names
    row = {"path": str(item.path), "prompt": item.prompt, "frames": len(item.frames)}
    if item.cropped:
        row["cropped"] = item.cropped
    notes = list(item.notes)
    compared = [n for n in USES_SOURCE if n in names] if source is not None else []
    if compared:
        count = min(len(item.frames), len(source))
        row["source_frames"] = len(source)
        row["compared_frames"] = dict.fromkeys(compared, count)
        notes += comparison_notes(item.frames, source)
    row["notes"] = notes
    per_frame = {}
    if scorers.clip is not None:
        embeds = scorers.clip.image_embeds(item.frames)
        text = scorers.clip.text_embeds([item.prompt])[0]
        cosines = torch.nn.functional.cosine_similarity(embeds, text.reshape(1, -1), dim=-1)
        row["clip_text"] = cosines.mean().item()
        row["clip_text_logit"] = 100.0 * row["clip_text"]
        row["clip_temporal"] = clip_temporal_score(embeds, temporal)
        per_frame["clip_text"] = cosines.tolist()
    if scorers.pickscore is not None:
        embeds = scorers.pickscore.image_embeds(item.frames)
        scores = pickscore_per_frame(scorers.pickscore, embeds, scorers.pickscore.text_embeds([item.prompt])[0])
        row["pickscore"], per_frame["pickscore"] = scores.mean().item(), scores.tolist()
    if scorers.dino is not None:
        row["dino_temporal"] = clip_temporal_score(scorers.dino.embeds(item.frames), temporal)
    if "flow" in names:
        row["flow_epe"], per_frame["flow_epe"] = flow_epe(item.frames, source, scorers.flow)
    if "warp" in names:
        row["warp_error"], per_frame["warp_error"] = warp_error(item.frames, source, scorers.flow)
    if "psnr" in names:
        values = psnr_frames(item.frames, source)
        row["psnr"], per_frame["psnr"] = float(values.mean()), values.tolist()
        row["compared_frames"]["psnr"] = len(values)
        if keep is not None:
            outside = psnr_frames(item.frames, source, keep=~keep)
            row["bg_psnr"] = float(np.nanmean(outside)) if np.isfinite(outside).any() else None
    if "oracle" in names:
        row.update(oracle_scores(item.frames, item.prompt, source))
    row["per_frame"] = {k: per_frame[k] for k in PER_FRAME if k in per_frame}
    return row


def comparison_notes(frames: np.ndarray, source: np.ndarray) -> list[str]:
    """What differs between a clip and the source it is compared with: the frame counts (the first
    min(len) frames are compared) and the aspect (the source is resized to the clip's size)."""
    notes = []
    mine, theirs = len(frames), len(source)
    if mine > theirs:
        notes.append(f"compared {theirs} of {mine} frames: the source has {theirs}")
    elif theirs > mine:
        notes.append(f"compared {mine} frames with the first {mine} of the source's {theirs}")
    (height, width), (src_height, src_width) = frames.shape[1:3], source.shape[1:3]
    aspect, src_aspect = width / height, src_width / src_height
    if abs(aspect - src_aspect) > ASPECT_TOLERANCE * src_aspect:
        notes.append(f"aspect {aspect:.2f} ({width}x{height}) vs source {src_aspect:.2f} ({src_width}x{src_height}): "
                     f"source resized to {width}x{height}, stretched")
    return notes


def _mask(mask, source_frames: np.ndarray) -> np.ndarray:
    """The ``mask`` of the source clip: one image for all frames, or a folder of one image per source
    frame (the edits are compared with the source over their common frames)."""
    from ..video import read_mask_frames

    keep = read_mask_frames(mask, len(source_frames))
    if not keep.any():
        raise InputError(f"`mask` {mask} is black everywhere: white marks the edited region, so bg_psnr would be "
                         "the whole frame; pass a mask of the edited region")
    return keep


def _means(results: list[dict], keys: list[str]) -> dict:
    """Mean of each metric over the results that have it (None when none has)."""
    means = {}
    for key in keys:
        values = [r[key] for r in results if r.get(key) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from ..device import resolve_device

    return resolve_device(device)


# --------------------------------------------------------------------------- display

COLUMNS = {"clip_text": "CLIP-T", "clip_text_logit": "CLIP-T×100", "clip_temporal": "CLIP-F", "pickscore": "PickScore",
           "dino_temporal": "DINO", "flow_epe": "flow EPE", "warp_error": "warp err", "psnr": "PSNR", "bg_psnr": "bg PSNR",
           "oracle_colour": "colour", "oracle_shape": "shape", "oracle_background": "bg",
           "oracle_success": "success", "oracle_frames_right": "right", "oracle_background_kept": "bg kept",
           "oracle_centroid_error": "centroid px", "oracle_temporal_iou": "IoU"}


def results_table(result: dict):
    """A rich Table of :func:`evaluate`'s result: one row per clip (its file name; prompts are in the
    JSON and the report) and a mean row; the title names the backbones. With a source, "compared"
    is the frames the source metrics compared; each row's notes are the caption."""
    from rich.table import Table

    keys = [k for k in COLUMNS if k in result["mean"]]
    models = ", ".join(f"{k}: {v}" for k, v in (result.get("models") or {}).items() if v)
    rows = result["results"]
    with_compared = any(row.get("compared_frames") for row in rows)
    notes = [f"{_name(row['path'])}: {note}" for row in rows for note in row.get("notes") or []]
    table = Table(title=models or None, caption="\n".join(notes) or None, caption_justify="left")
    table.add_column("clip", no_wrap=True)
    for header in ("frames", *(["compared"] if with_compared else []), *(COLUMNS[k] for k in keys)):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        compared = [_compared(row)] if with_compared else []
        table.add_row(_name(row["path"]), str(row["frames"]), *compared, *(_fmt(row.get(k)) for k in keys))
    table.add_section()
    table.add_row("mean", "", *([""] if with_compared else []), *(_fmt(result["mean"][k]) for k in keys), style="bold")
    return table


def _compared(row: dict) -> str:
    """The frames the source metrics compared: one count, or one per metric where they differ."""
    counts = row.get("compared_frames") or {}
    if len(set(counts.values())) > 1:
        return ", ".join(f"{name} {count}" for name, count in counts.items())
    return str(next(iter(counts.values()))) if counts else "—"


def table_width(result: dict) -> int:
    """Columns the table needs unwrapped (a console narrower than this would fold every cell)."""
    names = max([len(_name(r["path"])) for r in result["results"]] + [4])
    compared = 11 if any(r.get("compared_frames") for r in result["results"]) else 0
    return names + 10 + compared + sum(max(len(COLUMNS[k]), 8) + 3 for k in COLUMNS if k in result["mean"])


def _name(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    return name if len(name) <= 48 else name[:45] + "…"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
