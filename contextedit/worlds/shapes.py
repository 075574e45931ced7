"""The synthetic "shapes world": clips of one coloured shape moving on a plain background.

Everything is fixed here so that anyone can make test clips of it and check a generated or
edited frame with a pixel oracle instead of a learned metric:

- frames are 64x64 RGB; background black, white or gray;
- one object: circle (diameter 20 px), square (side 20 px) or triangle (side 22 px, point up),
  filled with red, green, blue or yellow, drawn with hard edges;
- it moves left, right, up or down by 2 px per frame, from a start that keeps it fully inside
  the frame for the whole clip;
- caption ``a {colour} {shape} moving {direction} on a {background} background`` (images drop
  ``moving {direction}``).

Coordinates are continuous with pixel (row i, column j) centred at (x, y) = (j + 0.5, i + 0.5),
so a shape centred on an integer point is rendered symmetrically and the oracle's centroid of a
circle or square equals that point exactly. A triangle's ``center`` is its centroid.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

from . import scenes

SIZE = 64
STEP = 2  # pixels per frame
FRAMES = 16
MARGIN = 1  # pixels of background kept between the object and the frame edge

BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

CIRCLE_DIAMETER = 20
SQUARE_SIDE = 20
TRIANGLE_SIDE = 22
# Area / bounding-box area of each shape: the oracle names the shape by the nearest one.
FILL_RATIOS = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
TRIANGLE_MASS_SPLIT = 2.0  # lower-half / upper-half mask pixels above which a mask is a triangle

PALETTE_NAMES = tuple(BACKGROUNDS) + tuple(COLOURS)
PALETTE = np.array([*BACKGROUNDS.values(), *COLOURS.values()], dtype=np.float32)


def clip_caption(shape: str, colour: str, background: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction} on a {background} background"


def image_caption(shape: str, colour: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def parse_caption(text: str) -> dict[str, str] | None:
    """``{shape, colour, background[, direction]}`` of a clip or image caption; None for other text."""
    words = "|".join
    found = re.fullmatch(
        rf"\s*an? ({words(COLOURS)}) ({words(SHAPES)})(?: moving ({words(DIRECTIONS)}))? on an? ({words(BACKGROUNDS)}) background\.?\s*",
        text.lower())
    if found is None:
        return None
    spec = dict(zip(("colour", "shape", "direction", "background"), found.groups()))
    return {k: v for k, v in spec.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Rendering


def shape_mask(shape: str, center: tuple[float, float]) -> np.ndarray:
    """Boolean (64, 64) mask of ``shape`` centred at ``center`` = (x, y), hard edges: the scenes
    world's shapes (the same sizes), on this world's frame."""
    return scenes.shape_mask(shape, center, SIZE)


def render_frame(shape: str, colour: str, background: str, center: tuple[float, float]) -> np.ndarray:
    """One (64, 64, 3) uint8 frame: ``shape`` filled with ``colour`` at ``center`` on ``background``."""
    _check(colour, COLOURS, "colour")
    _check(background, BACKGROUNDS, "background")
    frame = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    frame[:] = BACKGROUNDS[background]
    frame[shape_mask(shape, center)] = COLOURS[colour]
    return frame


@lru_cache(maxsize=None)
def _extent(shape: str) -> tuple[int, int, int, int]:
    """Pixel offsets (left, right, top, bottom) of the shape's mask from an integer centre."""
    c = SIZE // 2
    rows, cols = np.nonzero(shape_mask(shape, (c, c)))
    return int(cols.min()) - c, int(cols.max()) - c, int(rows.min()) - c, int(rows.max()) - c


def start_range(shape: str, direction: str, frames: int = FRAMES) -> tuple[range, range]:
    """Integer start centres (x range, y range) that keep the object inside for ``frames`` frames."""
    _check(direction, DIRECTIONS, "direction")
    left, right, top, bottom = _extent(shape)
    vx, vy = DIRECTIONS[direction]
    travel = STEP * (frames - 1)
    xs = _axis_range(left, right, vx * travel)
    ys = _axis_range(top, bottom, vy * travel)
    if not xs or not ys:
        raise ValueError(f"a {shape} moving {direction} cannot stay inside a {SIZE}px frame for {frames} frames")
    return xs, ys


def _axis_range(lo: int, hi: int, travel: int) -> range:
    """Centres c with c + lo + min(0, travel) >= MARGIN and c + hi + max(0, travel) <= SIZE-1-MARGIN."""
    return range(MARGIN - lo - min(0, travel), SIZE - MARGIN - hi - max(0, travel))


