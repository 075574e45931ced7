"""The "scenes world": one or two coloured shapes, each moving on its own, on a plain or a
textured background that may pan. Fixed here so that anyone can make clips of it and score an
edit or a generated image with the pixel oracle below.

- frames 96×96 RGB;
- objects: circle (diameter 20 px), square (side 20 px) or triangle (side 22 px, point up),
  red / green / blue / yellow, hard edges; two objects differ in colour and in shape, and the
  first-named is drawn first (the second is in front where they overlap);
- each object moves left, right, up or down by 2 px per frame, from a start that keeps it fully
  inside the frame for the whole clip;
- backgrounds: black, white, gray (128), ``striped`` (horizontal stripes 4 px tall, gray 64 and
  192 alternating, rows 0–3 at 64) or ``checkered`` (8×8 squares of 64 and 192, the top-left 64);
- camera: a textured background may pan by 1 px per frame (its content moves that way); the
  caption does not say so;
- captions: ``a red circle moving right and a blue square moving down on a checkered background``
  (images drop the motion: ``a red circle and a blue square on a checkered background``).

Pixel (row i, column j) is centred at (x, y) = (j + 0.5, i + 0.5), as in the shapes world.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

SIZE = 96
STEP = 2      # object pixels per frame
PAN = 1       # texture pixels per frame
FRAMES = 16
MARGIN = 1    # background pixels kept between an object and the frame edge

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PLAIN: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
TEXTURES = ("striped", "checkered")
BACKGROUNDS = (*PLAIN, *TEXTURES)
DARK, LIGHT = 64, 192          # the two greys of a texture
STRIPE_HEIGHT, CHECK_SIDE = 4, 8
PERIOD = {"striped": (1, 2 * STRIPE_HEIGHT), "checkered": (2 * CHECK_SIDE, 2 * CHECK_SIDE)}  # (x, y) repeat

CIRCLE_DIAMETER, SQUARE_SIDE, TRIANGLE_SIDE = 20, 20, 22
FILL_RATIOS = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
TRIANGLE_MASS_SPLIT = 2.0
MIN_AREA = 30  # pixels of one colour below which the oracle sees no object (decoder speckle)

# Palette the oracle classifies pixels into: the plain backgrounds, the texture greys, the colours.
PALETTE_NAMES = (*PLAIN, "dark", "light", *COLOURS)
PALETTE = np.array([*PLAIN.values(), (DARK,) * 3, (LIGHT,) * 3, *COLOURS.values()], dtype=np.float32)
_FIRST_COLOUR = len(PLAIN) + 2


@dataclass(frozen=True)
class Thing:
    """One object: what it is, where it starts (integer centre x, y) and where it goes."""

    shape: str
    colour: str
    direction: str = "right"
    start: tuple[int, int] = (SIZE // 2, SIZE // 2)

    def center(self, frame: int) -> tuple[int, int]:
        vx, vy = DIRECTIONS[self.direction]
        return self.start[0] + STEP * vx * frame, self.start[1] + STEP * vy * frame


@dataclass(frozen=True)
class Scene:
    """A clip's specification: objects in drawing order, the background, and its pan (textures only)."""

    things: tuple[Thing, ...]
    background: str = "black"
    pan: str | None = None
    offset: tuple[int, int] = (0, 0)   # the texture's offset at frame 0

    def __post_init__(self):
        _check_scene(self)

    def texture_offset(self, frame: int) -> tuple[int, int]:
        vx, vy = DIRECTIONS[self.pan] if self.pan else (0, 0)
        return self.offset[0] + PAN * vx * frame, self.offset[1] + PAN * vy * frame


def _check_scene(scene: Scene) -> None:
    if not 1 <= len(scene.things) <= 2:
        raise ValueError(f"a scene holds one or two objects, not {len(scene.things)}")
    for thing in scene.things:
        _check(thing.shape, SHAPES, "shape")
        _check(thing.colour, COLOURS, "colour")
        _check(thing.direction, DIRECTIONS, "direction")
    if len(scene.things) == 2:
        a, b = scene.things
        if a.colour == b.colour or a.shape == b.shape:
            raise ValueError("two objects differ in both colour and shape")
    _check(scene.background, BACKGROUNDS, "background")
    if scene.pan is not None:
        _check(scene.pan, DIRECTIONS, "pan")
        if scene.background not in TEXTURES:
            raise ValueError("only a textured background pans")


