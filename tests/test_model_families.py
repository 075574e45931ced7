"""Every base-model family runs the same end-to-end path as SD-1.x (issue 20): tune → edit with two
prompts, generate, train-adapter, bit-identical reruns, and — where the parametrisation matters
most — the inversion: direct inversion must give back the tuned latents under guidance whatever
the model predicts (ε for SD-1.x and SD-2-base, v for SD-2.x 768)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_clip, write_images
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.fileio import load_safetensors

FAMILIES = ["tiny-random", "tiny-v-random"]  # SD-1.x (ε), SD-2.x (v, linear projection, per-block heads)
SOURCE = "a red circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]


def cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)


def tune_edit_generate(tmp_path: Path, model: str, folder: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    cli("tune", clip, "--model", model, "--prompt", SOURCE, "--frames", "4", "--steps", "2", "--seed", "3",
        "--out", folder / "run", *CPU)
    cli("edit", "--run", folder / "run", "--prompt", "a blue circle moving right on a black background",
        "--prompt", "a red square moving right on a black background", "--steps", "3", "--format", "frames",
        "--out", folder / "edits", *CPU)
    cli("generate", "--prompt", SOURCE, "--model", model, "--steps", "2", "--n", "2", "--seed", "3",
        "--out", folder / "gen", *CPU)


@pytest.mark.parametrize("model", FAMILIES)
def test_every_command_runs_and_reruns_bit_identically(tmp_path, model):
    tune_edit_generate(tmp_path, model, tmp_path / "a")
    tune_edit_generate(tmp_path, model, tmp_path / "b")
    a, b = tmp_path / "a", tmp_path / "b"
    manifest = json.loads((a / "run" / "manifest.json").read_text())
    assert manifest["model"] == model
    assert manifest["prediction_type"] == ("v_prediction" if model == "tiny-v-random" else "epsilon")
    for name in ("tuned.safetensors", "latents.safetensors"):
        ta, tb = load_safetensors(a / "run" / name), load_safetensors(b / "run" / name)
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    edits = sorted((a / "edits").rglob("*.png"))
    assert len({p.parent for p in edits}) == 2
    assert all(p.read_bytes() == (b / p.relative_to(a)).read_bytes() for p in edits)
    images = sorted((a / "gen").glob("*.png"))
    assert len(images) == 2 and all(p.read_bytes() == (b / "gen" / p.name).read_bytes() for p in images)
    cli("train-adapter", write_images(tmp_path / "data", n=2), "--out", tmp_path / "adapter", "--steps", "2",
        "--batch", "2", "--model", model, *CPU)
    assert (tmp_path / "adapter" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.parametrize("model", FAMILIES)
def test_direct_inversion_gives_back_the_tuned_latents_under_guidance(tmp_path, model):
    """The inversion is right for the model's parametrisation: the source prompt at guidance 7.5
    lands on the run's own latents, while plain DDIM inversion drifts.

    Exact in exact arithmetic; in float32 the sampler's rounding is amplified along the trajectory,
    strongly for a random ε-model (x̂0 = (x − σε)/α divides by a small α at high t; v-models do not),
    so pixels are compared on average: direct's error must be a small fraction of DDIM's drift."""
    from contextedit.models.loading import load_components
    from contextedit.pipelines.common import decode_latents
    from contextedit.video import read_video, to_frames

    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    cli("tune", clip, "--model", model, "--prompt", SOURCE, "--frames", "4", "--steps", "2", "--out", tmp_path / "run", *CPU)
    comps = load_components(model, "cpu", torch.float32)
    with torch.no_grad():
        decoded = to_frames(decode_latents(comps.vae, load_safetensors(tmp_path / "run" / "latents.safetensors")["latents"]))

    def error(inversion: str) -> float:
        out = tmp_path / inversion
        cli("edit", "--run", tmp_path / "run", "--prompt", SOURCE, "--steps", "5", "--guidance", "7.5", "--inversion", inversion,
            "--no-blend", "--format", "frames", "--out", out, *CPU)
        (folder,) = [p for p in out.iterdir() if p.is_dir()]
        return float(np.abs(read_video(folder, frames=4, stride=1).frames.astype(float) - decoded).mean())

    direct, ddim = error("direct"), error("ddim")
    # measured: ε 0.34 px against DDIM's 45.7; v 0.2 px or less
    assert direct < 1.0 and direct < 0.02 * ddim, (direct, ddim)
