"""Structure control with a ControlNet (``--control canny|depth|pose|FOLDER``), as RAVE applies it:
per-frame conditions, and the ControlNet's residuals added to the inflated UNet in the inversion
and in sampling alike, so the inverted noise and the edit see the same structure.

The residuals come in through a forward pre-hook on the UNet (:func:`controlled`): every call of
the UNet — the inversion's, the guided sampler's batched halves, direct inversion's source branch
— gets the ControlNet's residuals for its own batch, with the conditions repeated to match
(batches are frame-major copies of the window's frames). The UNet object, its processors and the
fusion that wraps them stay as they are.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..defaults import DEFAULT_DEPTH_MODEL  # noqa: F401
from ..errors import InputError, ModelNotFoundError, UsageError

CONTROLS = ("canny", "depth", "pose")
CANNY_THRESHOLDS = (100, 200)  # the values of diffusers' and ControlNet's canny examples
POSE_ANNOTATOR = "lllyasviel/Annotators"  # controlnet_aux's OpenPose weights


@dataclass
class StructureControl:
    """A loaded ControlNet with the clip's conditions (F, 3, H, W) in [0, 1] and its scale."""

    controlnet: torch.nn.Module
    conditions: torch.Tensor
    scale: float = 1.0

    def window(self, unet: torch.nn.Module, frames) -> contextlib.AbstractContextManager:
        """:func:`controlled` for the window of frame indices ``frames``."""
        return controlled(unet, self.controlnet, self.conditions[list(frames)], self.scale)


@contextlib.contextmanager
def controlled(unet: torch.nn.Module, controlnet: torch.nn.Module, conditions: torch.Tensor, scale: float) -> Iterator[None]:
    """Within the block every call of ``unet`` adds ``controlnet``'s residuals for ``conditions``."""
    frames = conditions.shape[0]

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        states = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if sample.shape[0] % frames:
            raise RuntimeError(f"a UNet batch of {sample.shape[0]} is not whole copies of the {frames} conditioned frames")
        cond = conditions.to(sample.device, sample.dtype).repeat(sample.shape[0] // frames, 1, 1, 1)
        # SDXL's pooled embedding and time ids (unpacked by the earlier hook of models.sdxl) steer it too
        down, mid = controlnet(sample, timestep, encoder_hidden_states=states, controlnet_cond=cond, conditioning_scale=scale,
                               added_cond_kwargs=kwargs.get("added_cond_kwargs"), return_dict=False)
        return args, {**kwargs, "down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def check_control(control: str | None, controlnet: str | None, scale: float | None = None, *, pair: bool = True) -> None:
    """A known control (or ``none``) or an existing folder; with ``pair``, both or neither of
    ``control`` and ``controlnet`` (edit checks the pair once the run's own have filled the gaps)."""
    if pair and (control is None) != (controlnet is None):
        missing = "controlnet" if controlnet is None else "control"
        raise UsageError(f"structure control needs both `control` and `controlnet`; pass `{missing}` too")
    if control is not None and control not in (*CONTROLS, "none") and not Path(control).is_dir():
        raise UsageError(f"`control` {control!r} is neither one of {', '.join(CONTROLS)} nor a folder of per-frame condition images")
    if scale is not None and not (math.isfinite(scale) and scale >= 0):
        raise UsageError(f"`control_scale` must be 0 or more (got {scale}); 1 is the ControlNet's trained strength")


def structure_control(comps, frames: np.ndarray, control: str, controlnet: str, scale: float = 1.0, *,
                      depth_model: str = DEFAULT_DEPTH_MODEL) -> StructureControl:
    """Load ``controlnet`` for ``comps`` and compute ``control``'s conditions for ``frames`` (F, H, W, 3)."""
    from ..models.controlnet import load_controlnet

    check_control(control, controlnet, scale)
    model = load_controlnet(controlnet, comps)
    images = condition_frames(frames, control, depth_model=depth_model)
    conditions = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return StructureControl(model, conditions, float(scale))


def condition_frames(frames: np.ndarray, control: str, *, depth_model: str = DEFAULT_DEPTH_MODEL) -> np.ndarray:
    """uint8 (F, H, W, 3) condition images for ``frames``, at their size."""
    if control == "canny":
        return canny(frames)
    if control == "depth":
        return depth(frames, depth_model)
    if control == "pose":
        return pose(frames)
    return _folder(Path(control), frames)


def canny(frames: np.ndarray) -> np.ndarray:
    """OpenCV's Canny edges of each frame, white on black, as three channels."""
    import cv2

    edges = [cv2.Canny(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), *CANNY_THRESHOLDS) for f in frames]
    return np.repeat(np.stack(edges)[..., None], 3, axis=-1)


@torch.no_grad()
def depth(frames: np.ndarray, model_id: str) -> np.ndarray:
    """Relative depth per frame from transformers' depth estimation (DPT, Depth-Anything), each frame
    normalised to 0..255, near bright, as the depth ControlNets were trained."""
    from ..models.loading import load_depth_model

    model, processor = load_depth_model(model_id)
    out = []
    for frame in frames:
        predicted = model(**processor(images=frame, return_tensors="pt")).predicted_depth
        resized = torch.nn.functional.interpolate(predicted[:, None].float(), size=frame.shape[:2], mode="bicubic")[0, 0]
        lo, hi = resized.min(), resized.max()
        span = (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)  # a flat map stays 0, not NaN
        out.append(((resized - lo) / span * 255).round().byte().numpy())
    return np.repeat(np.stack(out)[..., None], 3, axis=-1)


def pose(frames: np.ndarray) -> np.ndarray:
    """OpenPose skeletons through controlnet_aux, an optional extra (``pip install controlnet_aux``)."""
    try:
        from controlnet_aux import OpenposeDetector
    except ImportError as exc:
        raise UsageError("`control` pose needs controlnet_aux: pip install controlnet_aux (or pass a folder of pose images)") from exc
    try:  # its weights come from the hub (or its cache); torch ≥ 2.6 reads them with weights_only
        detector = OpenposeDetector.from_pretrained(POSE_ANNOTATOR)
    except Exception as exc:  # noqa: BLE001 - controlnet_aux raises whatever its download raised
        raise ModelNotFoundError(f"the OpenPose annotator {POSE_ANNOTATOR} could not be loaded ({type(exc).__name__}); "
                                 "download it once with network, or pass `control` as a folder of pose images") from exc
    height, width = frames.shape[1:3]
    return np.stack([np.asarray(detector(f).convert("RGB").resize((width, height))) for f in frames])


def _folder(folder: Path, frames: np.ndarray) -> np.ndarray:
    """A folder of one condition image per frame (natural order), used as given, resized to the frames."""
    from PIL import Image

    from ..video import frame_files, read_image

    if not folder.is_dir():
        raise InputError(f"`control` folder {folder} does not exist; pass canny, depth, pose or a folder of per-frame condition images")
    files = frame_files(folder)
    if len(files) != len(frames):
        raise InputError(f"`control` folder {folder} has {len(files)} images, the clip has {len(frames)} frames; "
                         "give one condition image per frame")
    height, width = frames.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(read_image(f)).resize((width, height), Image.BILINEAR)) for f in files])
