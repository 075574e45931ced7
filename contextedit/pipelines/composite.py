"""Compositing the kept region in pixel space after decoding (issue 27).

LocalBlend keeps the kept region's *latents*, but the decoder mixes neighbouring latents, so a
kept object comes back tinted and haloed. As Blended Latent Diffusion reconstructs the
background (Avrahami et al. 2023, §4.2), the kept pixels are taken from the source instead:

1. the latent mask is upsampled and refined at pixel resolution with GrabCut on the source frame
   (the coarse mask says "probably kept", a band around it "probably not");
2. the edited frame's seam — the kept latent cells and one cell around them — is inpainted from the edited
   surroundings (OpenCV's Telea), so no halo of the model's own redraw of the object stays;
3. the source is pasted through the refined mask less its edge pixel (which holds the old
   background), feathered.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FEATHER_PX = 0.7  # σ of the paste's feather


def pixel_mask(keep: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(F, 1, h, w) latent mask → (F, H, W) bool, bilinear then > ½."""
    return (F.interpolate(keep.float().cpu(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0.5).numpy()


def refine(source: np.ndarray, coarse: np.ndarray, band: int) -> np.ndarray:
    """GrabCut on one source frame (H, W, 3) uint8 from a coarse mask; the coarse mask where it fails."""
    import cv2

    if not coarse.any() or coarse.all():
        return coarse
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    near = cv2.dilate(coarse.astype(np.uint8), kernel) > 0
    labels = np.where(coarse, cv2.GC_PR_FGD, np.where(near, cv2.GC_PR_BGD, cv2.GC_BGD)).astype(np.uint8)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: seeded, so edits stay deterministic
    try:
        cv2.grabCut(np.ascontiguousarray(source[..., ::-1]), labels, None, np.zeros((1, 65)), np.zeros((1, 65)), 3,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return coarse
    refined = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return refined if refined.any() else coarse


def composite(edited: np.ndarray, source: np.ndarray, keep: torch.Tensor) -> np.ndarray:
    """``edited`` with ``source``'s pixels where ``keep`` (F, 1, h, w) is set; both (F, H, W, 3) uint8."""
    import cv2

    size = edited.shape[1:3]
    band = max(1, size[0] // keep.shape[-2])  # one latent cell, in pixels
    out = []
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    for frame, src, coarse in zip(edited, source, pixel_mask(keep, size)):
        mask = refine(src, coarse, band)
        if not mask.any():
            out.append(frame)
            continue
        seam = cv2.dilate((mask | coarse).astype(np.uint8), kernel)  # the decoder's halo spreads over the kept cells
        healed = cv2.inpaint(np.ascontiguousarray(frame), seam, band + 1, cv2.INPAINT_TELEA)
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))  # the source's own edge pixels hold its old background
        alpha = np.maximum(core, cv2.GaussianBlur(core.astype(np.float32), (0, 0), FEATHER_PX))[..., None]  # feathered outward
        out.append((alpha * src + (1 - alpha) * healed).round().clip(0, 255).astype(np.uint8))
    return np.stack(out)
