"""Frame selection and sizes: which source frames to read, the model's size, pixels ↔ tensors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, UsageError

MAX_SIDE = 4096  # larger sizes are typos that would allocate gigabytes


class VideoInfo(NamedTuple):
    """What a source holds before any selection."""

    frames: int
    fps: float
    width: int
    height: int
    times: tuple[float, ...] | None = None  # presentation time (s) of each chosen frame, where the decoder says


@dataclass
class Clip:
    """Selected frames of one source."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: float
    path: str
    total_frames: int  # frames in the source before selection
    indices: list[int] = field(default_factory=list)  # source index of each selected frame
    times: tuple[float, ...] | None = None  # each selected frame's presentation time (s), where known

    @property
    def playback_fps(self) -> float:
        """The rate that plays the selection in the source's time: from the frames' own timestamps
        (right for variable frame rates too), else the source's fps over the stride."""
        if self.times is not None and len(self.times) > 1 and self.times[-1] > self.times[0]:
            return round((len(self.times) - 1) / (self.times[-1] - self.times[0]), 6)
        stride = self.indices[1] - self.indices[0] if len(self.indices) > 1 else 1
        return self.fps / stride

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])


def select_indices(total: int, frames: int | None = 8, stride: int = 2, start: int = 0, source: str = "the clip") -> list[int]:
    """Indices ``start, start+stride, …`` (``frames`` of them; None: all there are) of a source
    with ``total`` frames."""
    if frames is None:  # every stride-th frame from start
        if total < 1 or start >= total:
            raise InputError(f"{source} has {total} frame{'s' if total != 1 else ''}; `start` {start} leaves none")
        frames = (total - 1 - start) // stride + 1 if isinstance(stride, int) and stride >= 1 else 1
    for name, value, least in (("frames", frames, 1), ("stride", stride, 1), ("start", start, 0)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise UsageError(f"`{name}` must be an integer >= {least}, got {value!r}")
    needed = start + (frames - 1) * stride + 1
    if total < 1:
        raise InputError(f"{source} has no frames; re-export it")
    if total < needed:
        raise InputError(
            f"{source} has {total} frame{'s' if total != 1 else ''} but `frames` {frames} `stride` {stride} `start` {start} "
            f"needs {needed}; try {_fitting_options(total, frames, stride, start)}"
        )
    return [start + i * stride for i in range(frames)]


def _fitting_options(total: int, frames: int, stride: int, start: int) -> str:
    """Suggest option changes, one at a time, that make the selection fit ``total`` frames."""
    span = (frames - 1) * stride + 1
    options = []
    if start > 0 and span <= total:
        options.append(f"`start` {total - span}")
    if total > start:
        options.append(f"`frames` {(total - 1 - start) // stride + 1}")
        if frames > 1 and (total - 1 - start) // (frames - 1) >= 1 and stride > 1:
            options.append(f"`stride` {(total - 1 - start) // (frames - 1)}")
    else:
        options.append(f"`start` 0 `frames` {(total - 1) // stride + 1}")
    return " or ".join(options)


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → ``(w, h)``; both sides multiples of 8, from 8 to 4096 (so at most 4096² px)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not match:
        raise UsageError(f"invalid size {text!r}; write WIDTHxHEIGHT, e.g. `size` 512x320")
    return check_size(int(match[1]), int(match[2]))


def check_size(width: int, height: int) -> tuple[int, int]:
    """Refuse sizes the model cannot use before anything is allocated."""
    for side in (width, height):
        if side < 8 or side > MAX_SIDE:
            raise UsageError(f"size {width}x{height} is out of range; each side must be 8..{MAX_SIDE} pixels")
        if side % 8:
            raise UsageError(
                f"size {width}x{height} is not a multiple of 8 (the VAE downsamples by 8); "
                f"try `size` {_round8(width)}x{_round8(height)}"
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
        raise UsageError(f"the source is {src_w}x{src_h}: {exc}; pass a smaller `size`") from exc


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
