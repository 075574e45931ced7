"""Model files for the issue-32 tests (test_model_sources.py, test_run_sources.py): a model as a
diffusers folder and as a single file (tests/ldm_layout.py), LoRAs made with peft on its UNet,
and the CLI helpers both files use."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.models.loading import load_components, save_components

from ldm_layout import ldm_state_dict

PROMPT = "a red circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]
RANK, ALPHA = 4, 8  # alpha/r = 2: the hand merge checks the scaling too
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
DYADIC = 2.0 ** -6  # the grid of the "exact" LoRA's A and B (write_lora's grid)
runner = CliRunner()


def invoke(args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


def fails(args, *words):
    """``args`` exit 2 with one ``Error:`` line that holds each of ``words``; returns that line."""
    result = invoke(args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def write_model(comps, folder: Path, file: Path) -> None:
    """``comps`` as a diffusers folder and as a single file (this project's own key mapping)."""
    save_components(comps, folder)
    save_file(ldm_state_dict(comps), str(file))


def write_lora(unet, folder: Path, seed: int, grid: float | None = None) -> Path:
    """A diffusers-format LoRA on the attention projections, random non-zero B (peft starts B at 0).

    ``grid``: A and B rounded to multiples of it. With ``DYADIC`` every product and sum in B·A, and
    its scaling by a power of two times 3/4, is exact in float32 (14 significant bits at most), so
    W + scale·(α/r)·B·A is one float32 rounding of the exact sum however it is computed."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = copy.deepcopy(unet)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=TARGETS))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            if "lora_" in name and grid is not None:
                p.copy_(torch.round(p / grid) * grid)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True,
                                              unet_lora_adapter_metadata={"r": RANK, "lora_alpha": ALPHA,
                                                                          "target_modules": TARGETS})
    return folder / "pytorch_lora_weights.safetensors"


def lora_file(files: Path, name: str = "lora") -> Path:
    return files / name / "pytorch_lora_weights.safetensors"


def build_files(root: Path) -> Path:
    """Under ``root``: tiny-random as ``folder/`` and ``tiny.safetensors``, and the LoRAs ``lora/``
    (seed 1), ``exact/`` (seed 3, on the dyadic grid) for it and ``other/`` for tiny-xl-random."""
    comps = load_components("tiny-random")
    write_model(comps, root / "folder", root / "tiny.safetensors")
    write_lora(comps.unet, root / "lora", seed=1)
    write_lora(comps.unet, root / "exact", seed=3, grid=DYADIC)
    other = load_components("tiny-xl-random")  # another base: other attention widths
    write_lora(other.unet, root / "other", seed=2)
    return root
