"""``contextedit eval``: score clips with the registered metrics (:mod:`.registry`: CLIP, PickScore,
DINO, optical flow, warp error, PSNR and the shapes oracle, each one :class:`~.metric.Metric` record).

:func:`evaluate` returns a plain dict (written as JSON by the CLI): the backbones and the scale of
every figure (``models``, ``scales``), one row per clip with its per-frame series (``per_frame``),
and the means. :func:`results_table` renders it. Which published tables each figure matches is in
its metric's ``scales`` and the docs (evaluation). Nothing here names a metric: everything is read
from the records, in the registry's order.

A clip compared with a source of another length or shape is compared over the first min(len)
frames, the source resized to the clip's size: each row says how many frames each source metric
compared (``compared_frames``, with ``source_frames``), and its ``notes`` say when the lengths or
the aspects differ (and when only the edit half of a side-by-side output was scored, ``cropped``).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..errors import InputError, UsageError
from ..progress import ProgressFactory, progress_bar
from .clip import DEFAULT_CLIP_MODEL, TEMPORAL_MODES, ClipScorer
from .collect import EvalItem, collect_items, load_frames
from .dino import DEFAULT_DINO_MODEL
from .metric import ROW_INFO  # noqa: F401  (re-exported: the row fields that are no metric)
from .metric import Context, Metric, model_id
from .pickscore import DEFAULT_PICKSCORE_MODEL
from .registry import METRICS

ASPECT_TOLERANCE = 0.01  # relative: rounding a size to a multiple of 8 is no change of aspect


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    """``"clip,psnr"`` → ``["clip", "psnr"]``; an unknown name is a UsageError listing the known ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        what = f"unknown metric {', '.join(unknown)}" if unknown else "no metric given"
        raise UsageError(f"{what}; `metrics` takes a comma list of: {', '.join(METRICS)}")
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
    options: Mapping[str, Any] | None = None,
) -> dict:
    """Score every clip in ``paths`` (or the already read ``items``) with ``metrics``.

    ``flow``, ``warp`` and ``psnr`` compare each clip with ``source`` (or ``source_frames``);
    ``bg_psnr`` needs ``mask`` too. A preloaded ``scorer`` replaces ``clip_model``. ``options``
    reach every metric's ``load`` and ``score`` (``Context.options``) beside the named ones. Returns
    ``{"metrics", "models", "scales", "temporal", "source", "mask", "results", "mean"}``.
    """
    names = parse_metrics(metrics)
    chosen = [METRICS[n] for n in names]
    if temporal not in TEMPORAL_MODES:
        raise UsageError(f"`temporal` {temporal!r} is not one of {', '.join(TEMPORAL_MODES)}")
    has_source = source is not None or source_frames is not None
    needing = [m.name for m in chosen if m.needs_source]
    if needing and not has_source:
        raise UsageError(f"`metrics` {', '.join(needing)} compare with the source clip; pass `source` VIDEO")
    if mask is not None and not any(m.mask_keys for m in chosen):
        masked = [m for m in METRICS.values() if m.mask_keys]
        raise UsageError(f"`mask` serves {', '.join(k for m in masked for k in m.mask_keys)}; add "
                         f"{' or '.join(m.name for m in masked)} to `metrics` and pass `source`")
    items = items if items is not None else collect_items(paths, prompt)
    if any(m.needs_prompt for m in chosen):
        for item in items:
            if not item.prompt:
                raise UsageError(f"no prompt for {item.path}: pass `prompt` or point at an edit/generate output folder")
    for metric in chosen:
        if metric.check_items is not None:
            metric.check_items(items)
    if source_frames is None and source is not None:
        source_frames = load_frames(source)
    keep = _mask(mask, source_frames) if mask is not None else None
    options = {**(options or {}), "clip_model": clip_model, "pickscore_model": pickscore_model, "dino_model": dino_model,
               "flow": flow, "flow_model": flow_model}
    check_options(options)
    ctx = Context(device=_device(device), temporal=temporal, source=source_frames, mask=keep, options=options)
    backbones = load_backbones(names, ctx, preloaded={"clip": scorer} if scorer is not None else None)

    results = []
    with (progress or partial(progress_bar, enabled=False))("evaluating", len(items)) as advance:
        for item in items:
            results.append(score_item(item, names, backbones, ctx))
            advance()
    keys = [key for m in chosen for key in m.keys if key not in m.mask_keys or mask is not None]
    scales = {key: scale for m in chosen for key, scale in m.scales.items()}
    models = {name: model_id(backbones.get(name)) for name in _backbone_names(METRICS.values())}
    return {
        "metrics": names, "models": models,
        "scales": {k: scales[k].format(temporal=temporal) for k in keys}, "temporal": temporal,
        "source": str(source) if source is not None else None, "mask": str(mask) if mask is not None else None,
        "results": results, "mean": _means(results, keys),
    }


