"""What ``contextedit eval`` scores: PATHs expanded into clips with their prompts.

A path may be a video (or GIF), a frame folder, an image, a folder of images or videos, or the
output folder of ``edit`` (``edits.json``) or ``generate`` (``generate.json``), whose manifests
give each file's prompt.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError, UsageError
from ..fileio import inside, read_json
from ..video import IMAGE_SUFFIXES, natural_key, read_image

VIDEO_SUFFIXES = {".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv", ".m4v"}
# Run-folder manifests: file name -> the key of their list of {"prompt", "file"} entries.
MANIFESTS = {"edits.json": "outputs", "generate.json": "images"}


@dataclass
class EvalItem:
    """One thing to score: a clip (or a single image as a one-frame clip) and its prompt."""

    path: Path
    prompt: str | None
    frames: np.ndarray  # (F, H, W, 3) uint8


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
