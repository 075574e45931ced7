"""Video I/O: read a clip, pick frames, resize/crop to the model's size, write results.

Sources: any container ffmpeg reads (mp4, mov, webm, avi, …), GIFs, and folders of png/jpg
frames (natural order: ``frame2`` before ``frame10``). Containers are decoded with decord when it
is installed and works, else with the ffmpeg binary of ``imageio-ffmpeg``; both give the same
RGB frames and raise the same error classes. Outputs: H.264 mp4, GIF, a folder of PNGs, and a
side-by-side grid of several clips. Every write is atomic.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from .errors import InputError, OutputExistsError, RunFailure, UsageError
from .fileio import atomic_path, ensure_writable_dir, move_new, read_json, write_json

FRAME_SUFFIXES = {".png", ".jpg", ".jpeg"}
FOLDER_META = "clip.json"  # a frame folder's fps lives here; PNGs cannot carry it
DEFAULT_FPS = 8.0  # a frame folder without clip.json, a GIF without delays
MAX_SIDE = 4096  # larger sizes are typos that would allocate gigabytes
MP4_CRF = "12"  # visually lossless enough that write→read round trips stay close
BACKENDS = ("auto", "decord", "imageio")


class VideoInfo(NamedTuple):
    """What a source holds before any selection."""

    frames: int
    fps: float
    width: int
    height: int


@dataclass
class Clip:
    """Selected frames of one source."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: float
    path: str
    total_frames: int  # frames in the source before selection
    indices: list[int] = field(default_factory=list)  # source index of each selected frame

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])


# A decoder takes the path and a chooser (VideoInfo -> frame indices) and returns the info and
# the chosen frames; choosing inside the decoder lets it stop reading after the last index.
Chooser = Callable[[VideoInfo], list[int]]
Decoder = Callable[[Path, Chooser], tuple[VideoInfo, np.ndarray]]


class _DecodeFailed(Exception):
    """A decoder could not read the file; the next decoder may still succeed."""


# ----------------------------------------------------------------------------------------------
# Selection and sizes
# ----------------------------------------------------------------------------------------------


