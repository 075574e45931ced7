"""Single-file checkpoints and LoRA files (issue 32), on tiny-random written by hand in the
original single-file layout (tests/ldm_layout.py: this project's own key mapping) and a LoRA made
with peft on the tiny UNet. Nothing is mocked: the files go through diffusers' from_single_file and
load_lora_weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from contextedit.errors import InputError, UnsafeFileError
from contextedit.fileio import load_safetensors
from contextedit.models.loading import load_components, save_components
from contextedit.runs import sha256_file as sha256
from contextedit.pipeline import ContextEditPipeline

from helpers import F32_EPS, MODEL, write_clip
from source_files import ALPHA, CPU, PROMPT, RANK, build_files, fails, invoke, lora_file, write_model

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """tiny-random as a diffusers folder and as a single file, and LoRAs (source_files.build_files)."""
    return build_files(tmp_path_factory.mktemp("sources"))


# --------------------------------------------------------------------------- single files


def assert_same_weights(a, b, parts: tuple[str, ...]) -> None:
    """Components ``a`` and ``b`` hold the same tensors, bit for bit, in each of ``parts``."""
    for part in parts:
        x, y = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert x.keys() == y.keys(), part
        assert all(torch.equal(x[k], y[k]) for k in x), part


def assert_generates_the_same(folder: Path, file: Path, out: Path) -> dict:
    """`generate` from the folder and from the single file mapped onto it: the same PNG, byte for
    byte. Returns the file's generate.json."""
    pngs = {}
    for name, model in (("folder", [folder]), ("file", [file, "--model-config", folder])):
        result = invoke(["generate", "--prompt", PROMPT, "--model", *model, "--steps", "2", "--out", out / name, *CPU])
        assert result.exit_code == 0, result.stderr
        pngs[name] = next((out / name).glob("*.png")).read_bytes()
    assert pngs["folder"] == pngs["file"]
    return json.loads((out / "file" / "generate.json").read_text())


def test_single_file_loads_the_folder_weights_exactly(files):
    folder = load_components(str(files / "folder"))
    single = ContextEditPipeline.from_single_file(files / "tiny.safetensors", config=files / "folder", device="cpu",
                                                  dtype="fp32").components
    assert single.model_id == str((files / "tiny.safetensors").resolve())
    assert single.extra["single_file"]["family"] == "sd-1"
    assert single.extra["single_file"]["sha256"] == sha256(files / "tiny.safetensors")
    assert_same_weights(folder, single, ("unet", "vae", "text_encoder"))
    assert folder.scheduler_config["prediction_type"] == single.scheduler_config["prediction_type"]


def test_single_file_generates_the_folder_image(files, tmp_path):
    record = assert_generates_the_same(files / "folder", files / "tiny.safetensors", tmp_path)
    assert record["model_file"]["sha256"] == sha256(files / "tiny.safetensors")


def test_sdxl_single_file_loads_the_folder_weights_and_generates_its_image(tmp_path):
    """tiny-xl-random in SGM's single-file layout (CLIP under conditioner.embedders.0, the second
    encoder in OpenCLIP's layout under .1): the exact tensors of the model it was written from, and
    the same `generate` image as its folder."""
    comps = load_components("tiny-xl-random")
    write_model(comps, tmp_path / "xl", tmp_path / "xl.safetensors")
    single = ContextEditPipeline.from_single_file(tmp_path / "xl.safetensors", config=tmp_path / "xl", device="cpu",
                                                  dtype="fp32").components
    assert single.extra["single_file"]["family"] == "sdxl"
    assert_same_weights(comps, single, ("unet", "vae", "text_encoder", "text_encoder_2"))
    record = assert_generates_the_same(tmp_path / "xl", tmp_path / "xl.safetensors", tmp_path / "generated")
    assert record["model_file"]["family"] == "sdxl"


def test_pickle_and_unknown_files_are_refused(files, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    fails(["generate", "--prompt", PROMPT, "--model", ckpt, "--steps", "1", "--out", tmp_path / "o", *CPU], "pickle",
          "model.ckpt")
    with pytest.raises(UnsafeFileError):
        ContextEditPipeline.from_single_file(ckpt, device="cpu")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "junk.safetensors"))
    fails(["generate", "--prompt", PROMPT, "--model", tmp_path / "junk.safetensors", "--model-config", files / "folder",
           "--steps", "1", "--out", tmp_path / "o", *CPU], "no stable diffusion unet")
    fails(["generate", "--prompt", PROMPT, "--model", files / "tiny.safetensors", "--lora", ckpt, "--model-config",
           files / "folder", "--steps", "1", "--out", tmp_path / "o", *CPU], "pickle")


