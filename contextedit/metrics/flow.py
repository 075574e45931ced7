"""Optical-flow metrics between an edited clip and its source: did the edit keep the motion?

PSNR and CLIP look at frames one by one; an edit can match every frame's structure and still
jitter or move differently. Two flow-based scores measure that:

- :func:`flow_epe`: end-point error between the edit's and the source's frame-to-frame flow
  (V2VBench's "motion alignment" is −EPE);
- :func:`warp_error`: Lai et al.'s warping error, the edit warped along the SOURCE's flow, on
  pixels the flow sees in both frames (temporal consistency of the edit with the source's motion).

Flow comes from OpenCV's Farnebäck (no weights, the default) or torchvision's RAFT, whose
weights are a local ``.safetensors`` file: nothing is downloaded and no pickle is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, UsageError
from .metric import Metric
from .psnr import resize_frames

from ..defaults import FLOW_METHODS  # noqa: E402,F401 — declared there
# The values of OpenCV's own example (samples/python/opt_flow.py): pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags.
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)
RAFT_BATCH = 8  # frame pairs per forward pass: RAFT's all-pairs correlation grows with (H·W/64)²
RAFT_MIN_SIZE = 128  # 8 × the smallest feature map the correlation pyramid accepts
RAFT_UPDATES = 12  # torchvision's default number of refinement iterations
# torchvision ships RAFT as a .pth pickle; the README (eval, "Flow") has the one-line conversion.
CONVERT_RAFT = "convert torchvision's RAFT .pth once to .safetensors, as the README shows (eval, Flow)"


@dataclass
class FlowEstimator:
    """Dense flow between frame batches: ``estimator(a, b)`` maps uint8 (N, H, W, 3) pairs to
    float32 (N, H, W, 2) flow (dx, dy) in pixels from ``a[i]`` to ``b[i]``.

    ``name`` (``farneback``, ``raft_large:<file>`` or ``raft_small:<file>``) says which flow a score used.
    """

    name: str
    estimate: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = _check_frames(a, "frames"), _check_frames(b, "frames")
        if a.shape != b.shape:
            raise InputError(f"flow needs frame batches of one shape, got {a.shape} and {b.shape}")
        if len(a) == 0:
            return np.zeros((0, *a.shape[1:3], 2), np.float32)
        flow = np.array(self.estimate(a, b), dtype=np.float32)
        # Identical frames have no motion; Farnebäck still reports ~0.1 px near the borders.
        flow[[np.array_equal(x, y) for x, y in zip(a, b)]] = 0
        return flow


def load_flow(method: str = "farneback", model_file: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FlowEstimator:
    """A flow estimator: ``farneback`` (OpenCV, CPU, no weights) or ``raft`` (torchvision, ``model_file`` weights)."""
    if method not in FLOW_METHODS:
        raise UsageError(f"`flow` {method!r} is not one of {', '.join(FLOW_METHODS)}")
    if method == "farneback":
        if model_file is not None:
            raise UsageError("`flow_model` is only for `flow` raft; Farnebäck needs no weights")
        _import_cv2()
        return FlowEstimator("farneback", _farneback)
    if model_file is None:
        raise UsageError("`flow` raft needs its weights: pass `flow_model` FILE (a RAFT .safetensors state dict) or use `flow` farneback")
    return _load_raft(Path(model_file), torch.device(device))


def clip_flows(frames: np.ndarray, estimator: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """(F-1, H, W, 2) flow from each frame to the next; empty for a single frame."""
    frames = _check_frames(frames, "frames")
    if len(frames) < 2:
        return np.zeros((0, *frames.shape[1:3], 2), np.float32)
    return np.asarray(estimator(frames[:-1], frames[1:]), dtype=np.float32)


def flow_epe(edit: np.ndarray, source: np.ndarray, estimator) -> tuple[float | None, list[float]]:
    """End-point error between the edit's and the source's consecutive-frame flows.

    Per frame pair: the mean over pixels of ||flow_edit − flow_source|| (pixels at the edit's size);
    returns (mean over pairs, per-pair values). 0 when the edit moves exactly like the source (a
    clip compared with itself gives exactly 0); lower is better. V2VBench's "motion alignment" is
    the negative of this. The source is resized to the edit's size and the first min(len) frames of
    each are compared; fewer than 2 frames give (None, []).
    """
    edit, source = _align(edit, source)
    if len(edit) < 2:
        return None, []
    diff = clip_flows(edit, estimator).astype(np.float64) - clip_flows(source, estimator)
    per_pair = np.sqrt((diff**2).sum(-1)).reshape(len(diff), -1).mean(1)
    return float(per_pair.mean()), [float(v) for v in per_pair]


def warp_error(edit: np.ndarray, source: np.ndarray, estimator) -> tuple[float | None, list[float]]:
    """Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency") of the edit along the source's flow.

    With the source's forward flow f (t → t+1) and backward flow b (t+1 → t), edit[t+1] is warped
    back to frame t by bilinear sampling at x + f(x). Pixels pass the forward–backward check
    |f + b(x+f)|² < 0.01·(|f|² + |b(x+f)|²) + 0.5 (not occluded) and land inside the frame; per pair
    the error is sum(M·||edit[t] − warped||²) / (3·sum(M)) on pixels scaled to [0, 1], i.e. a mean
    squared error per channel. Lower is better; 0 for a static edit of a static source. Pairs with
    no valid pixel are left out of the list and the mean; returns (mean, per-pair values), or
    (None, []) for fewer than 2 frames or no valid pair. Sizes and lengths are matched as in :func:`flow_epe`.
    """
    edit, source = _align(edit, source)
    if len(edit) < 2:
        return None, []
    forward = clip_flows(source, estimator)
    backward = np.asarray(estimator(source[1:], source[:-1]), dtype=np.float32)
    per_pair = []
    for t in range(len(forward)):
        f = forward[t].astype(np.float64)
        sampled, inside = _sample(np.concatenate([edit[t + 1] / 255.0, backward[t]], axis=-1), f)
        warped, b = sampled[..., :3], sampled[..., 3:]
        agree = ((f + b) ** 2).sum(-1) < 0.01 * ((f**2).sum(-1) + (b**2).sum(-1)) + 0.5
        mask = agree & inside
        if not mask.any():
            continue
        sq = ((edit[t] / 255.0 - warped) ** 2).sum(-1)
        per_pair.append(float(sq[mask].sum() / (3 * mask.sum())))
    if not per_pair:
        return None, []
    return float(np.mean(per_pair)), per_pair


def check_flow_options(options) -> None:
    """``flow`` is a known method and ``flow_model`` goes with raft (checked whether or not a flow metric is chosen)."""
    flow, flow_model = options.get("flow", "farneback"), options.get("flow_model")
    if flow not in FLOW_METHODS:
        raise UsageError(f"`flow` {flow!r} is not one of {', '.join(FLOW_METHODS)}")
    if flow_model is not None and flow != "raft":
        raise UsageError("`flow_model` is RAFT's weights file; pass `flow` raft with it")


def _flow_metric(name: str, key: str, scale: str, column: str, compute) -> Metric:
    def score(item, estimator, ctx) -> dict:
        value, series = compute(item.frames, ctx.source, estimator)
        return {key: value, "per_frame": {key: series}}

    return Metric(name, (key,), scales={key: scale}, columns={key: column}, score=score, backbone="flow",
                  load=lambda ctx: load_flow(ctx.options.get("flow", "farneback"), ctx.options.get("flow_model"), ctx.device),
                  needs_source=True, per_frame=(key,), check_options=check_flow_options)


FLOW = _flow_metric("flow", "flow_epe", "pixels at the edit's size: mean end-point error between the source's and the edit's "
                    "optical flow (lower is better; V2VBench's motion alignment is -flow_epe)", "flow EPE", flow_epe)
WARP = _flow_metric("warp", "warp_error", "MSE on [0,1] pixels between each edit frame and the next one warped back with the "
                    "source's flow, non-occluded pixels only (lower is better)", "warp err", warp_error)


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 RGB frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def _align(edit: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first min(len) frames of each, the source resized to the edit's size."""
    edit, source = _check_frames(edit, "edit"), _check_frames(source, "source")
    count = min(len(edit), len(source))
    return edit[:count], resize_frames(source[:count], *edit.shape[1:3])


def _sample(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of (H, W, C) ``image`` at x + flow(x), and where that lies inside the frame.

    The same as grid_sample(align_corners=True, padding_mode="border"), written out so that an
    integer position returns the pixel exactly (a static clip's warping error is exactly 0).
    """
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    top = (1 - wx) * image[y0, x0] + wx * image[y0, x1]
    bottom = (1 - wx) * image[y1, x0] + wx * image[y1, x1]
    return (1 - wy) * top + wy * bottom, inside


def _import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise UsageError(f"`flow` farneback needs OpenCV ({exc}); `pip install opencv-python-headless`") from exc
    return cv2


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cv2 = _import_cv2()
    out = np.empty((*a.shape[:3], 2), np.float32)
    for i, (x, y) in enumerate(zip(a, b)):
        gx, gy = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(y, cv2.COLOR_RGB2GRAY)
        out[i] = cv2.calcOpticalFlowFarneback(gx, gy, None, *FARNEBACK_PARAMS)
    return out


def _load_raft(path: Path, device: torch.device) -> FlowEstimator:
    from ..fileio import load_safetensors

    if path.suffix.lower() != ".safetensors":
        raise UsageError(
            f"`flow_model` {path} is not a .safetensors file; pickle weights are not loaded. "
            f"{CONVERT_RAFT}"
        )
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception as exc:  # an ImportError, or a RuntimeError/OSError from a torchvision built for another torch
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(
            f"RAFT needs torchvision built for this torch ({type(exc).__name__}: {reason}); "
            "use `flow` farneback or install the matching torchvision"
        ) from exc
    state = load_safetensors(path)
    # The file says which RAFT it is: the state dict fits exactly one architecture.
    for variant, build in (("raft_large", raft_large), ("raft_small", raft_small)):
        model = build(weights=None, progress=False)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            continue
        model.requires_grad_(False).eval().to(device)
        return FlowEstimator(f"{variant}:{path.name}", lambda a, b, model=model: _raft(model, a, b, device))
    raise InputError(f"`flow_model` {path} is not a torchvision raft_large or raft_small state dict")


@torch.no_grad()
def _raft(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, device: torch.device) -> np.ndarray:
    h, w = a.shape[1:3]
    # RAFT works at 1/8 resolution and its 4-level correlation pyramid needs feature maps of 16+:
    # frames are padded to multiples of 8, and to at least 128 px; the flow is cropped back.
    pad_h, pad_w = max(-h % 8, RAFT_MIN_SIZE - h), max(-w % 8, RAFT_MIN_SIZE - w)
    out = []
    for start in range(0, len(a), RAFT_BATCH):
        pair = []
        for frames in (a[start : start + RAFT_BATCH], b[start : start + RAFT_BATCH]):
            # torchvision's Raft transforms: [0, 1] floats normalised with mean 0.5, std 0.5 -> [-1, 1].
            x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
            pair.append(F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x)
        flow = model(*pair, num_flow_updates=RAFT_UPDATES)[-1]
        out.append(flow[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy())
    return np.concatenate(out)