def select_indices(total: int, frames: int = 8, stride: int = 2, start: int = 0, source: str = "the clip") -> list[int]:
    """Indices ``start, start+stride, …`` (``frames`` of them) of a source with ``total`` frames."""
    for name, value, least in (("frames", frames, 1), ("stride", stride, 1), ("start", start, 0)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise UsageError(f"--{name} must be an integer >= {least}, got {value!r}")
    needed = start + (frames - 1) * stride + 1
    if total < 1:
        raise InputError(f"{source} has no frames; re-export it")
    if total < needed:
        raise InputError(
            f"{source} has {total} frame{'s' if total != 1 else ''} but --frames {frames} --stride {stride} --start {start} "
            f"needs {needed}; try {_fitting_options(total, frames, stride, start)}"
        )
    return [start + i * stride for i in range(frames)]


def _fitting_options(total: int, frames: int, stride: int, start: int) -> str:
    """Suggest option changes, one at a time, that make the selection fit ``total`` frames."""
    span = (frames - 1) * stride + 1
    options = []
    if start > 0 and span <= total:
        options.append(f"--start {total - span}")
    if total > start:
        options.append(f"--frames {(total - 1 - start) // stride + 1}")
        if frames > 1 and (total - 1 - start) // (frames - 1) >= 1 and stride > 1:
            options.append(f"--stride {(total - 1 - start) // (frames - 1)}")
    else:
        options.append(f"--start 0 --frames {(total - 1) // stride + 1}")
    return " or ".join(options)


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → ``(w, h)``; both sides multiples of 8, from 8 to 4096 (so at most 4096² px)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not match:
        raise UsageError(f"invalid size {text!r}; write WIDTHxHEIGHT, e.g. --size 512x320")
    return check_size(int(match[1]), int(match[2]))


def check_size(width: int, height: int) -> tuple[int, int]:
    """Refuse sizes the model cannot use before anything is allocated."""
    for side in (width, height):
        if side < 8 or side > MAX_SIDE:
            raise UsageError(f"size {width}x{height} is out of range; each side must be 8..{MAX_SIDE} pixels")
        if side % 8:
            raise UsageError(
                f"size {width}x{height} is not a multiple of 8 (the VAE downsamples by 8); "
                f"try --size {_round8(width)}x{_round8(height)}"
            )
    return width, height


def _round8(value: float) -> int:
    return max(8, int(value / 8 + 0.5) * 8)  # half up: 500 → 504


def default_size(src_w: int, src_h: int, native: int) -> tuple[int, int]:
    """Keep the source aspect with the short side at ``native``; both sides multiples of 8."""
    short, long = sorted((src_w, src_h))
    long_side = _round8(native * long / short)
    size = (long_side, _round8(native)) if src_w >= src_h else (_round8(native), long_side)
    try:
        return check_size(*size)
    except UsageError as exc:
        raise UsageError(f"the source is {src_w}x{src_h}: {exc}; pass a smaller --size") from exc


def resize_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale each frame to cover ``width``x``height`` (Lanczos), then crop the centre."""
    src_h, src_w = frames.shape[1:3]
    if (src_w, src_h) == (width, height):
        return frames
    scale = max(width / src_w, height / src_h)
    cover = (max(width, round(src_w * scale)), max(height, round(src_h * scale)))
    left, top = (cover[0] - width) // 2, (cover[1] - height) // 2
    box = (left, top, left + width, top + height)
    return np.stack([np.asarray(Image.fromarray(f).resize(cover, Image.LANCZOS).crop(box)) for f in frames])


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 → (F, 3, H, W) float32 in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_frames(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`; values outside [-1, 1] are clamped."""
    x = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def read_video(
    path: str | os.PathLike, frames: int = 8, stride: int = 2, start: int = 0, backend: str = "auto"
) -> Clip:
    """Read ``frames`` frames, every ``stride``-th from index ``start``, at the source size.

    ``backend`` picks the container decoder ("auto": decord, falling back to ffmpeg); GIFs and
    frame folders are always read with Pillow.
    """
    path = Path(path)
    select_indices(10**9, frames, stride, start)  # option errors first, before any decoding

    def choose(info: VideoInfo) -> list[int]:
        return select_indices(info.frames, frames, stride, start, source=str(path))

    info, pixels = _decode(path, choose, backend)
    return Clip(pixels, info.fps, str(path), info.frames, choose(info))


def load_clip(
    path: str | os.PathLike,
    frames: int = 8,
    stride: int = 2,
    start: int = 0,
    size: tuple[int, int] | None = None,
    native: int = 512,
    backend: str = "auto",
) -> Clip:
    """:func:`read_video`, then resize/crop to ``size`` (default: :func:`default_size`)."""
    if size is not None:
        check_size(*size)
    clip = read_video(path, frames, stride, start, backend)
    width, height = size or default_size(clip.width, clip.height, native)
    clip.frames = resize_crop(clip.frames, width, height)
    return clip


def probe(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """Frame count, fps and size of a source, without keeping any frames."""
    return _decode(Path(path), lambda info: [], backend)[0]


def count_frames(path: str | os.PathLike, backend: str = "auto") -> int:
    return probe(path, backend).frames


def _decode(path: Path, choose: Chooser, backend: str) -> tuple[VideoInfo, np.ndarray]:
    """Pick the decoder for ``path`` and run it; a failing decoder hands over to the next."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown video backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise InputError(f"video not found: {path}")
    if path.is_dir():
        return _read_folder(path, choose)
    if path.stat().st_size == 0:
        # decord may crash the process on empty files, so no decoder sees them
        raise InputError(f"cannot decode {path} as a video (the file is empty); re-export or re-copy it")
    decoders: list[Decoder]
    if path.suffix.lower() == ".gif":
        decoders = [_read_gif]
    else:
        decoders = {"auto": [_read_decord, _read_ffmpeg], "decord": [_read_decord], "imageio": [_read_ffmpeg]}[backend]
    reasons = []
    for decoder in decoders:
        try:
            return decoder(path, choose)
        except _DecodeFailed as exc:
            reasons.append(str(exc))
    raise InputError(
        f"cannot decode {path} as a video ({'; '.join(reasons)}); "
        "check that it is a complete mp4/mov/webm/avi/gif file, or re-export it"
    )


def _read_decord(path: Path, choose: Chooser) -> tuple[VideoInfo, np.ndarray]:
    try:
        import decord
    except ImportError as exc:
        raise _DecodeFailed("decord is not installed") from exc
    decord.logging.set_level(decord.logging.QUIET)
    try:
        with _quiet_stderr():
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
            if len(reader) == 0:
                raise _DecodeFailed("decord: no video frames")
            first = reader[0].asnumpy()  # decord does not report the size without decoding
            info = VideoInfo(len(reader), float(reader.get_avg_fps()), first.shape[1], first.shape[0])
            indices = choose(info)
            pixels = reader.get_batch(indices).asnumpy() if indices else _empty(first)
    except (RuntimeError, decord.DECORDError, IndexError) as exc:
        raise _DecodeFailed(f"decord: {_reason(str(exc))}") from exc
    return info, pixels


def _read_ffmpeg(path: Path, choose: Chooser) -> tuple[VideoInfo, np.ndarray]:
    import imageio_ffmpeg

    try:
        count = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
        stream = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(stream)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise _DecodeFailed(f"ffmpeg: {_reason(str(exc))}") from exc
    width, height = meta["size"]
    info = VideoInfo(count, float(meta["fps"]), width, height)
    try:
        wanted = _choose_decodable(choose, info, float(meta.get("duration") or 0))
        # stream in order and stop after the last wanted frame: memory holds only the selection
        kept = []
        for index, raw in zip(range(max(wanted, default=-1) + 1), stream):
            if index in wanted:
                kept.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
    except (OSError, RuntimeError) as exc:
        raise _DecodeFailed(f"ffmpeg: {_reason(str(exc))}") from exc
    finally:
        stream.close()
    if len(kept) < len(wanted):
        raise _DecodeFailed(f"ffmpeg: only {len(kept)} of the {count} frames decode; the file is truncated")
    return info, np.stack(kept) if kept else np.zeros((0, height, width, 3), np.uint8)


def _choose_decodable(choose: Chooser, info: VideoInfo, duration: float) -> set[int]:
    """``choose``, but a clip that is short because only part of it decodes is called truncated."""
    try:
        return set(choose(info))
    except InputError as exc:
        listed = round(duration * info.fps)
        if listed > info.frames:
            raise _DecodeFailed(
                f"ffmpeg: only {info.frames} of the {listed} frames its header lists decode; the file is truncated"
            ) from exc
        raise


def _read_gif(path: Path, choose: Chooser) -> tuple[VideoInfo, np.ndarray]:
    try:
        with Image.open(path) as image:
            info = VideoInfo(image.n_frames, DEFAULT_FPS, image.width, image.height)
            wanted = set(choose(info))  # before decoding, so a too-short GIF fails fast
            kept, delays = [], []
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                delays.append(frame.info.get("duration") or 0)
                if index in wanted:
                    kept.append(np.asarray(frame.convert("RGB")))
    except (UnidentifiedImageError, OSError, EOFError, ValueError) as exc:
        raise _DecodeFailed(f"GIF: {exc}") from exc
    # GIF delays are in 1/100 s, so 8 fps is written as 130/120 ms alternately: use the mean
    fps = 1000.0 / np.mean(delays) if all(delays) else DEFAULT_FPS
    pixels = np.stack(kept) if kept else np.zeros((0, info.height, info.width, 3), np.uint8)
    return info._replace(fps=round(float(fps), 3)), pixels


def _read_folder(folder: Path, choose: Chooser) -> tuple[VideoInfo, np.ndarray]:
    files = frame_files(folder)
    if not files:
        raise InputError(f"no .png or .jpg frames in folder {folder}; put the frames there or pass a video file")
    first = read_image(files[0])
    info = VideoInfo(len(files), _folder_fps(folder), first.shape[1], first.shape[0])
    pixels = []
    for index in choose(info):
        frame = read_image(files[index])
        if frame.shape != first.shape:
            raise InputError(
                f"frames in {folder} differ in size ({files[0].name} is {first.shape[1]}x{first.shape[0]}, "
                f"{files[index].name} is {frame.shape[1]}x{frame.shape[0]}); resize them to one size"
            )
        pixels.append(frame)
    return info, np.stack(pixels) if pixels else _empty(first)


def _folder_fps(folder: Path) -> float:
    """The fps :func:`write_video` recorded in the folder, else :data:`DEFAULT_FPS`."""
    meta = folder / FOLDER_META
    if not meta.is_file():
        return DEFAULT_FPS
    data = read_json(meta, "clip metadata")
    fps = data.get("fps") if isinstance(data, dict) else None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise InputError(f"{meta} has no valid fps (a positive number); fix or delete it")
    return float(fps)


def frame_files(folder: Path) -> list[Path]:
    """The folder's png/jpg files in natural order (``frame2`` before ``frame10``)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=natural_key)


def natural_key(path: Path) -> list:
    """Sort key that orders numbers by value: ``frame2`` < ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]




def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file as (H, W, 3) uint8 RGB; an unreadable file is an InputError."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); replace or remove it") from exc


def _empty(like: np.ndarray) -> np.ndarray:
    return np.zeros((0, *like.shape), np.uint8)


def _reason(message: str) -> str:
    """The informative line of a long ffmpeg/decord error text, without log prefixes."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+(\S+\.cc:\d+:\s*)?", "", line).strip() for line in message.splitlines()]
    # drop ffmpeg's wrapper line and decord's assertion text, keep what went wrong
    lines = [re.sub(r"^Check failed: .*\(-?\d+ vs\. -?\d+\)\s*", "", line) for line in lines]
    lines = [line for line in lines if line and not line.startswith("FFMPEG call failed")]
    telling = [line for line in lines if re.search(r"invalid|error|not found|corrupt|failed", line, re.I)]
    return (telling or lines or ["unknown error"])[0][:200]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (decord logs errors it also raises) for the duration."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


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
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it or choose another --out")
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
    with _atomic_folder(path, exclusive) as tmp:
        digits = max(4, len(str(len(frames) - 1)))
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"frame_{index:0{digits}d}.png")
        write_json(tmp / FOLDER_META, {"fps": fps, "frames": len(frames)})


@contextlib.contextmanager
def _atomic_folder(path: Path, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path``.

    An existing folder is replaced only if it is a frame folder this module wrote, so a mistyped
    output path never deletes someone's files; ``exclusive`` replaces nothing at all.
    """
    ensure_writable_dir(path.parent)
    if path.exists() and not _is_frame_folder(path):
        raise OutputExistsError(f"{path} exists and is not a frame folder written by contextedit; choose another --out")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()  # unlike mkdtemp (0700) this honours the umask, so the result is shareable
    try:
        yield tmp
        if exclusive:
            move_new(tmp, path)
        elif path.exists():
            old = path.with_name(f"{tmp.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
