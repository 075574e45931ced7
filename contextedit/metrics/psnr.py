"""PSNR between an edited clip and its source, frame by frame: how much structure the edit kept.
With a mask of the edited region, ``bg_psnr`` measures only the pixels outside it: an edit that
does what it should leaves them alone."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .metric import Metric

# Identical frames have infinite PSNR; each frame's value is capped here so that means and JSON
# stay finite (100 dB is far above any lossy round trip: MSE < 6.5e-6 on a 0..255 scale).
PSNR_CAP_DB = 100.0


def resize_frames(frames: np.ndarray, height: int, width: int, resample=Image.BICUBIC) -> np.ndarray:
    """Resize frames (F, H, W[, 3]) to (F, height, width[, 3]), bicubic; a no-op when sizes match."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample)) for f in frames])


def psnr_frames(frames: np.ndarray, reference: np.ndarray, keep: np.ndarray | None = None, cap: float = PSNR_CAP_DB) -> np.ndarray:
    """Per-frame 10·log10(255² / MSE), capped at ``cap`` dB, over the first min(len) frames.

    The reference is resized to the frames' size when they differ. ``keep`` (bool (F or 1, h, w),
    resized nearest to the frames' size) limits the MSE to its True pixels; a frame with none is NaN.
    """
    count = min(len(frames), len(reference))
    a = frames[:count].astype(np.float64)
    b = resize_frames(reference[:count], *frames.shape[1:3]).astype(np.float64)
    error = ((a - b) ** 2).mean(axis=-1)
    if keep is None:
        mse = error.reshape(count, -1).mean(axis=1)
    else:
        keep = resize_frames(keep.astype(np.uint8) * 255, *frames.shape[1:3], resample=Image.NEAREST) > 127
        keep = np.broadcast_to(keep, error.shape) if len(keep) == 1 else keep[:count]
        pixels = keep.reshape(count, -1).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mse = (error * keep).reshape(count, -1).sum(axis=1) / pixels
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.minimum(10.0 * np.log10(255.0**2 / mse), cap)


def psnr(frames: np.ndarray, reference: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    """Mean over frames of :func:`psnr_frames` (the whole frame)."""
    return float(psnr_frames(frames, reference, cap=cap).mean())


def _score(item, backbone, ctx) -> dict:
    values = psnr_frames(item.frames, ctx.source)
    row = {"psnr": float(values.mean()), "per_frame": {"psnr": values.tolist()}}
    if ctx.mask is not None:
        outside = psnr_frames(item.frames, ctx.source, keep=~ctx.mask)
        row["bg_psnr"] = float(np.nanmean(outside)) if np.isfinite(outside).any() else None
    return row


PSNR = Metric(
    "psnr", ("psnr", "bg_psnr"),
    scales={"psnr": "dB against the source, per frame capped at 100, mean over frames",
            "bg_psnr": "dB against the source outside --mask (white = edited region)"},
    columns={"psnr": "PSNR", "bg_psnr": "bg PSNR"},
    score=_score, needs_source=True, mask_keys=("bg_psnr",), per_frame=("psnr",),
)
