"""The Python API in memory: ContextEditPipeline.tune / edit / generate / video_unet and TunedClip,
on tiny-random, with no run folder — and without side effects on the caller's world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contextedit import ContextAdapter, ContextEditPipeline, TunedClip
from contextedit.errors import UsageError
from contextedit.models.inflate import is_inflated

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"


def clip_frames(frames: int = 4, size: int = 64) -> np.ndarray:
    """A red disc moving right on black, uint8 (F, H, W, 3)."""
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        out[f, (yy - size // 2) ** 2 + (xx - 16 - 6 * f) ** 2 < 100, 0] = 220
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One pipeline and one tune, watched: the working folder, the RNG and the components."""
    import os

    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        rng = torch.random.get_rng_state()  # before loading: building tiny-random must not reseed it either
        pipe = ContextEditPipeline.from_pretrained("tiny-random", device="cpu")
        unet = pipe.components.unet
        before = {k: v.clone() for k, v in unet.state_dict().items()}
        processors = {k: type(p) for k, p in unet.attn_processors.items()}
        frames = clip_frames()
        tuned = pipe.tune(frames, SOURCE, steps=2, lr=1e-3, checkpointing=False)
        edits = pipe.edit(tuned, [TARGET, SOURCE], steps=3)
        images = pipe.generate(SOURCE, n=2, steps=2, seed=5)
        watched = {"rng_same": torch.equal(rng, torch.random.get_rng_state()), "cwd_files": sorted(os.listdir(cwd)),
                   "weights_same": all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items()),
                   "keys_same": set(before) == set(unet.state_dict()),
                   "processors_same": processors == {k: type(p) for k, p in unet.attn_processors.items()}}
    finally:
        os.chdir(old)
    return pipe, frames, tuned, edits, images, watched


def test_top_level_names():
    import contextedit

    assert {"ContextEditPipeline", "TunedClip", "ContextAdapter"} <= set(contextedit.__all__)


def test_tune_holds_the_clip_in_memory(world):
    pipe, frames, tuned, *_ = world
    assert isinstance(tuned, TunedClip) and isinstance(tuned.adapter, ContextAdapter)
    assert tuned.frames is frames and tuned.num_frames == 4 and tuned.size == (64, 64)  # every frame, as given
    assert tuned.latents.shape == (4, 4, 16, 16) and tuned.tuned and len(tuned.losses) == 2
    assert tuned.settings["steps"] == 2 and tuned.prompt == SOURCE and tuned.model == "tiny-random"


def test_no_side_effects(world):
    *_, watched = world
    assert watched == {"rng_same": True, "cwd_files": [], "weights_same": True, "keys_same": True, "processors_same": True}
    pipe = world[0]
    assert not is_inflated(pipe.components.unet)


def test_edit_returns_one_uint8_clip_per_prompt_deterministically(world):
    pipe, frames, tuned, edits, *_ = world
    assert len(edits) == 2 and all(e.dtype == np.uint8 and e.shape == frames.shape for e in edits)
    again = pipe.edit(tuned, TARGET, steps=3)
    assert len(again) == 1 and np.array_equal(again[0], edits[0])


def test_generate_returns_pil_images(world):
    pipe, *_, images, _ = world
    assert len(images) == 2 and all(isinstance(i, Image.Image) and i.size == (64, 64) for i in images)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))  # seeds 5 and 6
    assert np.array_equal(np.asarray(pipe.generate(SOURCE, steps=2, seed=6)[0]), np.asarray(images[1]))


def test_video_unet_has_the_tuned_weights(world):
    pipe, _, tuned, *_ = world
    unet = pipe.video_unet(tuned)
    assert is_inflated(unet)
    state = unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tuned.tuned.items())


def test_tuned_clip_saves_and_loads(world, tmp_path):
    pipe, frames, tuned, edits, *_ = world
    folder = tuned.save(tmp_path / "run")
    loaded = TunedClip.load(folder)
    assert loaded.prompt == SOURCE and loaded.num_frames == 4 and torch.equal(loaded.latents, tuned.latents)
    assert all(torch.equal(loaded.tuned[k], v) for k, v in tuned.tuned.items())
    assert (folder / "adapter" / "config.json").is_file()
    assert loaded.frames is None  # editing reads the latents: the clip is decoded only when asked
    assert loaded.source_frames().shape == frames.shape and loaded.size == (64, 64)
    assert np.array_equal(pipe.edit(loaded, TARGET, steps=3)[0], edits[0])
    with pytest.raises(Exception, match="exists"):
        tuned.save(folder)  # never over an existing folder unless asked


def test_without_adapter(world):
    pipe, frames, *_ = world
    tuned = pipe.tune(frames, SOURCE, steps=1, adapter=False, checkpointing=False)
    assert tuned.adapter is None


def test_bad_arguments_are_value_errors_that_name_no_flag(world):
    pipe, frames, tuned, *_ = world
    cases = [lambda: pipe.tune(frames.astype(np.float32), SOURCE, steps=1),
             lambda: pipe.tune(frames, SOURCE, steps=0),
             lambda: pipe.edit(tuned, [TARGET], guidance=float("nan")),
             lambda: pipe.edit(tuned, []),
             lambda: pipe.generate(SOURCE, sampler="euler")]
    for case in cases:
        with pytest.raises(ValueError) as info:
            case()
        assert isinstance(info.value, UsageError) and "--" not in str(info.value)