def check_options(options: Mapping[str, Any]) -> None:
    """Each registered metric's ``check_options``, chosen or not, once each: a bad option is refused
    before any backbone loads."""
    seen = []
    for metric in METRICS.values():
        if metric.check_options is not None and metric.check_options not in seen:
            seen.append(metric.check_options)
            metric.check_options(options)


def load_backbones(names: Iterable[str], ctx: Context, preloaded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load each backbone the metrics ``names`` need (and only those, each once) on ``ctx.device``;
    ``preloaded`` backbones (by name) are taken as they are. Returns {backbone name: backbone}."""
    backbones: dict[str, Any] = {}
    chosen = set(names)
    for metric in METRICS.values():
        name = metric.backbone_name
        if metric.name in chosen and name is not None and name not in backbones:
            given = (preloaded or {}).get(name)
            backbones[name] = given if given is not None else metric.load(ctx)
    return backbones


def score_item(item: EvalItem, names: Iterable[str], backbones: Mapping[str, Any], ctx: Context) -> dict:
    """One clip's row: the metrics ``names`` (in the registry's order) and their per-frame series."""
    names = set(names)
    chosen = [m for m in METRICS.values() if m.name in names]
    source = ctx.source
    row = {"path": str(item.path), "prompt": item.prompt, "frames": len(item.frames)}
    if item.cropped:
        row["cropped"] = item.cropped
    notes = list(item.notes)
    compared = [m.name for m in chosen if m.uses_source] if source is not None else []
    if compared:
        row["source_frames"] = len(source)
        row["compared_frames"] = dict.fromkeys(compared, min(len(item.frames), len(source)))
        notes += comparison_notes(item.frames, source)
    row["notes"] = notes
    per_frame = {}
    for metric in chosen:
        values = dict(metric.score(item, backbones.get(metric.backbone_name), ctx))
        per_frame.update(values.pop("per_frame", None) or {})
        stray = [k for k in values if k not in metric.keys]
        if stray:
            raise ValueError(f"metric {metric.name} scored {', '.join(stray)}, not among its keys")
        row.update(values)
    row["per_frame"] = {k: per_frame[k] for m in chosen for k in m.per_frame if k in per_frame}
    return row


def _backbone_names(metrics: Iterable[Metric]) -> list[str]:
    """The backbones of ``metrics`` by name, each once, in order."""
    return list(dict.fromkeys(m.backbone_name for m in metrics if m.backbone_name is not None))


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

def columns() -> dict[str, str]:
    """Every registered key and its table title (the key itself where its metric names none), in the registry's order."""
    return {key: metric.columns.get(key, key) for metric in METRICS.values() for key in metric.keys}


def results_table(result: dict):
    """A rich Table of :func:`evaluate`'s result: one row per clip (its file name; prompts are in the
    JSON and the report) and a mean row; the title names the backbones. With a source, "compared"
    is the frames the source metrics compared; each row's notes are the caption."""
    from rich.table import Table

    titles = columns()
    keys = [k for k in titles if k in result["mean"]]
    models = ", ".join(f"{k}: {v}" for k, v in (result.get("models") or {}).items() if v)
    rows = result["results"]
    with_compared = any(row.get("compared_frames") for row in rows)
    notes = [f"{_name(row['path'])}: {note}" for row in rows for note in row.get("notes") or []]
    table = Table(title=models or None, caption="\n".join(notes) or None, caption_justify="left")
    table.add_column("clip", no_wrap=True)
    for header in ("frames", *(["compared"] if with_compared else []), *(titles[k] for k in keys)):
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
    return names + 10 + compared + sum(max(len(title), 8) + 3 for k, title in columns().items() if k in result["mean"])


def _name(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    return name if len(name) <= 48 else name[:45] + "…"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
