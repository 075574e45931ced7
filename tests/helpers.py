"""Small builders shared by the tests: clips of the shapes world and the tiny-random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contextedit import shapes, video
from contextedit.models.loading import load_components

MODEL = "tiny-random"


def write_clip(path: Path, frames: int = 8, shape="circle", colour="red", background="black", direction="right", fps=8.0) -> Path:
    clip, _ = shapes.make_clip(shape, colour, background, direction, start=(20, 30), frames=frames)
    return video.write_video(clip, path, fps)


def tiny():
    return load_components(MODEL, "cpu", __import__("torch").float32)


def write_images(folder: Path, n: int = 4, captions: bool = True) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        spec = shapes.random_spec(rng)
        image, caption = shapes.make_image(spec["shape"], spec["colour"], spec["background"], rng=rng)
        Image.fromarray(image).save(folder / f"img{i}.png")
        if captions:
            (folder / f"img{i}.txt").write_text(caption)
    return folder
