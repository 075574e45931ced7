"""Clips longer than a window: the plan, the blend, bounded memory and the anchor, through the API and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from contextedit import ContextEditPipeline
from contextedit.errors import UsageError
from contextedit.pipelines.windows import WindowBlender, training_window, window_plan

from helpers import MODEL, write_clip

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"


@pytest.mark.parametrize("frames, window, overlap", [(40, 8, 2), (120, 16, 4), (17, 16, 4), (9, 8, 0), (8, 8, 2)])
def test_every_window_starts_with_the_anchor_and_the_plan_covers_the_clip(frames, window, overlap):
    plan = window_plan(frames, window, overlap)
    assert all(idx[0] == 0 and len(idx) == min(window, frames) for idx in plan)
    assert sorted({i for idx in plan for i in idx}) == list(range(frames))
    for before, after in zip(plan, plan[1:]):  # neighbours share at least `overlap` frames after the anchor
        assert len(set(before[1:]) & set(after[1:])) >= overlap and after[1] > before[1]


def test_bad_windows_are_refused():
    for window, overlap in ((1, 0), (8, 7), (8, -1)):
        with pytest.raises(UsageError):
            window_plan(40, window, overlap)


def test_the_blend_is_a_partition_of_unity():
    plan = window_plan(40, 8, 3)
    blender = WindowBlender(plan, 3, torch.zeros(8, 1))
    for k, idx in enumerate(plan):  # each window "predicts" the frame index everywhere
        blender.add(k, torch.tensor(idx, dtype=torch.float32)[:, None])
    torch.testing.assert_close(blender.result()[:, 0], torch.arange(40, dtype=torch.float32))


def test_training_windows_follow_the_seed_and_keep_the_anchor():
    draws = [training_window(40, 8, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(d[0] == 0 and len(d) == 8 and d[1:] == list(range(d[1], d[1] + 7)) for d in draws)
    assert draws == [training_window(40, 8, torch.Generator().manual_seed(s)) for s in range(20)]
    assert len({d[1] for d in draws}) > 3


@pytest.fixture(scope="module")
def long_run():
    pipe = ContextEditPipeline.from_pretrained(MODEL, device="cpu")
    yy, xx = np.mgrid[:64, :64]
    frames = np.zeros((40, 64, 64, 3), dtype=np.uint8)
    for f in range(40):
        frames[f, (yy - 32) ** 2 + (xx - 12 - f) ** 2 < 80, 0] = 220
    tuned = pipe.tune(frames, SOURCE, steps=2, window=8, checkpointing=False)
    timings = {}
    (edited,) = pipe.edit(tuned, TARGET, steps=2, overlap=2, timings=timings)  # both tests below read this edit
    return pipe, tuned, edited, timings


@pytest.mark.slow
def test_a_long_clip_edits_window_by_window_with_flat_memory(long_run):
    pipe, tuned, edited, timings = long_run
    assert tuned.settings["window"] == 8
    half = {}
    assert edited.shape == (40, 64, 64, 3) and edited.dtype == np.uint8 and timings["windows"] == 8
    short = dataclasses.replace(tuned, frames=tuned.frames[:20], latents=tuned.latents[:20], cache={})
    pipe.edit(short, TARGET, steps=2, overlap=2, timings=half)
    assert half["windows"] == 4 and half["fusion_store_mib"] == timings["fusion_store_mib"]  # set by W, not length


@pytest.mark.slow
def test_frames_before_the_first_overlap_are_the_first_windows_own(long_run):
    """Frame 0 (the anchor) and the frames only window 0 covers come from window 0 alone: the
    same as editing the first W frames as a clip of their own."""
    pipe, tuned, long, _ = long_run
    first = dataclasses.replace(tuned, frames=tuned.frames[:8], latents=tuned.latents[:8], cache={})
    (alone,) = pipe.edit(first, TARGET, steps=2, overlap=2)
    assert np.array_equal(long[:6], alone[:6])


@pytest.mark.slow
def test_cli_tunes_all_frames_in_windows_and_edits_them(tmp_path):
    from typer.testing import CliRunner

    from contextedit.cli import app
    from contextedit.runs import load_manifest

    clip = write_clip(tmp_path / "clip.mp4", frames=20)
    runner = CliRunner()
    args = ["tune", str(clip), "--prompt", SOURCE, "--frames", "all", "--stride", "1", "--window", "8", "--steps", "2",
            "--no-checkpointing", "--model", MODEL, "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    manifest = load_manifest(tmp_path / "run")
    assert manifest["frames"] == 20 and manifest["window"] == 8
    result = runner.invoke(app, ["edit", "--prompt", TARGET, "--run", str(tmp_path / "run"), "--steps", "2",
                                 "--format", "frames", "--out", str(tmp_path / "edits"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "edits").glob("*/*.png"))) == 20
    # the run's tune window, not the built-in 16 (issue 30: the CLI resolved 16 before the run was read)
    record = json.loads((tmp_path / "edits" / "edits.json").read_text())
    assert (record["settings"]["window"], record["settings"]["overlap"]) == (8, 4)
    assert record["timings"]["windows"] == len(window_plan(20, 8, 4)) != len(window_plan(20, 16, 4))
    bad = runner.invoke(app, ["tune", str(clip), "--frames", "many", "--model", MODEL, "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--frames" in bad.stderr
