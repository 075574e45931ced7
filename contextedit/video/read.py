"""Reading: containers (decord, else the ffmpeg binary), GIFs, frame folders and single images.

Containers are decoded with decord when it is installed and works, else with the ffmpeg binary of
``imageio-ffmpeg``; both give the same RGB frames and raise the same error classes. GIFs and
folders of image frames (natural order: ``frame2`` before ``frame10``) are read with Pillow.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import InputError, UsageError
from ..fileio import read_json
from .select import Clip, VideoInfo, select_indices

# The image files read as frames (frame folders, masks) and as training images: the one list.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
FOLDER_META = "clip.json"  # a frame folder's fps lives here; PNGs cannot carry it
DEFAULT_FPS = 8.0  # a frame folder without clip.json, a GIF without delays
BACKENDS = ("auto", "decord", "imageio")

# A decoder takes the path and a chooser (VideoInfo -> frame indices) and returns the info and
# the chosen frames; choosing inside the decoder lets it stop reading after the last index.
Chooser = Callable[[VideoInfo], list[int]]
Decoder = Callable[[Path, Chooser], tuple[VideoInfo, np.ndarray]]


class _DecodeFailed(Exception):
    """A decoder could not read the file; the next decoder may still succeed."""


def read_video(
    path: str | os.PathLike, frames: int | None = 8, stride: int = 2, start: int = 0, backend: str = "auto"
) -> Clip:
    """Read ``frames`` frames (None: all), every ``stride``-th from index ``start``, at the source size.

    ``backend`` picks the container decoder ("auto": decord, falling back to ffmpeg); GIFs and
    frame folders are always read with Pillow.
    """
    path = Path(path)
    select_indices(10**9, frames or 1, stride, start)  # option errors first, before any decoding

    def choose(info: VideoInfo) -> list[int]:
        return select_indices(info.frames, frames, stride, start, source=str(path))

    info, pixels = _decode(path, choose, backend)
    return Clip(pixels, info.fps, str(path), info.frames, choose(info), info.times)


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
            if indices:
                info = info._replace(times=tuple(float(t) for t in reader.get_frame_timestamp(indices)[:, 0]))
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
        raise InputError(f"no image frames ({'/'.join(sorted(IMAGE_SUFFIXES))}) in folder {folder}; "
                         "put the frames there or pass a video file")
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
    """The fps :func:`~contextedit.video.write_video` recorded in the folder, else :data:`DEFAULT_FPS`."""
    meta = folder / FOLDER_META
    if not meta.is_file():
        return DEFAULT_FPS
    data = read_json(meta, "clip metadata")
    fps = data.get("fps") if isinstance(data, dict) else None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise InputError(f"{meta} has no valid fps (a positive number); fix or delete it")
    return float(fps)


def frame_files(folder: Path) -> list[Path]:
    """The folder's image files (:data:`IMAGE_SUFFIXES`) in natural order (``frame2`` before ``frame10``)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
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


def read_mask_frames(path: str | os.PathLike, frames: int) -> np.ndarray:
    """``--mask``: one image for every frame, or a folder of one image per frame (natural order);
    white (> half) marks where the edit may change things. Returns bool (F, H, W) at the image's size."""
    p = Path(path)
    if p.is_dir():
        files = frame_files(p)
        if len(files) != frames:
            raise InputError(f"`mask` folder {p} has {len(files)} images, the clip has {frames} frames; "
                             "give one image per frame, or one image for all")
    elif p.is_file():
        files = [p] * frames
    else:
        raise InputError(f"`mask` {p} does not exist; give a PNG or a folder of one PNG per frame")
    images = [read_image(f) for f in files]
    if len({im.shape for im in images}) > 1:
        raise InputError(f"`mask` images in {p} differ in size; give them all the same size")
    return np.stack([im.astype(np.float32).mean(-1) / 255.0 for im in images]) > 0.5


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
