"""``--metrics oracle`` on scenes-world clips (:mod:`contextedit.worlds.scenes`: one or two objects,
textured and panning backgrounds): each frame read back by the scenes oracle and compared with
the prompt's caption.

A prompt is scored here when it is a scenes caption the shapes world cannot have said (two
objects, a texture) or when the frames are the scenes world's size (96 px); a one-object caption on
a plain background at 64 px stays the shapes world's. With a source clip, the objects the prompt
keeps (same colour and shape in the source and the caption) are the untouched ones: a frame where
one of them is not read back is leakage, the issue-28 measure of an edit that spilled onto the
wrong object.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from ..worlds import scenes, shapes


def target(prompt: str, frames: np.ndarray) -> dict | None:
    """The scenes caption ``prompt`` asks for (a style suffix after a comma ignored), or None when
    the prompt is not one or belongs to the shapes world."""
    text = prompt.split(",")[0]
    parsed = scenes.parse_caption(text)
    if parsed is None:
        return None
    if shapes.parse_caption(text) is not None and frames.shape[2] != scenes.SIZE:
        return None
    return parsed


def _things(parsed: dict) -> list[tuple[str, str]]:
    return sorted((t["colour"], t["shape"]) for t in parsed["things"])


def scores(frames: np.ndarray, parsed: dict, source: np.ndarray | None) -> dict:
    """Per-frame agreement (``oracle_colour``: the objects' colours, ``oracle_shape``: colour and
    shape of every object, ``oracle_background``) and, with a source, ``oracle_success`` (most
    frames right on everything), ``oracle_frames_right``, ``oracle_background_kept`` (where the
    prompt keeps the background: pixels off every object in both clips whose class is the
    source's), ``oracle_centroid_error`` (px, objects paired by least total distance),
    ``oracle_leakage`` (share of frames missing an object the prompt keeps) and
    ``oracle_temporal_iou`` (None: objects move on their own, the shapes world's shift test does
    not apply)."""
    readings = [scenes.oracle(frame) for frame in frames]
    verdicts = [scenes.agrees(r, parsed["things"], parsed["background"]) for r in readings]
    row = {"oracle_colour": _share(v["colours"] for v in verdicts), "oracle_shape": _share(v["objects"] for v in verdicts),
           "oracle_background": _share(v["background"] for v in verdicts)}
    if source is None:
        return row
    right = [v["objects"] and v["background"] for v in verdicts]
    before = [scenes.oracle(frame) for frame in source]
    kept_things = set(_majority_things(before)) & set(_things(parsed))
    leak = [not kept_things <= {(o["colour"], o["shape"]) for o in r["objects"]} for r in readings] if kept_things else None
    source_bg = Counter(r["background"] for r in before).most_common(1)[0][0]
    kept = None
    if source_bg == parsed["background"]:
        kept = float(np.mean([_background_kept(a, b) for a, b in zip(source, frames)]))
    return {**row, "oracle_success": float(np.mean(right) > 0.5), "oracle_frames_right": _share(right),
            "oracle_background_kept": kept, "oracle_centroid_error": _centroid_error(before, readings),
            "oracle_temporal_iou": None, "oracle_leakage": None if leak is None else _share(leak)}


def _share(values) -> float:
    return float(np.mean(list(values)))


def _majority_things(readings: list[dict]) -> list[tuple[str, str]]:
    counts = Counter(tuple(sorted((o["colour"], o["shape"]) for o in r["objects"])) for r in readings)
    return list(counts.most_common(1)[0][0])


def _background_kept(source: np.ndarray, edited: np.ndarray) -> float:
    a, b = scenes.classify_pixels(source), scenes.classify_pixels(edited)
    off = scenes.background_pixels(a) & scenes.background_pixels(b)
    return float((a[off] == b[off]).mean()) if off.any() else 1.0


def _centroid_error(before: list[dict], after: list[dict]) -> float | None:
    """Mean over frames of the objects' centroid distances, paired by least total distance."""
    errors = []
    for a, b in zip(before, after):
        ca, cb = [o["centroid"] for o in a["objects"]], [o["centroid"] for o in b["objects"]]
        if not ca or len(ca) != len(cb):
            continue
        errors.append(min(np.mean([np.hypot(p[0] - q[0], p[1] - q[1]) for p, q in zip(ca, perm)])
                          for perm in itertools.permutations(cb)))
    return float(np.mean(errors)) if errors else None