def _check(value: str, allowed, what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# Captions


def clip_caption(scene: Scene) -> str:
    objects = " and ".join(f"a {t.colour} {t.shape} moving {t.direction}" for t in scene.things)
    return f"{objects} on a {scene.background} background"


def image_caption(things, background: str) -> str:
    """``things``: (colour, shape) pairs or :class:`Thing`s."""
    pairs = [(t.colour, t.shape) if isinstance(t, Thing) else tuple(t) for t in things]
    return " and ".join(f"a {c} {s}" for c, s in pairs) + f" on a {background} background"


_ONE = r"an? ({c}) ({s})(?: moving ({d}))?".format(c="|".join(COLOURS), s="|".join(SHAPES), d="|".join(DIRECTIONS))
_CAPTION = re.compile(rf"\s*{_ONE}(?: and {_ONE})? on an? ({'|'.join(BACKGROUNDS)}) background\.?\s*")


def parse_caption(text: str) -> dict | None:
    """``{"things": [{"colour", "shape"[, "direction"]}, …], "background"}``; None for other text."""
    found = _CAPTION.fullmatch(text.lower())
    if found is None:
        return None
    groups = found.groups()
    things = []
    for colour, shape, direction in (groups[0:3], groups[3:6]):
        if colour is not None:
            things.append({"colour": colour, "shape": shape, **({"direction": direction} if direction else {})})
    return {"things": things, "background": groups[6]}


# ---------------------------------------------------------------------------------------------
# Rendering


def shape_mask(shape: str, center: tuple[float, float], size: int = SIZE) -> np.ndarray:
    """Boolean (size, size) mask of ``shape`` centred at ``center`` = (x, y), hard edges
    (a triangle's centre is its centroid)."""
    _check(shape, SHAPES, "shape")
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = xs - center[0], ys - center[1]
    if shape == "circle":
        return dx**2 + dy**2 <= (CIRCLE_DIAMETER / 2) ** 2
    if shape == "square":
        half = SQUARE_SIDE / 2
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    height = TRIANGLE_SIDE * math.sqrt(3) / 2  # point up: apex 2h/3 above the centroid, base h/3 below
    return (dy >= -2 * height / 3) & (dy <= height / 3) & (np.abs(dx) <= (dy + 2 * height / 3) / math.sqrt(3))


def background_image(background: str, offset: tuple[int, int] = (0, 0), size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8 background; a texture's content moved by ``offset`` = (x, y) pixels."""
    _check(background, BACKGROUNDS, "background")
    if background in PLAIN:
        return np.broadcast_to(np.array(PLAIN[background], np.uint8), (size, size, 3)).copy()
    grey = np.where(_dark(background, offset, size), DARK, LIGHT).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _dark(texture: str, offset: tuple[int, int], size: int) -> np.ndarray:
    """(size, size) bool: where ``texture``, moved by ``offset``, is its dark grey."""
    rows = np.arange(size)[:, None] - offset[1]
    cols = np.arange(size)[None, :] - offset[0]
    if texture == "striped":
        return np.broadcast_to((rows // STRIPE_HEIGHT) % 2 == 0, (size, size))
    return ((rows // CHECK_SIDE) + (cols // CHECK_SIDE)) % 2 == 0


def render_frame(scene: Scene, frame: int = 0) -> np.ndarray:
    """Frame ``frame`` of ``scene``: the (panned) background, then each object in order."""
    image = background_image(scene.background, scene.texture_offset(frame))
    for thing in scene.things:
        image[shape_mask(thing.shape, thing.center(frame))] = COLOURS[thing.colour]
    return image


def make_clip(scene: Scene, frames: int = FRAMES) -> tuple[np.ndarray, str]:
    """A (frames, 96, 96, 3) uint8 clip and its caption."""
    for thing in scene.things:
        if not fits(thing, frames):
            raise ValueError(f"the {thing.colour} {thing.shape} leaves the frame within {frames} frames")
    return np.stack([render_frame(scene, f) for f in range(frames)]), clip_caption(scene)


def _extent(shape: str) -> tuple[int, int, int, int]:
    """Pixel offsets (left, right, top, bottom) of the shape's mask around an integer centre."""
    c = SIZE // 2
    rows, cols = np.nonzero(shape_mask(shape, (c, c)))
    return int(cols.min()) - c, int(cols.max()) - c, int(rows.min()) - c, int(rows.max()) - c


def start_range(shape: str, direction: str, frames: int = FRAMES) -> tuple[range, range]:
    """Integer start centres (x range, y range) that keep the object inside for ``frames`` frames."""
    left, right, top, bottom = _extent(shape)
    vx, vy = DIRECTIONS[direction]
    travel = STEP * (frames - 1)
    axis = lambda lo, hi, t: range(MARGIN - lo - min(0, t), SIZE - MARGIN - hi - max(0, t))  # noqa: E731
    return axis(left, right, vx * travel), axis(top, bottom, vy * travel)


def fits(thing: Thing, frames: int = FRAMES) -> bool:
    xs, ys = start_range(thing.shape, thing.direction, frames)
    return thing.start[0] in xs and thing.start[1] in ys


def random_scene(rng: np.random.Generator, objects: int | None = None, frames: int = FRAMES,
                 background: str | None = None, apart: float | None = None) -> Scene:
    """A random valid scene. ``objects`` 1 or 2 (random when None); ``apart``: the two objects'
    centres stay at least this many pixels apart in every frame (None: any layout)."""
    objects = objects or int(rng.integers(1, 3))
    shapes = [str(s) for s in rng.permutation(SHAPES)[:objects]]
    colours = [str(c) for c in rng.permutation(list(COLOURS))[:objects]]
    background = background or str(rng.choice(BACKGROUNDS))
    textured = background in TEXTURES
    pan = str(rng.choice([None, *DIRECTIONS])) if textured else None
    pan = None if pan == "None" else pan
    period = PERIOD.get(background, (1, 1))
    offset = (int(rng.integers(period[0])), int(rng.integers(period[1]))) if textured else (0, 0)
    for _ in range(1000):
        things = []
        for shape, colour in zip(shapes, colours):
            direction = str(rng.choice(list(DIRECTIONS)))
            xs, ys = start_range(shape, direction, frames)
            things.append(Thing(shape, colour, direction, (int(rng.choice(xs)), int(rng.choice(ys)))))
        if apart is None or len(things) == 1 or all(
                math.dist(things[0].center(f), things[1].center(f)) >= apart for f in range(frames)):
            return Scene(tuple(things), background, pan, offset)
    raise ValueError(f"no layout keeps two objects {apart} px apart for {frames} frames")


def random_image(rng: np.random.Generator, objects: int | None = None) -> tuple[np.ndarray, str]:
    """A single frame anywhere in the world, and its image caption (training data for ``tiny-scenes``)."""
    scene = random_scene(rng, objects, frames=1)
    return render_frame(scene, 0), image_caption(scene.things, scene.background)


# ---------------------------------------------------------------------------------------------
# The pixel oracle


def classify_pixels(frame: np.ndarray) -> np.ndarray:
    """Index into ``PALETTE_NAMES`` of the nearest palette colour, per pixel: (H, W) int."""
    rgb = np.asarray(frame, dtype=np.float32)[..., :3]
    return ((rgb[..., None, :] - PALETTE) ** 2).sum(-1).argmin(-1)


def _shape_of(mask: np.ndarray) -> str:
    """The shape whose fill ratio (area / bounding box) is nearest; bottom-heavy masks are triangles
    (a decoder blurs a triangle's apex, which moves its fill ratio but not its mass split)."""
    rows, cols = np.nonzero(mask)
    top, bottom = rows.min(), rows.max()
    fill = len(rows) / ((bottom - top + 1) * (cols.max() - cols.min() + 1))
    middle = (top + bottom) / 2
    if (rows > middle).sum() >= TRIANGLE_MASS_SPLIT * max((rows < middle).sum(), 1):
        return "triangle"
    return min(FILL_RATIOS, key=lambda name: abs(FILL_RATIOS[name] - fill))


def read_object(classes: np.ndarray, region: np.ndarray | None = None) -> dict | None:
    """The object inside ``region`` (all of the frame when None): its majority colour, that
    colour's mask there, its shape and centroid. None when no colour has MIN_AREA pixels."""
    inside = classes >= _FIRST_COLOUR
    if region is not None:
        inside &= region
    counts = np.bincount(classes[inside], minlength=len(PALETTE_NAMES))[_FIRST_COLOUR:]
    if counts.max(initial=0) < MIN_AREA:
        return None
    colour = int(counts.argmax())
    mask = inside & (classes == _FIRST_COLOUR + colour)
    rows, cols = np.nonzero(mask)
    return {"colour": tuple(COLOURS)[colour], "shape": _shape_of(mask), "mask": mask, "area": int(mask.sum()),
            "centroid": (float(cols.mean() + 0.5), float(rows.mean() + 0.5))}


def read_objects(classes: np.ndarray) -> list[dict]:
    """Every object of the frame: each connected part of one colour with at least MIN_AREA pixels,
    largest first."""
    import cv2

    found = []
    for k, colour in enumerate(COLOURS):
        mask = (classes == _FIRST_COLOUR + k).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] >= MIN_AREA:
                part = labels == label
                rows, cols = np.nonzero(part)
                found.append({"colour": colour, "shape": _shape_of(part), "mask": part, "area": int(part.sum()),
                              "centroid": (float(cols.mean() + 0.5), float(rows.mean() + 0.5))})
    return sorted(found, key=lambda o: -o["area"])


def texture_match(classes: np.ndarray, background: str, offset: tuple[int, int], where: np.ndarray) -> float:
    """Share of the pixels ``where`` whose class is the one ``background`` has there at ``offset``."""
    if not where.any():
        return 1.0
    # a texture has only its two greys, whose classes are known: no need to classify its image
    expected = np.where(_dark(background, offset, classes.shape[0]), PALETTE_NAMES.index("dark"), PALETTE_NAMES.index("light"))
    return float((classes[where] == expected[where]).mean())


def background_pixels(classes: np.ndarray) -> np.ndarray:
    """Where a frame's classes (:func:`classify_pixels`) are of no object colour."""
    return classes < _FIRST_COLOUR


def read_background(classes: np.ndarray, where: np.ndarray | None = None) -> dict:
    """The background kind off the objects (``where``: the pixels to read; default every pixel of no
    object colour), the texture's offset, and the share of those pixels that match it."""
    where = background_pixels(classes) if where is None else where
    counts = np.bincount(classes[where], minlength=len(PALETTE_NAMES))
    dark, light = PALETTE_NAMES.index("dark"), PALETTE_NAMES.index("light")
    if counts[dark] + counts[light] <= counts[:len(PLAIN)].max(initial=0):
        index = int(counts[:len(PLAIN)].argmax())
        share = float(counts[index] / max(1, where.sum()))
        return {"background": PALETTE_NAMES[index], "offset": None, "match": share}
    best = ("striped", (0, 0), -1.0)
    for kind in TEXTURES:
        px, py = PERIOD[kind]
        for oy in range(py):
            for ox in range(px):
                share = texture_match(classes, kind, (ox, oy), where)
                if share > best[2]:
                    best = (kind, (ox, oy), share)
    return {"background": best[0], "offset": best[1], "match": best[2]}


def oracle(frame: np.ndarray) -> dict:
    """One frame read back: ``objects`` (colour, shape, centroid, mask, area; largest first) and the
    ``background`` with its texture ``offset`` and ``match`` share."""
    classes = classify_pixels(frame)
    return {"objects": read_objects(classes), **read_background(classes)}


def agrees(reading: dict, things, background: str) -> dict[str, bool]:
    """Does a reading show exactly these objects ((colour, shape) pairs, any order) and background?"""
    want = sorted((t["colour"], t["shape"]) if isinstance(t, dict) else tuple(t) for t in things)
    got = sorted((o["colour"], o["shape"]) for o in reading["objects"])
    return {"objects": got == want, "colours": sorted(c for c, _ in got) == sorted(c for c, _ in want),
            "background": reading["background"] == background}