def make_clip(
    shape: str, colour: str, background: str, direction: str,
    start: tuple[int, int] | None = None, frames: int = FRAMES, rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, str]:
    """A (frames, 64, 64, 3) uint8 clip and its caption; a random valid ``start`` when None."""
    xs, ys = start_range(shape, direction, frames)
    if start is None:
        rng = rng if rng is not None else np.random.default_rng(0)
        start = (int(rng.choice(xs)), int(rng.choice(ys)))
    vx, vy = DIRECTIONS[direction]
    clip = np.stack([
        render_frame(shape, colour, background, (start[0] + STEP * vx * f, start[1] + STEP * vy * f))
        for f in range(frames)
    ])
    return clip, clip_caption(shape, colour, background, direction)


def make_image(
    shape: str, colour: str, background: str,
    center: tuple[int, int] | None = None, rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, str]:
    """A single (64, 64, 3) uint8 frame anywhere inside the frame, and its image caption."""
    if center is None:
        xs, ys = start_range(shape, "right", frames=1)
        rng = rng if rng is not None else np.random.default_rng(0)
        center = (int(rng.choice(xs)), int(rng.choice(ys)))
    return render_frame(shape, colour, background, center), image_caption(shape, colour, background)


def random_spec(rng: np.random.Generator) -> dict[str, str]:
    """Random ``shape, colour, background, direction`` keywords for :func:`make_clip`."""
    return {
        "shape": str(rng.choice(SHAPES)),
        "colour": str(rng.choice(list(COLOURS))),
        "background": str(rng.choice(list(BACKGROUNDS))),
        "direction": str(rng.choice(list(DIRECTIONS))),
    }


