"""The scenes world (issue 28): its renderer and its pixel oracle agree on every kind of scene."""

from __future__ import annotations

import numpy as np
import pytest

from contextedit.worlds import scenes


def test_every_random_scene_is_read_back_by_the_oracle():
    rng = np.random.default_rng(0)
    for objects in (1, 2):
        for background in scenes.BACKGROUNDS:
            scene = scenes.random_scene(rng, objects=objects, background=background)
            clip, caption = scenes.make_clip(scene, frames=4)
            assert caption == scenes.clip_caption(scene)
            parsed = scenes.parse_caption(caption)
            assert parsed["background"] == background and len(parsed["things"]) == objects
            for frame in clip:
                verdict = scenes.agrees(scenes.oracle(frame), [(t.colour, t.shape) for t in scene.things], background)
                assert all(verdict.values()), (caption, verdict)


def test_a_pan_moves_the_texture_and_not_the_objects():
    thing = scenes.Thing("circle", "red", "right", (30, 48))
    scene = scenes.Scene((thing,), "checkered", pan="down")
    a, b = scenes.render_frame(scene, 0), scenes.render_frame(scene, 1)
    ra, rb = scenes.oracle(a), scenes.oracle(b)
    assert (rb["objects"][0]["centroid"][0] - ra["objects"][0]["centroid"][0]) == pytest.approx(scenes.STEP, abs=0.01)
    # the texture's content moved down by one pixel: row r of frame 1 is row r − 1 of frame 0, away from the object
    assert np.array_equal(b[1:, 70:], a[:-1, 70:])


def test_bad_scenes_are_refused():
    with pytest.raises(ValueError):
        scenes.Scene((scenes.Thing("circle", "red"), scenes.Thing("circle", "blue")))  # two circles
    with pytest.raises(ValueError):
        scenes.Scene((scenes.Thing("circle", "red"),), "black", pan="left")             # a plain background cannot pan
