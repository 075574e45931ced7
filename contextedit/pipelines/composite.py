"""Compositing the kept region in pixel space after decoding (issue 27).

LocalBlend keeps the kept region's *latents*, but the decoder mixes neighbouring latents, so a
kept object comes back tinted and haloed. As Blended Latent Diffusion reconstructs the
background (Avrahami et al. 2023, §4.2), the kept pixels are taken from the source instead:

1. the latent mask is upsampled and refined at pixel resolution with GrabCut on the source frame
   (the coarse mask says "probably kept", a band around it "probably not"). Pixels of the coarse
   mask whose colour is the background's own (near one of its k-means colours, read outside the
   band) start as "probably not": a latent cell is 8 px (4 on `tiny`), so a coarse mask of a 20 px object is
   half old background, and GrabCut started from it keeps that background (measured: 629 of 677
   black pixels of a circle's mask kept, pasted as a black square around the new circle), and
   band pixels whose colour is not the background's start as "probably kept" (a square's corners
   lie outside its cells' bilinear mask: GrabCut left them out, and the paste rounded the square);
2. the edited frame's seam — the kept latent cells and ``seam`` cells around them — is inpainted from the edited
   surroundings (OpenCV's Telea), so no halo of the model's own redraw of the object stays;
3. the source is pasted through the refined mask less its edge pixel (which holds the old
   background), feathered.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FEATHER_PX = 0.7  # σ of the paste's feather
BACKGROUND_COLOURS = 8  # k-means colours of the background read around the mask
# RGB distance under which a pixel reads as the background's colour: over the VAE round trip's
# error on a flat colour (≈ 8 on `tiny`), under the distance of any two colours the shapes world uses (≥ 100).
BACKGROUND_RGB = 24.0
MIN_OBJECT_SHARE = 0.05  # fewer unlike-background pixels than this share of the mask: keep the mask as GrabCut's start


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
    # unlike the background, in the mask or the band around it: the object (a square's corners
    # fall outside its latent cells' bilinear mask, and GrabCut left them out: rounded squares)
    likely = near & ~background_coloured(source, ~near)
    if (likely & coarse).sum() < MIN_OBJECT_SHARE * coarse.sum():  # the object is the background's colour: nothing tells them apart
        likely = coarse
    labels = np.where(likely, cv2.GC_PR_FGD, np.where(near, cv2.GC_PR_BGD, cv2.GC_BGD)).astype(np.uint8)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: seeded, so edits stay deterministic
    try:
        cv2.grabCut(np.ascontiguousarray(source[..., ::-1]), labels, None, np.zeros((1, 65)), np.zeros((1, 65)), 3,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return likely
    refined = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return refined if refined.any() else likely


def background_coloured(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels within ``BACKGROUND_RGB`` of one of ``BACKGROUND_COLOURS`` k-means colours
    of the ``background`` pixels (a textured background has several)."""
    import cv2

    samples = frame[background].reshape(-1, 3).astype(np.float32)
    if len(samples) == 0:
        return np.zeros(frame.shape[:2], bool)
    k = min(BACKGROUND_COLOURS, len(samples))
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    _, _, centres = cv2.kmeans(samples, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    pixels = frame.reshape(-1, 1, 3).astype(np.float32)
    distance = np.sqrt(((pixels - centres[None]) ** 2).sum(-1)).min(1)
    return distance.reshape(frame.shape[:2]) < BACKGROUND_RGB


def composite(edited: np.ndarray, source: np.ndarray, keep: torch.Tensor, seam: int = 2) -> np.ndarray:
    """``edited`` with ``source``'s pixels where ``keep`` (F, 1, h, w) is set; both (F, H, W, 3) uint8.
    ``seam``: latent cells around the kept ones inpainted first (``--composite-seam``: the decoder
    spreads the step between kept and edited latents that far; one cell left an orange ring
    around kept objects on `tiny`, whose model folder recommends 3)."""
    import cv2

    size = edited.shape[1:3]
    band = max(1, size[0] // keep.shape[-2])  # one latent cell, in pixels
    out = []
    seam_kernel = np.ones((2 * seam * band + 1,) * 2, np.uint8)
    for frame, src, coarse in zip(edited, source, pixel_mask(keep, size)):
        mask = refine(src, coarse, band)
        if not mask.any():
            out.append(frame)
            continue
        halo = cv2.dilate((mask | coarse).astype(np.uint8), seam_kernel)  # the decoder's halo around the kept cells
        healed = cv2.inpaint(np.ascontiguousarray(frame), halo, band + 1, cv2.INPAINT_TELEA)
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))  # the source's own edge pixels hold its old background
        alpha = np.maximum(core, cv2.GaussianBlur(core.astype(np.float32), (0, 0), FEATHER_PX))[..., None]  # feathered outward
        out.append((alpha * src + (1 - alpha) * healed).round().clip(0, 255).astype(np.uint8))
    return np.stack(out)
