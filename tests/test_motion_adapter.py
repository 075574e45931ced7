"""AnimateDiff motion modules as the temporal layers (issue 32, item 3), on a tiny random
``MotionAdapter`` built to fit ``tiny-random`` (block_out_channels (32, 64), one layer per block,
norm groups 8) and saved with save_pretrained. Random weights say nothing about real AnimateDiff
modules: these tests check the plumbing (placement, tuning or freezing, the run folder), not quality."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import F32_EPS, write_clip
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.fileio import load_safetensors

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]


def invoke(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, [str(a) for a in args])


def cli(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def tiny_adapter():
    """A MotionAdapter for tiny-random; its zero-initialised proj_out made nonzero, so that the
    modules change the output (a zero proj_out makes every motion module the identity)."""
    from diffusers import MotionAdapter

    torch.manual_seed(5)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=32)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return adapter.eval()


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("motion") / "adapter"
    tiny_adapter().save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_hooked_unet_equals_diffusers_unet_motion_model():
    """Our hooks on the 2-D UNet against diffusers' own UNetMotionModel.from_unet2d, one clip of F frames.

    Bound: both run the same modules (conv_in, every resnet, transformer, motion module, sampler,
    conv_out) with the same weights, in the same order; only memory layouts (the (B·F, C, H, W) ↔
    per-frame-sequence reshapes) and hence reduction orders may differ. Each module's output is then
    within one float32 rounding (eps relative to the largest value it carries) of the other's, and the
    differences add along the chain: atol = n_modules · F32_EPS · max|output| (f32_tol's reasoning, one
    op per module; 26 modules on tiny-random). Measured: 7.6e-7 for a bound of 3.7e-6 on this CPU."""
    from diffusers import UNetMotionModel
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    from contextedit.models.loading import load_components
    from contextedit.models.motion import attach_motion_modules, motion_state_dict

    unet = load_components("tiny-random", "cpu", torch.float32).unet
    adapter = tiny_adapter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = UNetMotionModel.from_unet2d(copy.deepcopy(unet), adapter).eval()
    ours = attach_motion_modules(copy.deepcopy(unet), adapter, "freeze").eval()
    assert len(motion_state_dict(ours)) == len(list(adapter.parameters()))
    frames = 4
    torch.manual_seed(0)
    x = torch.randn(1, 4, frames, 8, 8)
    t = torch.tensor([500])
    text = torch.randn(1, 77, unet.config.cross_attention_dim).expand(frames, -1, -1)
    with torch.no_grad():
        want = reference(x, t, text).sample[0].transpose(0, 1)  # (F, C, H, W)
        got = ours(x[0].transpose(0, 1), t, text, cross_attention_kwargs={"num_frames": frames}).sample
        plain = unet(x[0].transpose(0, 1), t, text).sample
    chain = sum(isinstance(m, (ResnetBlock2D, Transformer2DModel, AnimateDiffTransformer3D, Downsample2D, Upsample2D))
                for m in ours.modules()) + 2  # + conv_in, conv_out
    atol = chain * F32_EPS * float(want.abs().max())
    assert float((got - want).abs().max()) <= atol
    assert float((plain - want).abs().max()) > 100 * atol  # the motion modules matter


def tune(tmp_path: Path, adapter_folder: Path, name: str, *extra) -> Path:
    clip = tmp_path / "clip.mp4"
    if not clip.exists():
        write_clip(clip, frames=8)
    cli("tune", clip, "--model", "tiny-random", "--prompt", SOURCE, "--frames", "4", "--steps", "2", "--seed", "3",
        "--motion-adapter", adapter_folder, "--no-checkpointing", "--out", tmp_path / name, *extra, *CPU)
    return tmp_path / name


def edit(run: Path, out: Path) -> np.ndarray:
    from contextedit import video as vio

    cli("edit", "--prompt", TARGET, "--run", run, "--steps", "2", "--out", out, *CPU)
    [file] = sorted(out.glob("*.mp4"))
    return vio.read_video(file, frames=4, stride=1).frames


def test_tune_and_edit_through_the_cli_and_the_run_reloads(tmp_path, runs, adapter_folder):
    from contextedit.models.motion import folder_sha256

    run = tune(tmp_path, adapter_folder, "run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["motion_adapter"] == {"folder": str(adapter_folder.resolve()), "sha256": folder_sha256(adapter_folder)}
    assert manifest["temporal"] == "tune"
    tuned = load_safetensors(run / "tuned.safetensors")
    motion = {k: v for k, v in tuned.items() if ".motion_module." in k}
    assert motion and not any(".temporal." in k for k in tuned)  # the motion modules replace the temporal layers
    # tuned: they moved from the adapter's weights (saved under their UNet names)
    original = load_safetensors(next(adapter_folder.glob("*.safetensors")))
    assert len(motion) == len(list(tiny_adapter().parameters())) and {_adapter_name(k) for k in motion} <= set(original)
    assert any(not torch.equal(v, original[_adapter_name(k)]) for k, v in motion.items())
    first, second = edit(run, tmp_path / "e1"), edit(run, tmp_path / "e2")
    assert np.array_equal(first, second)
    assert json.loads((tmp_path / "e1" / "edits.json").read_text())["motion_adapter"] == manifest["motion_adapter"]


def _adapter_name(unet_name: str) -> str:
    """``down_blocks.1.attentions.0.motion_module.X`` → the adapter's ``down_blocks.1.motion_modules.0.X``."""
    host, rest = unet_name.split(".motion_module.")
    parts = host.split(".")
    block = ".".join(parts[:2]) if parts[0] != "mid_block" else "mid_block"
    return f"{block}.motion_modules.{parts[-1]}.{rest}"


