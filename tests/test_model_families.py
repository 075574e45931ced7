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

# SD-1.x (ε), SD-2.x (v, linear projection, per-block heads), SDXL (two encoders, pooled + time ids, depth 2)
FAMILIES = ["tiny-random", "tiny-v-random", "tiny-xl-random"]
SOURCE = "a red circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]


def cli(*args, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.stderr
    return result.stdout if code == 0 else result.stderr


pytestmark = pytest.mark.usefixtures("runs")


def tune_edit_generate(tmp_path: Path, model: str, folder: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    cli("tune", clip, "--model", model, "--prompt", SOURCE, "--frames", "4", "--steps", "2", "--seed", "3",
        "--out", folder / "run", *CPU)
    cli("edit", "--run", folder / "run", "--prompt", "a blue circle moving right on a black background",
        "--prompt", "a red square moving right on a black background", "--steps", "3", "--format", "frames",
        "--out", folder / "edits", *CPU)
    cli("generate", "--prompt", SOURCE, "--model", model, "--steps", "2", "--n", "2", "--seed", "3",
        "--out", folder / "gen", *CPU)


# SD-1.x (tiny-random) has the same checks in test_bad_input.py::test_tune_edit_generate_are_bit_identical_on_cpu
@pytest.mark.slow  # 5–6 s each under -n auto
@pytest.mark.parametrize("model", FAMILIES[1:])
def test_every_command_runs_and_reruns_bit_identically(tmp_path, model):
    tune_edit_generate(tmp_path, model, tmp_path / "a")
    tune_edit_generate(tmp_path, model, tmp_path / "b")
    a, b = tmp_path / "a", tmp_path / "b"
    manifest = json.loads((a / "run" / "manifest.json").read_text())
    assert manifest["model"] == model
    assert manifest["prediction_type"] == ("v_prediction" if model == "tiny-v-random" else "epsilon")
    assert manifest["adapter"]  # the context adapter was tuned on every family
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


def test_sdxl_parts_the_inflated_unet_and_a_saved_pipeline_folder(tmp_path):
    """SDXL's specifics: the pooled embedding travels as one extra text token and reaches the UNet as
    added_cond_kwargs with the time ids; every transformer block of a depth-2 block is inflated; the
    VAE stays float32 under fp16; a StableDiffusionXLPipeline folder loads and tunes."""
    from contextedit.models.inflate import inflate_unet, shared_copy
    from contextedit.models.loading import load_components, save_components
    from contextedit.models.sdxl import time_ids
    from contextedit.pipelines.common import encode_text

    comps = load_components("tiny-xl-random", "cpu", torch.float32)
    text = encode_text(comps, [SOURCE])
    assert text.shape == (1, 78, 80)  # 77 tokens of both encoders' states (32 + 48) and the pooled token
    seen = {}
    handle = comps.unet.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    video = inflate_unet(shared_copy(comps.unet))
    handle.remove()
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        video(x, torch.tensor(10), encoder_hidden_states=text.expand(2, -1, -1), cross_attention_kwargs={"num_frames": 2})
    assert torch.equal(seen["added_cond_kwargs"]["time_ids"], time_ids(64, 64, 2, "cpu", torch.float32))
    assert seen["encoder_hidden_states"].shape == (2, 77, 80)
    blocks = [m for m in video.modules() if type(m).__name__ == "BasicTransformerBlock"]
    # depth 2 in the attention block: 2 (down, 1 layer) + 2 (mid) + 4 (up, 2 layers) transformer blocks
    assert len(blocks) == 8 and all(getattr(b.attn1, "temporal", None) is not None for b in blocks)
    half = load_components("tiny-xl-random", "cpu", torch.float16)
    assert half.unet.dtype == torch.float16 and half.vae.dtype == torch.float32  # force_upcast
    save_components(comps, tmp_path / "xl")
    assert (tmp_path / "xl" / "text_encoder_2").is_dir()
    assert "StableDiffusionXLPipeline" in (tmp_path / "xl" / "model_index.json").read_text()
    cli("tune", write_clip(tmp_path / "clip.mp4", frames=8), "--model", tmp_path / "xl", "--prompt", SOURCE, "--frames", "4",
        "--steps", "1", "--out", tmp_path / "run", *CPU)


@pytest.mark.parametrize("model, other", [("tiny-xl-random", "tiny-random"), ("tiny-random", "tiny-xl-random")])
def test_a_controlnet_of_another_family_is_refused(tmp_path, model, other):
    from contextedit.models.loading import load_components
    from contextedit.testing.tiny import tiny_controlnet

    tiny_controlnet(load_components(other).unet).save_pretrained(tmp_path / "cn", safe_serialization=True)
    stderr = cli("tune", write_clip(tmp_path / "clip.mp4", frames=8), "--model", model, "--prompt", SOURCE, "--frames", "4",
                 "--steps", "1", "--out", tmp_path / "run", "--control", "canny", "--controlnet", tmp_path / "cn", *CPU, code=2)
    assert stderr.startswith("Error: ") and "another base model" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_an_sdxl_folder_without_its_second_encoder_is_refused(tmp_path):
    import shutil

    from contextedit.models.loading import load_components, save_components

    save_components(load_components("tiny-xl-random"), tmp_path / "xl")
    shutil.rmtree(tmp_path / "xl" / "text_encoder_2")
    stderr = cli("generate", "--prompt", SOURCE, "--model", tmp_path / "xl", "--steps", "1", *CPU, code=2)
    assert stderr.startswith("Error: ") and "text_encoder_2" in stderr


@pytest.mark.parametrize("model", FAMILIES)
def test_python_api_on_every_family(model):
    """The library's own path (no run folder): tune in memory, edit with two prompts, generate —
    with a ControlNet on the edit."""
    from contextedit import ContextEditPipeline
    from contextedit.testing import shapes

    pipe = ContextEditPipeline.from_pretrained(model, device="cpu")
    frames, _ = shapes.make_clip("circle", "red", "black", "right", start=(20, 30), frames=4)
    tuned = pipe.tune(frames, SOURCE, steps=1, seed=0)
    targets = ["a blue circle moving right on a black background", "a red square moving right on a black background"]
    edits = pipe.edit(tuned, targets, steps=2, control="canny", controlnet="tiny-random")
    assert len(edits) == 2 and all(e.shape == frames.shape and e.dtype == np.uint8 for e in edits)
    images = pipe.generate(SOURCE, n=1, seed=0, steps=2)
    assert len(images) == 1 and images[0].size == (64, 64)
