"""Writing: H.264 mp4, GIF, a folder of PNGs, and a side-by-side grid of several clips.

Every write is atomic: the output appears whole or not at all (see :mod:`contextedit.fileio`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OutputExistsError, RunFailure, UsageError
from ..fileio import atomic_folder, atomic_path, write_json
from .read import FOLDER_META, _reason

MP4_CRF = "12"  # visually lossless enough that write→read round trips stay close


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float, fmt: str | None = None, *,
                exclusive: bool = False) -> Path:
    """Write (F, H, W, 3) uint8 frames atomically as ``mp4``, ``gif`` or a ``frames`` folder.

    ``fmt`` defaults from the suffix: ``.mp4``, ``.gif``, or no suffix for a folder of PNGs.
    ``exclusive``: never replace ``path``; OutputExistsError if it exists, or appears while writing.
    """
    path = Path(path)
    fmt = fmt or {".mp4": "mp4", ".gif": "gif", "": "frames"}.get(path.suffix.lower())
    writers = {"mp4": _write_mp4, "gif": _write_gif, "frames": _write_folder}
    if fmt not in writers:
        raise UsageError(f"cannot write {path}: use a .mp4 or .gif name, or a name without suffix for a frame folder")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (F, H, W, 3) uint8 array, got {frames.dtype} {frames.shape}")
    if not fps > 0:
        raise UsageError(f"fps must be positive, got {fps}")
    if exclusive and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path} already exists; pass `overwrite` to replace it or choose another `out`")
    writers[fmt](frames, path, float(fps), exclusive)
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: float, exclusive: bool = False) -> None:
    height, width = frames.shape[1:3]
    if width % 2 or height % 2:
        raise UsageError(f"H.264 (yuv420p) needs even sizes, got {width}x{height}; use a size that is a multiple of 8")
    params = ["-crf", MP4_CRF, "-preset", "medium", "-movflags", "+faststart"]
    with atomic_path(path, suffix=".tmp.mp4", exclusive=exclusive) as tmp:  # ffmpeg picks the container from the suffix
        _ffmpeg_write(frames, tmp, fps, codec="libx264", pix_fmt_out="yuv420p", output_params=params)


def _write_gif(frames: np.ndarray, path: Path, fps: float, exclusive: bool = False) -> None:
    # one palette for the whole clip, and ffmpeg (unlike Pillow) keeps repeated frames
    palette = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse"
    params = ["-filter_complex", palette, "-loop", "0"]
    with atomic_path(path, suffix=".tmp.gif", exclusive=exclusive) as tmp:
        _ffmpeg_write(frames, tmp, fps, codec="gif", pix_fmt_out="pal8", output_params=params)


def _ffmpeg_write(frames: np.ndarray, path: Path, fps: float, **options) -> None:
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, macro_block_size=1, quality=None, ffmpeg_log_level="error", **options
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    except (OSError, RuntimeError) as exc:
        raise RunFailure(f"ffmpeg could not write {path.name} ({_reason(str(exc))}); check disk space") from exc


def _write_folder(frames: np.ndarray, path: Path, fps: float, exclusive: bool = False) -> None:
    # an existing folder is replaced only if it is a frame folder this module wrote, so a mistyped
    # output path never deletes someone's files
    if path.exists() and not _is_frame_folder(path):
        raise OutputExistsError(f"{path} exists and is not a frame folder written by contextedit; choose another `out`")
    with atomic_folder(path, exclusive=exclusive) as tmp:
        digits = max(4, len(str(len(frames) - 1)))
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"frame_{index:0{digits}d}.png")
        write_json(tmp / FOLDER_META, {"fps": fps, "frames": len(frames)})


def _is_frame_folder(path: Path) -> bool:
    """An empty folder, or one holding only what :func:`_write_folder` writes."""
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    ours = (path / FOLDER_META).is_file() and all(p.name == FOLDER_META or p.suffix == ".png" for p in entries)
    return ours or not entries


def side_by_side(*clips: np.ndarray) -> np.ndarray:
    """Place clips left to right (e.g. source | edit); all need the same frame count and height."""
    if not clips:
        raise ValueError("side_by_side needs at least one clip")
    shapes = {(len(c), c.shape[1]) for c in clips}
    if len(shapes) != 1:
        raise UsageError(f"side-by-side clips need one frame count and height; got (frames, height) {sorted(shapes)}")
    return np.concatenate(clips, axis=2)