def test_tune_and_edit_on_a_single_file(files, tmp_path, runs):
    model = shutil.copy(files / "tiny.safetensors", tmp_path / "model.safetensors")
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    result = invoke(["tune", clip, "--model", model, "--model-config", files / "folder", "--prompt", PROMPT, "--frames",
                     "2", "--steps", "1", "--no-checkpointing", "--out", tmp_path / "run", *CPU])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"] == str(Path(model).resolve())
    assert manifest["model_file"] == {"path": str(Path(model).resolve()), "sha256": sha256(model), "family": "sd-1",
                                      "config": str((files / "folder").resolve())}
    edit = ["edit", "--prompt", "a blue circle moving right on a black background", "--run", tmp_path / "run",
            "--steps", "2", *CPU]
    result = invoke([*edit, "--out", tmp_path / "e1"])  # the config comes from the run
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "e1" / "edits.json").read_text())["model_file"]["sha256"] == sha256(model)
    # changed: refused with one line naming the file; missing: the same
    data = bytearray(Path(model).read_bytes())
    data[-1] ^= 1
    Path(model).write_bytes(bytes(data))
    fails([*edit, "--out", tmp_path / "e2"], "model.safetensors", "changed")
    Path(model).unlink()
    fails([*edit, "--out", tmp_path / "e3"], "model.safetensors", "missing")


# --------------------------------------------------------------------------- LoRA


def lora_deltas(file: Path, scale: float) -> dict[str, torch.Tensor]:
    """scale·(alpha/r)·B@A for every LoRA'd weight, from the file's tensors, in float64."""
    lora = load_safetensors(file)
    out = {}
    for key, down in lora.items():  # diffusers' format: <module>.lora.down.weight (A) and .lora.up.weight (B)
        if not key.endswith(".lora.down.weight"):
            continue
        up = lora[key.replace(".lora.down.", ".lora.up.")]
        out[key.removeprefix("unet.").replace(".lora.down.weight", ".weight")] = \
            scale * (ALPHA / RANK) * (up.double() @ down.double())
    return out


def hand_merged(unet, file: Path, scale: float) -> dict[str, torch.Tensor]:
    """W + scale·(alpha/r)·B@A for every LoRA'd weight, in float64."""
    return {name: unet.state_dict()[name].double() + delta for name, delta in lora_deltas(file, scale).items()}


def test_lora_fuses_to_the_hand_merge(files):
    base = load_components(MODEL)
    scale = 0.7
    pipe = ContextEditPipeline(load_components(MODEL)).load_lora(lora_file(files), scale)
    expected = hand_merged(base.unet, lora_file(files), scale)
    state = pipe.components.unet.state_dict()
    assert len(expected) == len(load_safetensors(lora_file(files))) // 2 > 0  # every LoRA'd projection
    assert not any("lora" in k for k in state) and state.keys() == base.unet.state_dict().keys()
    for name, want in expected.items():
        # float32: W + s·(B@A) with B@A a sum of r products: r+2 roundings of terms at most |W| + |s·α/r·B@A|
        bound = (RANK + 3) * F32_EPS * float(want.abs().max())
        assert float((state[name].double() - want).abs().max()) <= bound, name
        assert not torch.equal(state[name], base.unet.state_dict()[name])
    untouched = [k for k in state if k not in expected]
    assert all(torch.equal(state[k], base.unet.state_dict()[k]) for k in untouched)
    assert pipe.sources["loras"] == [{"file": str(lora_file(files).resolve()), "sha256": sha256(lora_file(files)),
                                      "scale": scale}]


def test_lora_generates_the_image_of_a_hand_merged_folder(files, tmp_path):
    """`generate --lora` gives, byte for byte, the image of a folder whose UNet was merged by hand.
    On the dyadic LoRA (source_files.write_lora) scale·(α/r)·B·A is exact in float32 at scale 3/4,
    so W + it is one float32 rounding of the exact sum however it is computed: the fused weights
    equal the hand merge bit for bit, and no tolerance is needed anywhere after."""
    scale = 0.75
    comps = load_components(MODEL)
    base = comps.unet.state_dict()
    merged = {}
    for name, delta in lora_deltas(lora_file(files, "exact"), scale).items():
        assert torch.equal(delta.float().double(), delta), name  # exact in float32
        merged[name] = base[name] + delta.float()  # one float32 rounding
    assert merged and not any(torch.equal(merged[n], base[n]) for n in merged)  # the LoRA is not a no-op
    comps.unet.load_state_dict({**base, **merged})
    save_components(comps, tmp_path / "merged")
    fused = load_components(MODEL, loras=[f"{lora_file(files, 'exact')}:{scale}"]).unet.state_dict()
    assert all(torch.equal(fused[n], w) for n, w in {**base, **merged}.items())
    outs = {}
    for name, model in (("lora", [MODEL, "--lora", f"{lora_file(files, 'exact')}:{scale}"]),
                        ("merged", [tmp_path / "merged"])):
        result = invoke(["generate", "--prompt", PROMPT, "--model", *model, "--steps", "2", "--out", tmp_path / name, *CPU])
        assert result.exit_code == 0, result.stderr
        outs[name] = next((tmp_path / name).glob("*.png")).read_bytes()
    assert outs["lora"] == outs["merged"]
    record = json.loads((tmp_path / "lora" / "generate.json").read_text())
    assert record["loras"] == [{"file": str(lora_file(files, "exact").resolve()), "sha256": sha256(lora_file(files, "exact")),
                                "scale": scale}]