def test_freeze_leaves_the_motion_weights_bit_identical(tmp_path, runs, adapter_folder):
    from diffusers import MotionAdapter

    from contextedit import ContextEditPipeline
    from contextedit.models.motion import folder_sha256, motion_state_dict
    from contextedit.pipelines.tuned import TunedClip

    run = tune(tmp_path, adapter_folder, "frozen", "--temporal", "freeze")
    assert json.loads((run / "manifest.json").read_text())["temporal"] == "freeze"
    assert not any(".motion_module." in k for k in load_safetensors(run / "tuned.safetensors"))
    original = MotionAdapter.from_pretrained(str(adapter_folder), use_safetensors=True).state_dict()
    unet = ContextEditPipeline.from_pretrained("tiny-random", device="cpu").video_unet(TunedClip.load(run))
    got = motion_state_dict(unet)
    assert len(got) == len(list(tiny_adapter().parameters()))
    assert all(torch.equal(v, original[_adapter_name(k)]) for k, v in got.items())
    # the Python API: the pipeline's adapter, tuned frozen in memory, is unchanged too
    pipe = ContextEditPipeline.from_pretrained("tiny-random", device="cpu", motion_adapter=adapter_folder)
    from contextedit import video as vio

    frames = vio.read_video(tmp_path / "clip.mp4", frames=4).frames
    tuned = pipe.tune(frames, SOURCE, steps=2, temporal="freeze", checkpointing=False)
    held = pipe.components.extra["motion_adapter"][0].state_dict()
    assert all(torch.equal(held[k], original[k]) for k in original)
    assert tuned.settings["motion_adapter"] == pipe.sources["motion_adapter"]
    assert pipe.edit(tuned, [TARGET], steps=2)[0].shape == frames.shape
    # a motion_adapter setting wins over the pipeline's, in the record as in the UNet it tunes
    import shutil

    other = Path(shutil.copytree(adapter_folder, tmp_path / "other"))
    (other / "note.txt").write_text("same weights, another folder")
    tuned = pipe.tune(frames, SOURCE, steps=2, temporal="freeze", checkpointing=False, motion_adapter=str(other))
    assert tuned.settings["motion_adapter"] == {"folder": str(other.resolve()), "sha256": folder_sha256(other)}


def test_a_changed_adapter_folder_is_refused_on_edit(tmp_path, runs, adapter_folder):
    import shutil

    folder = Path(shutil.copytree(adapter_folder, tmp_path / "adapter"))
    run = tune(tmp_path, folder, "run", "--temporal", "freeze")
    changed = tiny_adapter()
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    changed.save_pretrained(str(folder), safe_serialization=True)
    result = invoke("edit", "--prompt", TARGET, "--run", run, "--steps", "2", "--out", tmp_path / "e", *CPU)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "motion adapter" in lines[0], result.stderr
