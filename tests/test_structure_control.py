"""ControlNet structure control (issue 20): conditions per frame, the ControlNet's residuals in the
inflated UNet's every call (inversion and sampling), recorded in the run and used by edit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_clip
from PIL import Image
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.models.controlnet import load_controlnet
from contextedit.models.loading import load_components
from contextedit.pipelines.structure import canny, controlled
from contextedit.testing import shapes
from contextedit.video import read_video

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]


def cli(*args, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.stderr
    return result.stderr


pytestmark = pytest.mark.usefixtures("runs")


def test_canny_marks_the_outline_only():
    clip, _ = shapes.make_clip("circle", "red", "black", "right", start=(20, 30), frames=2)
    edges = canny(clip)
    assert edges.shape == clip.shape and edges.dtype == np.uint8
    inside = shapes.grow_mask(shapes.oracle(clip[0])["mask"], 1) & ~shapes.grow_mask(~shapes.oracle(clip[0])["mask"], 2)
    assert edges[0].any() and not edges[0][inside].any()  # edges at the boundary, none deep inside or in the background


def test_residuals_enter_every_unet_call_for_whole_copies_of_the_frames():
    comps = load_components("tiny-random")
    controlnet = load_controlnet("tiny-random", comps)
    x, t = torch.randn(6, 4, 16, 16), torch.tensor(500)
    states = torch.randn(6, 77, 32)
    cond = torch.rand(3, 3, 64, 64)
    plain = comps.unet(x, t, encoder_hidden_states=states).sample
    with controlled(comps.unet, controlnet, cond, 1.0):
        steered = comps.unet(x, t, encoder_hidden_states=states).sample
    down, mid = controlnet(x, t, encoder_hidden_states=states, controlnet_cond=cond.repeat(2, 1, 1, 1), return_dict=False)
    by_hand = comps.unet(x, t, encoder_hidden_states=states, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
    assert torch.equal(steered, by_hand) and not torch.equal(steered, plain)
    assert torch.equal(comps.unet(x, t, encoder_hidden_states=states).sample, plain)  # the hook is gone after the block
    with controlled(comps.unet, controlnet, cond, 0.0):
        assert torch.equal(comps.unet(x, t, encoder_hidden_states=states).sample, plain)


@pytest.mark.slow
def test_tune_records_the_control_and_edit_uses_it(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    run = tmp_path / "run"
    cli("tune", clip, "--model", "tiny-random", "--prompt", SOURCE, "--frames", "4", "--steps", "2", "--out", run,
        "--control", "canny", "--controlnet", "tiny-random", *CPU)
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["control"], manifest["controlnet"]) == ("canny", "tiny-random")

    def edit(name: str, *extra) -> np.ndarray:
        cli("edit", "--run", run, "--prompt", TARGET, "--steps", "3", "--format", "frames", "--out", tmp_path / name, *extra, *CPU)
        record = json.loads((tmp_path / name / "edits.json").read_text())["settings"]
        (folder,) = [p for p in (tmp_path / name).iterdir() if p.is_dir()]
        return record, read_video(folder, frames=4, stride=1).frames

    record, steered = edit("steered")
    assert (record["control"], record["controlnet"], record["control_scale"]) == ("canny", "tiny-random", 1.0)
    none_record, plain = edit("plain", "--control", "none")
    assert none_record["controlnet"] is None and not np.array_equal(steered, plain)
    _, zero = edit("zero", "--control-scale", "0")
    assert np.array_equal(zero, plain)  # zero-weighted residuals add nothing
    # a folder of the same canny images is used as given: the same edit
    folder = tmp_path / "edges"
    folder.mkdir()
    for i, image in enumerate(canny(read_video(run / "source-frames", frames=4, stride=1).frames)):  # the frames as tuned
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    _, from_folder = edit("folder", "--control", folder)
    assert np.array_equal(from_folder, steered)


def test_depth_conditions_come_from_the_depth_model(tmp_path):
    from contextedit.pipelines.structure import depth

    clip, _ = shapes.make_clip("circle", "red", "black", "right", start=(20, 30), frames=2)
    maps = depth(clip, "tiny")
    assert maps.shape == clip.shape and maps.dtype == np.uint8 and maps.max() == 255 and maps.min() == 0
    run = tmp_path / "run"
    cli("tune", write_clip(tmp_path / "clip.mp4", frames=8), "--model", "tiny-random", "--prompt", SOURCE, "--frames", "4",
        "--steps", "1", "--out", run, "--control", "depth", "--controlnet", "tiny-random", "--depth-model", "tiny", *CPU)
    assert json.loads((run / "manifest.json").read_text())["depth_model"] == "tiny"
    cli("edit", "--run", run, "--prompt", TARGET, "--steps", "2", "--format", "frames", "--out", tmp_path / "e", *CPU)


def test_windows_take_their_own_frames_conditions(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=12)
    run = tmp_path / "run"
    cli("tune", clip, "--model", "tiny-random", "--prompt", SOURCE, "--frames", "6", "--steps", "1", "--window", "4",
        "--out", run, "--control", "canny", "--controlnet", "tiny-random", *CPU)
    cli("edit", "--run", run, "--prompt", TARGET, "--steps", "2", "--format", "frames", "--out", tmp_path / "e", *CPU)
    (folder,) = [p for p in (tmp_path / "e").iterdir() if p.is_dir()]
    assert len(list(folder.glob("*.png"))) == 6


def _foreign_controlnet(tmp_path: Path) -> Path:
    from contextedit.testing.tiny import tiny_controlnet, tiny_unet

    folder = tmp_path / "foreign-controlnet"
    tiny_controlnet(tiny_unet(cross_attention_dim=48)).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("extra, words", [
    (["--control", "canny"], ["--controlnet"]),
    (["--controlnet", "tiny-random"], ["--control"]),
    (["--control", "sketch", "--controlnet", "tiny-random"], ["--control", "canny, depth, pose"]),
    (["--control", "FOREIGN"], ["another base model", "cross_attention_dim"]),
    (["--control", "pose", "--controlnet", "tiny-random"], ["controlnet_aux"]),
    (["--control", "depth", "--controlnet", "tiny-random"], ["--depth-model", "hugging face cache"]),
    (["--control", "FOLDER3", "--controlnet", "tiny-random"], ["3 images", "4 frames"]),
    (["--control", "none", "--controlnet", "tiny-random"], ["--control none", "drop --controlnet"]),
])
def test_bad_control_options_are_refused_before_tuning(tmp_path, extra, words):
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    if "FOREIGN" in extra:
        extra = ["--control", "canny", "--controlnet", _foreign_controlnet(tmp_path)]
    if "FOLDER3" in extra:
        (tmp_path / "three").mkdir()
        for i in range(3):
            Image.new("RGB", (64, 64)).save(tmp_path / "three" / f"{i}.png")
        extra = [tmp_path / "three" if a == "FOLDER3" else a for a in extra]
    stderr = cli("tune", clip, "--model", "tiny-random", "--prompt", SOURCE, "--frames", "4", "--steps", "1",
                 "--out", tmp_path / "run", *extra, *CPU, code=2)
    line = stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("Error: "), stderr
    for word in words:
        assert word.lower() in line[0].lower(), (word, line[0])
    assert not (tmp_path / "run").exists()


def test_edit_refuses_a_negative_control_scale(tmp_path):
    stderr = cli("edit", "--prompt", TARGET, "--control-scale", "-1", *CPU, code=2)
    assert "--control-scale" in stderr


def test_edit_refuses_a_control_without_a_controlnet(tmp_path):
    run = tmp_path / "run"
    cli("tune", write_clip(tmp_path / "clip.mp4", frames=8), "--model", "tiny-random", "--prompt", SOURCE, "--frames", "4",
        "--steps", "1", "--out", run, *CPU)
    stderr = cli("edit", "--run", run, "--prompt", TARGET, "--steps", "2", "--control", "canny", "--out", tmp_path / "e", *CPU, code=2)
    assert stderr.startswith("Error: ") and "--controlnet" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_tune_records_a_control_folder_by_its_absolute_path(tmp_path):
    from contextedit.pipelines.tuning import TuneSettings

    (tmp_path / "edges").mkdir()
    settings = TuneSettings(control="edges", controlnet="tiny-random")  # the cwd is tmp_path
    settings.validate()
    assert settings.control == str((tmp_path / "edges").resolve())  # resolved, as a symlinked tmp would be


def test_null_text_cache_key_tells_structure_controls_apart():
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.pipelines.editing import _null_text

    class Spy:  # a cache that has every key: it records which ones were asked for
        def __init__(self):
            self.keys = []

        def get(self, key):
            self.keys.append(key)
            return [torch.zeros(1)]

    spy, base = Spy(), dict(steps=2, guidance=5.0, null_text_steps=1)
    for opts in (EditSettings(**base), EditSettings(**base, control="canny", controlnet="tiny-random"),
                 EditSettings(**base, control="canny", controlnet="tiny-random", control_scale=0.5)):
        _, optimised = _null_text(None, None, [torch.zeros(1)], None, torch.zeros(1), opts, None, spy, SOURCE, None)
        assert not optimised
    assert len(set(spy.keys)) == 3