def test_lora_scale_zero_is_the_base_and_two_loras_add(files, tmp_path):
    base = load_components(MODEL).unet.state_dict()
    zero = load_components(MODEL, loras=[f"{lora_file(files)}:0"]).unet.state_dict()
    assert all(torch.equal(base[k], zero[k]) for k in base)
    shutil.copytree(files / "lora", tmp_path / "again")
    both = load_components(MODEL, loras=[f"{lora_file(files)}:0.5", f"{tmp_path / 'again' / lora_file(files).name}:0.25"])
    one = hand_merged(load_components(MODEL).unet, lora_file(files), 0.75)
    for name, want in one.items():
        bound = 2 * (RANK + 3) * F32_EPS * float(want.abs().max())
        assert float((both.unet.state_dict()[name].double() - want).abs().max()) <= bound, name


def test_lora_for_another_base_is_refused(files, tmp_path):
    with pytest.raises(InputError, match="does not fit|changes no layer"):
        load_components(MODEL, loras=[str(lora_file(files, "other"))])
    fails(["generate", "--prompt", PROMPT, "--model", MODEL, "--lora", lora_file(files, "other"), "--steps", "1",
           "--out", tmp_path / "o", *CPU], "another base", "size mismatch")
    fails(["generate", "--prompt", PROMPT, "--model", MODEL, "--lora", tmp_path / "nope.safetensors", "--steps", "1",
           "--out", tmp_path / "o", *CPU], "nope.safetensors")


def test_tune_with_lora_records_it_and_edit_reuses_it(files, tmp_path, runs):
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    tune = ["tune", clip, "--model", MODEL, "--prompt", PROMPT, "--frames", "2", "--steps", "1", "--no-checkpointing",
            *CPU]
    assert invoke([*tune, "--out", tmp_path / "plain"]).exit_code == 0
    result = invoke([*tune, "--lora", f"{lora_file(files)}:0.8", "--out", tmp_path / "run"])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["loras"] == [{"file": str(lora_file(files).resolve()), "sha256": sha256(lora_file(files)),
                                  "scale": 0.8}]
    plain, lora = (load_safetensors(tmp_path / r / "tuned.safetensors") for r in ("plain", "run"))
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in lora.items()}  # no merged weights in it
    assert not all(torch.equal(plain[k], lora[k]) for k in plain)  # tuned from the LoRA'd queries
    edit = ["edit", "--prompt", "a blue circle moving right on a black background", "--run", tmp_path / "run",
            "--steps", "2", "--format", "frames", *CPU]
    for name, extra in (("implicit", []), ("explicit", ["--lora", f"{lora_file(files)}:0.8"]), ("none", ["--lora", "none"])):
        result = invoke([*edit, *extra, "--out", tmp_path / name])
        assert result.exit_code == 0, result.stderr

    def frames(name):
        return [np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(p)) for p in
                sorted((tmp_path / name).rglob("*.png"))]
    implicit, explicit, none = frames("implicit"), frames("explicit"), frames("none")
    assert implicit and all(np.array_equal(a, b) for a, b in zip(implicit, explicit))
    assert not all(np.array_equal(a, b) for a, b in zip(implicit, none))
    assert json.loads((tmp_path / "implicit" / "edits.json").read_text())["loras"][0]["scale"] == 0.8
    # the LoRA changed on disk: one line naming it
    moved = shutil.copytree(files / "lora", tmp_path / "lora")
    run2 = shutil.copytree(tmp_path / "run", tmp_path / "run2")
    m = json.loads((run2 / "manifest.json").read_text())
    m["loras"][0]["file"] = str(moved / lora_file(files).name)
    (run2 / "manifest.json").write_text(json.dumps(m))
    (moved / lora_file(files).name).write_bytes(b"changed")
    fails(["edit", "--prompt", "a cat", "--run", run2, "--steps", "2", "--out", tmp_path / "x", *CPU],
          "pytorch_lora_weights.safetensors", "changed")
