"""``contextedit eval``: score videos, frame folders, images and run folders with CLIP and PSNR.

A path may be a video (or GIF), a frame folder, an image, a folder of images or videos, or the
output folder of ``edit`` (``edits.json``) or ``generate`` (``generate.json``), whose manifests
give each file's prompt. :func:`evaluate` returns a plain dict (written as JSON by the CLI) and
:func:`results_table` renders it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import InputError, UsageError
from ..fileio import inside, read_json
from ..progress import ProgressFactory, progress_bar
from ..video import IMAGE_SUFFIXES, natural_key, read_image
from .clip import DEFAULT_CLIP_MODEL, TEMPORAL_MODES, ClipScorer, clip_temporal_score, clip_text_score, load_clip
from .psnr import psnr

KNOWN_METRICS = ("clip", "psnr")
VIDEO_SUFFIXES = {".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv", ".m4v"}
# Run-folder manifests: file name -> the key of their list of {"prompt", "file"} entries.
MANIFESTS = {"edits.json": "outputs", "generate.json": "images"}


@dataclass
class EvalItem:
    """One thing to score: a clip (or a single image as a one-frame clip) and its prompt."""

    path: Path
    prompt: str | None
    frames: np.ndarray  # (F, H, W, 3) uint8


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    """``"clip,psnr"`` → ``["clip", "psnr"]``; an unknown name is a UsageError listing the known ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in names if n not in KNOWN_METRICS]
    if unknown or not names:
        what = f"unknown metric {', '.join(unknown)}" if unknown else "no metric given"
        raise UsageError(f"{what}; `metrics` takes a comma list of: {', '.join(KNOWN_METRICS)}")
    return names


# --------------------------------------------------------------------------- reading


def _media_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES), key=natural_key)


def _is_frame_sequence(files: list[Path]) -> bool:
    """Numbered png/jpg images of one pattern (``00000.png``, ``frame_0001.jpg`` …) are one clip's frames."""
    if not files or any(p.suffix.lower() not in IMAGE_SUFFIXES for p in files):
        return False
    patterns = {re.sub(r"\d+", "#", p.stem) for p in files}
    return len(patterns) == 1 and "#" in next(iter(patterns))


def load_frames(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video, a GIF, a frame folder or an image, as uint8 (F, H, W, 3)."""
    from ..video import count_frames, read_video

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} not found; check the path")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path)[None]
    total = count_frames(path)
    if total == 0:
        raise InputError(f"{path} holds no frames; pass a video, a frame folder or an image")
    return read_video(path, frames=total, stride=1, start=0).frames


def _manifest_items(folder: Path, manifest: str, prompt: str | None) -> list[tuple[Path, str | None]]:
    """(file, prompt) pairs from an edit/generate manifest; ``prompt``, when given, overrides it."""
    data = read_json(folder / manifest, what=f"{manifest} manifest")
    key = MANIFESTS[manifest]
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{folder / manifest} has no {key!r} list; it is not an edit/generate manifest — regenerate it")
    pairs = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise InputError(f"{folder / manifest}: every {key!r} entry needs a 'file'; the manifest is malformed — regenerate it")
        pairs.append((inside(folder, entry["file"]), prompt or entry.get("prompt")))
    return pairs


def _path_items(path: Path, prompt: str | None) -> list[tuple[Path, str | None]]:
    """What one command-line PATH expands to: (file or frame folder, prompt) pairs."""
    if not path.exists():
        raise InputError(f"{path} not found; check the path")
    if not path.is_dir():
        return [(path, prompt)]
    for manifest in MANIFESTS:
        if (path / manifest).is_file():
            return _manifest_items(path, manifest, prompt)
    files = _media_files(path)
    if not files:
        raise InputError(f"{path} holds no videos or images; pass a video, an image, or a folder of them")
    if _is_frame_sequence(files):
        return [(path, prompt)]
    return [(f, prompt) for f in files]


def collect_items(paths: Iterable[str | os.PathLike], prompt: str | None = None) -> list[EvalItem]:
    """Expand PATHs into clips with their prompts and read their frames."""
    pairs = [pair for p in paths for pair in _path_items(Path(p), prompt)]
    if not pairs:
        raise UsageError("no PATH given; pass at least one video, image or output folder")
    return [EvalItem(path=p, prompt=text, frames=load_frames(p)) for p, text in pairs]


# --------------------------------------------------------------------------- scoring


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
) -> dict:
    """Score every clip in ``paths``; returns ``{"clip_model", "results": [...], "mean": {...}}``.

    ``clip`` adds ``clip_text`` and ``clip_temporal`` to each result (``clip_temporal`` is None for a
    single image); ``psnr`` compares each clip with ``source`` frame by frame. A preloaded
    ``scorer`` replaces ``clip_model``.
    """
    names = parse_metrics(metrics)
    if temporal not in TEMPORAL_MODES:
        raise UsageError(f"`temporal` {temporal!r} is not one of {', '.join(TEMPORAL_MODES)}")
    if "psnr" in names and source is None:
        raise UsageError("`metrics` psnr compares with the source clip; pass `source` VIDEO")
    items = collect_items(paths, prompt)
    if "clip" in names:
        for item in items:
            if not item.prompt:
                raise UsageError(f"no prompt for {item.path}: pass `prompt` or point at an edit/generate output folder")
        scorer = scorer or load_clip(clip_model, _device(device))
    reference = load_frames(source) if "psnr" in names else None

    results = []
    with (progress or partial(progress_bar, enabled=False))("evaluating", len(items)) as advance:
        for item in items:
            results.append(_score_item(item, scorer if "clip" in names else None, temporal, reference))
            advance()
    return {
        "clip_model": scorer.model_id if "clip" in names else None,
        "results": results,
        "mean": _means(results, _metric_keys(names)),
    }


def _score_item(item: EvalItem, scorer: ClipScorer | None, temporal: str, reference: np.ndarray | None) -> dict:
    row = {"path": str(item.path), "prompt": item.prompt, "frames": len(item.frames)}
    if scorer is not None:
        image_embeds = scorer.image_embeds(item.frames)
        row["clip_text"] = clip_text_score(image_embeds, scorer.text_embeds([item.prompt])[0])
        row["clip_temporal"] = clip_temporal_score(image_embeds, temporal)
    if reference is not None:
        row["psnr"] = psnr(item.frames, reference)
    return row


def _metric_keys(names: list[str]) -> list[str]:
    return [key for name in names for key in ({"clip": ["clip_text", "clip_temporal"], "psnr": ["psnr"]}[name])]


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

COLUMNS = {"clip_text": "CLIP-text", "clip_temporal": "CLIP-temp", "psnr": "PSNR (dB)"}


def results_table(result: dict):
    """A rich Table of :func:`evaluate`'s result: one row per clip and a mean row."""
    from rich.table import Table

    keys = [k for k in COLUMNS if k in result["mean"]]
    title = f"CLIP model: {result['clip_model']}" if result.get("clip_model") else None
    table = Table(title=title)
    for header in ("path", "prompt", "frames", *(COLUMNS[k] for k in keys)):
        table.add_column(header, justify="right" if header not in ("path", "prompt") else "left")
    for row in result["results"]:
        table.add_row(row["path"], row.get("prompt") or "", str(row["frames"]), *(_fmt(row.get(k)) for k in keys))
    table.add_section()
    table.add_row("mean", "", "", *(_fmt(result["mean"][k]) for k in keys), style="bold")
    return table


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