def _check(value: str, allowed, what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# The pixel oracle


def classify_pixels(frame: np.ndarray) -> np.ndarray:
    """Index into ``PALETTE_NAMES`` of the nearest palette colour, per pixel: (H, W) int."""
    rgb = np.asarray(frame, dtype=np.float32)[..., :3]
    dist = ((rgb[..., None, :] - PALETTE) ** 2).sum(-1)
    return dist.argmin(-1)


def oracle(frame: np.ndarray) -> dict:
    """Read background, colour, shape, centroid (x, y), mask and area off one RGB frame.

    Background is the most common class on the frame border; the object is every other pixel
    but specks of at most ``SPECK_PX`` (:func:`without_specks`);
    its colour is the majority object colour inside it; its shape is the one whose fill ratio
    (area / bounding-box area) is nearest, or a triangle when the mask is bottom-heavy. Fields are None when no object is found.
    """
    classes = classify_pixels(frame)
    border = np.concatenate([classes[0], classes[-1], classes[1:-1, 0], classes[1:-1, -1]])
    background = int(np.bincount(border, minlength=len(PALETTE_NAMES)).argmax())
    mask = without_specks(classes != background)
    area = int(mask.sum())
    result = {"background": PALETTE_NAMES[background], "colour": None, "shape": None, "centroid": None, "mask": mask, "area": area}
    if area == 0:
        return result
    counts = np.bincount(classes[mask], minlength=len(PALETTE_NAMES))[len(BACKGROUNDS):]
    if counts.any():
        result["colour"] = tuple(COLOURS)[int(counts.argmax())]
    rows, cols = np.nonzero(mask)
    result["shape"] = _shape_of(rows, cols)
    result["centroid"] = (float(cols.mean() + 0.5), float(rows.mean() + 0.5))
    return result


# Decoded frames carry specks of a few pixels at their edges (a one-pixel corner of another
# palette class moved a square's box to the frame's corner: read as a triangle); the smallest
# object the world draws is over 100 px.
SPECK_PX = 4


def without_specks(mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) bool without its 8-connected components of at most ``SPECK_PX`` pixels."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] <= SPECK_PX)
    small = small[small != 0]  # label 0 is the background
    return mask & ~np.isin(labels, small) if len(small) else mask


def _shape_of(rows: np.ndarray, cols: np.ndarray) -> str:
    """The shape whose fill ratio is nearest; bottom-heavy masks are triangles.

    A decoder blurs a triangle's apex away, which shortens its box and pushes its fill ratio
    toward a circle's; the mass split between the box's halves (3:1 for a triangle pointing up,
    1:1 for a circle or square) survives that blur.
    """
    top, bottom = rows.min(), rows.max()
    fill = len(rows) / ((bottom - top + 1) * (cols.max() - cols.min() + 1))
    middle = (top + bottom) / 2
    lower, upper = (rows > middle).sum(), (rows < middle).sum()
    if lower >= TRIANGLE_MASS_SPLIT * max(upper, 1):
        return "triangle"
    return min(FILL_RATIOS, key=lambda name: abs(FILL_RATIOS[name] - fill))


def grow_mask(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` (…, H, W) grown by ``r`` pixels in every direction (a square neighbourhood)."""
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(mask, (dy, dx), axis=(-2, -1))
    return out


def oracle_clip(frames: np.ndarray) -> list[dict]:
    """:func:`oracle` on each frame of a (F, H, W, 3) clip."""
    return [oracle(frame) for frame in frames]


def agrees(reading: dict, shape: str, colour: str, background: str) -> dict[str, bool]:
    """Which of shape, colour and background an oracle reading gets right."""
    return {
        "shape": reading["shape"] == shape,
        "colour": reading["colour"] == colour,
        "background": reading["background"] == background,
    }


FLAT = 24  # levels of 255 per channel: a background this close to its colour reads as flat on a sheet


def score_edit(source: np.ndarray, edited: np.ndarray, kind: str | None, target: dict, direction: str | None = None,
               target_frames: np.ndarray | None = None, stride: int = 1) -> dict:
    """The oracle's verdict on an edit of a shapes-world clip (the quality benchmark's and ``eval``'s scorer).

    ``kind`` is the attribute the edit changes (colour, shape or background; several joined by "+"
    for a multiple edit; None: judge all three against ``target``). A background edit also gets
    ``object_kept``: the share of frames whose object keeps its colour and shape within 1.5 px, and
    its frame is right only where both hold; ``background_flat``: the share of background pixels off
    the object's path within ``FLAT`` levels of the target colour (textures and ghosts).
    ``frames_right`` is the share of edited frames whose reading agrees;
    ``background_kept`` the share of background pixels off the object's path (the source's masks,
    and ``target_frames``' when given, grown by 2 px) still of the source's background colour;
    ``motion_error_px`` the mean centroid distance to the source; ``temporal_iou`` the IoU of
    consecutive edited masks after moving the earlier one by the clip's motion (``direction`` known).
    """
    src, out = oracle_clip(source), oracle_clip(edited)
    keys = tuple(kind.split("+")) if kind else ("colour", "shape", "background")
    hits = [all(reading[k] == target[k] for k in keys) for reading in out]
    masks = [r["mask"] for r in src] + ([r["mask"] for r in oracle_clip(target_frames)] if target_frames is not None else [])
    scores = {}
    if keys == ("background",):  # the object must stay as it was: colour, shape, and place within 1.5 px
        kept = [o["colour"] == s["colour"] and o["shape"] == s["shape"] and bool(o["centroid"]) and bool(s["centroid"])
                and math.hypot(o["centroid"][0] - s["centroid"][0], o["centroid"][1] - s["centroid"][1]) <= 1.5
                for o, s in zip(out, src)]
        scores["object_kept"] = float(np.mean(kept))
        # a frame is right only with its object kept: a new background drawn with a ghost or a
        # repainted object in it is not the edit asked for (issue 27)
        hits = [h and k for h, k in zip(hits, kept)]
        # off the object's path, the share of pixels within FLAT of the target's colour: textures
        # and ghosts the background reading (a majority colour) lets through
        path = grow_mask(np.any(masks, axis=0), 2)
        colour = PALETTE[PALETTE_NAMES.index(target["background"])]
        scores["background_flat"] = float(np.mean([
            (np.abs(np.asarray(frame, np.float32)[..., :3] - colour).max(-1)[~path] <= FLAT).mean() for frame in edited]))
    scores = {"success": float(np.mean(hits)) > 0.5, "frames_right": float(np.mean(hits)), **scores}
    if not kind or "background" not in keys:
        path = grow_mask(np.any(masks, axis=0), 2)
        background_index = PALETTE_NAMES.index(src[0]["background"])
        kept = [(classify_pixels(frame)[~path] == background_index).mean() for frame in edited]
        scores["background_kept"] = float(np.mean(kept))
    errors = [math.hypot(o["centroid"][0] - s["centroid"][0], o["centroid"][1] - s["centroid"][1])
              for o, s in zip(out, src) if o["centroid"] and s["centroid"]]
    scores["motion_error_px"] = float(np.mean(errors)) if errors else None
    scores["temporal_iou"] = None
    if direction is not None:
        # consecutive edited frames are ``stride`` clip frames apart: the object moved STEP·stride px
        dx, dy = (STEP * stride * v for v in DIRECTIONS[direction])
        ious = [_iou(np.roll(a["mask"], (dy, dx), axis=(0, 1)), b["mask"]) for a, b in zip(out, out[1:])]
        scores["temporal_iou"] = float(np.mean(ious)) if ious else None
    return scores


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0
