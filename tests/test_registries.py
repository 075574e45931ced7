"""What grows is a record plus one registration line (issue 30): a new inversion mode built of the
registered steps runs through the edit pipeline by its fields alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from contextedit.pipelines import inversion_modes

from helpers import MODEL, write_clip

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from contextedit import ContextEditPipeline, video

    folder = tmp_path_factory.mktemp("reg")
    clip = video.read_video(write_clip(folder / "clip.mp4", frames=8), frames=2, stride=2)
    pipe = ContextEditPipeline.from_pretrained(MODEL, device="cpu")
    return pipe, pipe.tune(clip.frames, SOURCE, steps=1, checkpointing=False)


@pytest.mark.parametrize("like", ["direct", "negative-prompt"])
def test_a_registered_mode_runs_by_its_fields(run, like):
    """A copy of a mode under a new name edits exactly as the original: the pipeline reads the
    record, never the name; and the new name is a valid `inversion` at once."""
    pipe, tuned = run
    copy = inversion_modes.register(dataclasses.replace(inversion_modes.mode(like), name=f"my-{like}"))
    try:
        (mine,) = pipe.edit(tuned, TARGET, steps=3, inversion=copy.name)
        (theirs,) = pipe.edit(tuned, TARGET, steps=3, inversion=like)
    finally:
        inversion_modes.MODES.pop(copy.name)
    assert np.array_equal(mine, theirs)
    with pytest.raises(ValueError, match="inversion"):
        pipe.edit(tuned, TARGET, steps=3, inversion=copy.name)  # unregistered again: refused


def test_a_registered_model_family_is_asked_first_and_used_by_its_record(run):
    """A family registered later is asked before SD; its ``encode`` is what every pipeline reads."""
    from contextedit.models import families

    pipe, _ = run
    comps = pipe.components
    calls = []
    sd = families.family_of(comps.unet)
    assert sd.name == "sd"

    def encode(c, prompts):
        calls.append(list(prompts))
        return sd.encode(c, prompts)

    mine = families.register(dataclasses.replace(sd, name="my-sd", encode=encode))
    try:
        assert comps.family is mine
        (image,) = pipe.generate("a red circle on a black background", steps=2, seed=0)
    finally:
        families.FAMILIES.remove(mine)
    assert comps.family is sd and calls  # the prompt went through the registered family's encoder
    (again,) = pipe.generate("a red circle on a black background", steps=2, seed=0)
    assert np.array_equal(np.asarray(image), np.asarray(again))
