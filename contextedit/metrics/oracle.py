"""``--metrics oracle``: shapes-world clips judged by the pixel oracle of :mod:`contextedit.worlds.shapes`,
the very scorer of ``bench/quality.py``, so the benchmark and ``eval`` agree by construction;
scenes-world clips (two objects, textures) by :mod:`.scene_oracle`.

The prompt must be a shapes-world caption (``a red circle moving right on a black background``;
a style suffix after a comma is ignored; other prompts get None).
Each frame is read for colour, shape and background; with ``--source`` the edit kind is the one
attribute the prompt changes, and the oracle adds the background kept off the object's path, the
centroid error against the source (pixels) and the mask IoU of consecutive frames.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import InputError
from ..worlds import scenes, shapes
from . import scene_oracle
from .metric import Metric
from .psnr import resize_frames

ATTRIBUTES = ("colour", "shape", "background")
SOURCE_KEYS = ["oracle_success", "oracle_frames_right", "oracle_background_kept", "oracle_centroid_error", "oracle_temporal_iou",
               "oracle_leakage"]


def oracle_target(prompt: str) -> dict | None:
    """The shapes-world spec a prompt asks for; a style suffix after a comma is ignored (the oracle
    reads content, not style). None when the prompt is no shapes-world caption."""
    return shapes.parse_caption(prompt.split(",")[0])


def check_prompts(prompts: list[str]) -> None:
    """At least one prompt must be a shapes- or scenes-world caption; the others get None."""
    if not any(oracle_target(p) or scenes.parse_caption(p.split(",")[0]) for p in prompts):
        raise InputError(f"`metrics` oracle scores shapes-world and scenes-world clips; no prompt ({prompts[0]!r}…) is a caption "
                         f"like {shapes.clip_caption('circle', 'red', 'black', 'right')!r}")


def oracle_scores(frames: np.ndarray, prompt: str, source: np.ndarray | None = None) -> dict:
    """``oracle_{colour,shape,background}`` (share of frames that agree with the prompt) and, with a
    source, ``oracle_success``, ``oracle_frames_right``, ``oracle_background_kept``,
    ``oracle_centroid_error`` and ``oracle_temporal_iou``; all None for a prompt of another world.
    A scenes-world prompt is scored by :func:`.scene_oracle.scores` (with ``oracle_leakage``)."""
    count = len(frames) if source is None else min(len(frames), len(source))
    if source is not None:
        source = resize_frames(source[:count], *frames.shape[1:3])
    scene = scene_oracle.target(prompt, frames)
    if scene is not None:
        return scene_oracle.scores(frames[:count], scene, source)
    target = oracle_target(prompt)
    if target is None:
        keys = [f"oracle_{k}" for k in ATTRIBUTES] + ([] if source is None else SOURCE_KEYS)
        return dict.fromkeys(keys)
    readings = shapes.oracle_clip(frames)
    row = {f"oracle_{key}": float(np.mean([r[key] == target[key] for r in readings])) for key in ATTRIBUTES}
    if source is None:
        return row
    before = _majority(shapes.oracle_clip(source))
    changed = [key for key in ATTRIBUTES if before[key] != target[key]]
    direction = target.get("direction")
    scores = shapes.score_edit(source, frames[:count], changed[0] if len(changed) == 1 else None, target,
                               direction, stride=_stride(source) if direction else 1)
    kept = None if "background" in changed else scores.get("background_kept")  # a new background keeps nothing
    values = (float(scores["success"]), scores["frames_right"], kept, scores["motion_error_px"],
              scores["temporal_iou"], None)  # one object: nothing to leak onto
    return {**row, **dict(zip(SOURCE_KEYS, values))}


def _majority(readings: list[dict]) -> dict:
    return {key: Counter(r[key] for r in readings).most_common(1)[0][0] for key in ATTRIBUTES}


def _stride(source: np.ndarray) -> int:
    """Clip frames between consecutive frames, from the source object's motion (STEP px per clip frame)."""
    centroids = [r["centroid"] for r in shapes.oracle_clip(source) if r["centroid"]]
    moves = [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(centroids, centroids[1:])]
    return max(1, round(float(np.median(moves)) / shapes.STEP)) if moves else 1


ORACLE = Metric(
    "oracle", ("oracle_colour", "oracle_shape", "oracle_background", *SOURCE_KEYS),
    scales={
        "oracle_colour": "share of frames whose colour the oracle reads as the prompt's (scenes: every object's) (0..1)",
        "oracle_shape": "share of frames whose shape matches the prompt (scenes: every object's colour and shape) (0..1)",
        "oracle_background": "share of frames whose background matches the prompt (0..1)",
        "oracle_success": "1 when most frames show the prompt's changed attribute (bench/quality.py's success)",
        "oracle_frames_right": "share of frames right on the changed attribute",
        "oracle_background_kept": "share of background pixels off the object's path still of the source's colour",
        "oracle_centroid_error": "pixels between the edited and the source object's centroids, mean over frames",
        "oracle_temporal_iou": "IoU of consecutive object masks after the source's motion (shapes world)",
        "oracle_leakage": "scenes world: share of frames missing an object the prompt keeps (0: no leakage)",
    },
    columns={"oracle_colour": "colour", "oracle_shape": "shape", "oracle_background": "bg", "oracle_success": "success",
             "oracle_frames_right": "right", "oracle_background_kept": "bg kept", "oracle_centroid_error": "centroid px",
             "oracle_temporal_iou": "IoU", "oracle_leakage": "leak"},
    score=lambda item, backbone, ctx: oracle_scores(item.frames, item.prompt, ctx.source),
    needs_prompt=True, uses_source=True, check_items=lambda items: check_prompts([item.prompt for item in items]),
)
