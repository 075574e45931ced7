"""A user mask drawn on the page. The page paints over the run's first frame as tuned (a Gradio
``ImageEditor``); what is painted becomes the image ``contextedit edit --mask`` takes (white: the
edit may change it), written once into the run folder and handed to the edit exactly as an uploaded
mask is, so that a drawing and the same mask uploaded give the same edit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from .. import video as vio
from ..errors import UsageError
from ..fileio import atomic_path
from ..runs import load_manifest, source_clip

DRAWN = "masks"  # <run>/edits/masks/drawn-<sha256[:8]>.png


def first_frame(run_dir: Path) -> np.ndarray:
    """The run's first frame as tuned (what the mask is drawn over), (H, W, 3) uint8."""
    manifest = load_manifest(run_dir)
    return vio.read_video(source_clip(run_dir, manifest), frames=1, stride=1).frames[0]


def canvas(run_dir: Path) -> dict:
    """The editor's value for a run: its first frame, nothing painted yet."""
    frame = first_frame(run_dir)
    return {"background": frame, "layers": [], "composite": frame}


def painted(value: dict | None) -> np.ndarray | None:
    """Where the editor's layers are painted (bool (H, W): more than half opaque, as ``--mask``
    reads more than half white), or None when nothing is. Gradio passes the editor's value as
    ``{"background", "layers", "composite"}``; layers are RGBA images (arrays, PIL images or files)."""
    layers = [_array(layer) for layer in (value or {}).get("layers") or [] if layer is not None]
    if not layers:
        return None
    if len({layer.shape[:2] for layer in layers}) > 1:
        raise UsageError("the drawn mask's layers differ in size; clear the drawing and draw it again")
    cover = np.stack([layer[..., 3] if layer.ndim == 3 and layer.shape[-1] == 4 else
                      (layer if layer.ndim == 2 else layer[..., :3].mean(-1)) for layer in layers])
    mask = (cover.astype(np.float32) / 255.0 > 0.5).any(0)
    return mask if mask.any() else None


def user_mask(run_dir: Path, uploaded: str | None, drawn: dict | None) -> str | None:
    """The mask file for an edit: the drawing as ``<run>/edits/masks/drawn-<sha256[:8]>.png``
    (white where painted, black elsewhere; the same drawing, the same file), else the upload, else
    None. A drawing and an upload together are refused: one mask at a time."""
    mask = painted(drawn)
    if mask is None:
        return uploaded or None
    if uploaded:
        raise UsageError("two masks: one drawn and one uploaded; clear one of them (the edit takes one mask)")
    pixels = np.where(mask, 255, 0).astype(np.uint8)
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()[:8]
    out = run_dir / "edits" / DRAWN / f"drawn-{digest}.png"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
    return str(out)


def _array(layer) -> np.ndarray:
    if isinstance(layer, (str, Path)):
        with Image.open(layer) as image:
            return np.asarray(image.convert("RGBA"))
    return np.asarray(layer)
