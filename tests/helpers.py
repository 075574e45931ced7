"""Small builders shared by the tests: clips of the shapes world and the tiny-random model."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from contextedit import shapes, video
from contextedit.models.loading import load_components

MODEL = "tiny-random"
BENCH = Path(__file__).resolve().parents[1] / "bench"


@contextlib.contextmanager
def bench_script(name: str):
    """Import ``bench/<name>.py`` as a module for the duration of the block."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


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
