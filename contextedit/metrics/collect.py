"""What ``contextedit eval`` scores: PATHs expanded into clips with their prompts.

A path may be a video (or GIF), a frame folder, an image, a folder of images or videos, or the
output folder of ``edit`` (``edits.json``) or ``generate`` (``generate.json``), whose manifests
give each file's prompt.

An ``edit --side-by-side`` output is source | edit (:func:`contextedit.video.side_by_side`: two
panels of the edit's size, no gap); ``edits.json`` says so (``settings.side_by_side``) and records
the edit's width and height, and only the edit half is scored (the item's ``cropped`` says so).
A side-by-side file whose size does not match the record is refused rather than scored whole.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
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
    cropped: str | None = None  # what part of the file ``frames`` is, when not all of it
    notes: list[str] = field(default_factory=list)  # what a reader of the scores must know


CROPPED_SIDE_BY_SIDE = "edit half of side-by-side"
NO_SIDE_BY_SIDE = "re-run `contextedit edit` without --side-by-side and evaluate that output"


@dataclass(frozen=True)
class SideBySide:
    """An ``edit --side-by-side`` output: source | edit, each panel ``width`` x ``height`` (the
    edit's size as ``manifest`` records it; None when it records no valid size)."""

    manifest: Path
    width: int | None
    height: int | None

    def edit_half(self, frames: np.ndarray, path: Path) -> np.ndarray:
        """The edit panel (the right one) of each frame; InputError when the layout does not fit."""
        what = f"{path} is a side-by-side output (source | edit, {self.manifest.name} says side_by_side)"
        if self.width is None or self.height is None:
            raise InputError(f"{what} but {self.manifest} records no valid width and height of the edit, so its edit "
                             f"half cannot be found; {NO_SIDE_BY_SIDE}")
        height, width = frames.shape[1:3]
        if (height, width) != (self.height, 2 * self.width):
            raise InputError(f"{what} but its frames are {width}x{height}, not source | edit of the {self.width}x"
                             f"{self.height} edit {self.manifest.name} records ({2 * self.width}x{self.height}), so its "
                             f"edit half cannot be found; {NO_SIDE_BY_SIDE}")
        return frames[:, :, self.width:]


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


ItemSpec = tuple[Path, "str | None", "SideBySide | None"]  # (file or frame folder, prompt, side-by-side layout)


def _size(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _side_by_side(data: dict, entry: dict, manifest: Path) -> SideBySide | None:
    """The layout of an ``edits.json`` output written with ``--side-by-side`` (the entry's own flag
    first, else the record's settings); None for a plain output."""
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    flag = entry.get("side_by_side", settings.get("side_by_side"))
    if flag is not True:
        return None
    return SideBySide(manifest, _size(data.get("width")), _size(data.get("height")))


def _manifest_items(folder: Path, manifest: str, prompt: str | None) -> list[ItemSpec]:
    """(file, prompt, layout) triples from an edit/generate manifest; ``prompt``, when given, overrides it."""
    data = read_json(folder / manifest, what=f"{manifest} manifest")
    key = MANIFESTS[manifest]
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{folder / manifest} has no {key!r} list; it is not an edit/generate manifest — regenerate it")
    pairs = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise InputError(f"{folder / manifest}: every {key!r} entry needs a 'file'; the manifest is malformed — regenerate it")
        layout = _side_by_side(data, entry, folder / manifest) if manifest == "edits.json" else None
        pairs.append((inside(folder, entry["file"]), prompt or entry.get("prompt"), layout))
    return pairs


def _record_entry(path: Path, prompt: str | None) -> ItemSpec:
    """A file (or frame folder) given directly: its prompt (``prompt``, else the record's) and
    side-by-side layout from the ``edits.json`` beside it, when that lists it and can be read."""
    record = path.parent / "edits.json"
    if not record.is_file():
        return path, prompt, None
    try:
        data = read_json(record, what="edits.json manifest")
        entries = data.get("outputs") if isinstance(data, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("file"), str) \
                    and inside(path.parent, entry["file"]) == path.resolve():
                return path, prompt or entry.get("prompt"), _side_by_side(data, entry, record)
    except ValueError:  # a record that cannot be read describes nothing (as before it was read at all)
        pass
    return path, prompt, None


def _path_items(path: Path, prompt: str | None) -> list[ItemSpec]:
    """What one command-line PATH expands to: (file or frame folder, prompt, layout) triples."""
    if not path.exists():
        raise InputError(f"{path} not found; check the path")
    if not path.is_dir():
        return [_record_entry(path, prompt)]
    for manifest in MANIFESTS:
        if (path / manifest).is_file():
            return _manifest_items(path, manifest, prompt)
    files = _media_files(path)
    if not files:
        raise InputError(f"{path} holds no videos or images; pass a video, an image, or a folder of them")
    if _is_frame_sequence(files):
        return [_record_entry(path, prompt)]
    return [(f, prompt, None) for f in files]


def _item(path: Path, prompt: str | None, layout: SideBySide | None) -> EvalItem:
    frames = load_frames(path)
    if layout is None:
        return EvalItem(path=path, prompt=prompt, frames=frames)
    width = frames.shape[2]
    half = layout.edit_half(frames, path)
    note = (f"scored the edit half of a side-by-side output: the right {half.shape[2]} of {width} px "
            f"(source | edit, per {layout.manifest.name})")
    return EvalItem(path=path, prompt=prompt, frames=half, cropped=CROPPED_SIDE_BY_SIDE, notes=[note])


def collect_items(paths: Iterable[str | os.PathLike], prompt: str | None = None) -> list[EvalItem]:
    """Expand PATHs into clips with their prompts and read their frames (of a side-by-side edit
    output, the edit half)."""
    triples = [triple for p in paths for triple in _path_items(Path(p), prompt)]
    if not triples:
        raise UsageError("no PATH given; pass at least one video, image or output folder")
    return [_item(*triple) for triple in triples]
