"""Where the temporal layers go (issue 31, item 3): ``every-block`` (every transformer block's attn1)
or ``per-transformer`` (one per Transformer2DModel, on its first block). SDXL's family recommends
per-transformer; the run records the placement, and edit / ``TunedClip.load`` rebuild the UNet with
it (a manifest without it: every-block, as every run tuned before the choice). Counts are checked
against an independent count from the UNet config, not against the code that places the layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import bench_script, write_clip
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.fileio import load_safetensors

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]
PLACEMENTS = ("every-block", "per-transformer")

pytestmark = pytest.mark.usefixtures("runs")


def cli(*args, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.stderr
    return result.stdout if code == 0 else result.stderr


def _per_block(value, n: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def transformers_from_config(config) -> list[tuple[int, int]]:
    """(channels, depth) of every Transformer2DModel a diffusers UNet2DConditionModel builds from
    ``config``: ``layers_per_block`` per cross-attention down block, one more per up block (whose
    depths and channels run in reverse), and the mid block's one at the last depth."""
    channels = list(config.block_out_channels)
    n = len(channels)
    depths = _per_block(getattr(config, "transformer_layers_per_block", 1), n)
    layers = _per_block(config.layers_per_block, n)
    out = []
    for i, kind in enumerate(config.down_block_types):
        out += [(channels[i], depths[i])] * layers[i] if "CrossAttn" in kind else []
    out.append((channels[-1], depths[-1]))  # UNetMidBlock2DCrossAttn
    for i, kind in enumerate(config.up_block_types):
        out += [(channels[::-1][i], depths[::-1][i])] * (layers[::-1][i] + 1) if "CrossAttn" in kind else []
    return out


def expected_parameters(config, placement: str) -> tuple[int, int]:
    """(temporal layers, tuned parameters): to_q of attn1 and attn2 (d × d each, no bias) in every
    transformer block, and 4 d² + d (q, k, v, out + out's bias) per temporal layer."""
    blocks = transformers_from_config(config)
    queries = sum(depth * 2 * d * d for d, depth in blocks)
    layers = [(d, depth if placement == "every-block" else 1) for d, depth in blocks]
    return sum(k for _, k in layers), queries + sum(k * (4 * d * d + d) for d, k in layers)


def temporal_names(unet) -> list[str]:
    from contextedit.attention.processors import TemporalAttention

    return [name for name, m in unet.named_modules() if isinstance(m, TemporalAttention)]


def tuned_count(unet) -> int:
    from contextedit.models.inflate import trainable_parameters

    return sum(p.numel() for p in trainable_parameters(unet).values())


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_tiny_xl_placements_match_a_count_from_its_config(placement):
    from contextedit.models.loading import load_components
    from contextedit.pipelines.tuning import build_video_model

    comps = load_components("tiny-xl-random", "cpu", torch.float32)
    unet, _ = build_video_model(comps, False, temporal_layers=placement)
    layers, params = expected_parameters(comps.unet.config, placement)
    # tiny-xl-random: 4 transformers of depth 2 at 64 channels (down 1, mid 1, up 2)
    assert (layers, params) == ((8, 197_120) if placement == "every-block" else (4, 131_328))
    names = temporal_names(unet)
    assert len(names) == layers and tuned_count(unet) == params
    if placement == "per-transformer":
        assert all(".transformer_blocks.0.attn1.temporal" in n for n in names)
    assert all(p.requires_grad == (".to_q." in n or ".temporal." in n) for n, p in unet.named_parameters())


def test_real_sdxl_counts():
    """SDXL-base-1.0's UNet (on the meta device: no memory): 70 transformer blocks in 11
    transformers; 204.8 M query parameters; 409.7 M temporal ones on every block, 47.5 M per transformer."""
    from diffusers import UNet2DConditionModel

    from contextedit.models.inflate import inflate_unet, shared_copy

    with bench_script("perf") as perf, torch.device("meta"):
        base = UNet2DConditionModel(**perf.SDXL_UNET)
        counts = {p: (len(temporal_names(u)), tuned_count(u))
                  for p in PLACEMENTS for u in [inflate_unet(shared_copy(base), temporal_layers=p)]}
    assert counts == {p: expected_parameters(base.config, p) for p in PLACEMENTS}
    assert counts == {"every-block": (70, 614_483_200), "per-transformer": (11, 252_324_480)}


def test_the_default_comes_from_the_family_and_contextedit_json_overrides_it():
    from contextedit.models.loading import load_components
    from contextedit.pipelines.tune_options import TuneSettings

    xl, sd = load_components("tiny-xl-random"), load_components("tiny-random")
    assert TuneSettings().resolve(xl.recommended).temporal_layers == "per-transformer"
    assert TuneSettings().resolve(sd.recommended).temporal_layers == "every-block"
    xl.extra["defaults"] = {"tune": {"temporal_layers": "every-block"}, "edit": {"guidance": 5.0}}
    assert xl.recommended == {"tune": {"temporal_layers": "every-block"}, "edit": {"guidance": 5.0}}
    assert TuneSettings().resolve(xl.recommended).temporal_layers == "every-block"
    assert TuneSettings(temporal_layers="per-transformer").resolve(xl.recommended).temporal_layers == "per-transformer"
    with pytest.raises(ValueError, match="temporal_layers"):
        TuneSettings(temporal_layers="sometimes").resolve({})


def tune_run(tmp_path: Path, name: str, *extra) -> Path:
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    cli("tune", clip, "--model", "tiny-xl-random", "--prompt", SOURCE, "--frames", "4", "--steps", "2", "--seed", "3",
        "--out", tmp_path / name, *extra, *CPU)
    return tmp_path / name


def edit_frames(run: Path) -> list[np.ndarray]:
    from contextedit import ContextEditPipeline
    from contextedit.pipelines.tuned import TunedClip

    pipe = ContextEditPipeline.from_pretrained("tiny-xl-random", device="cpu")
    return pipe.edit(TunedClip.load(run), [TARGET], steps=2)


def test_an_sdxl_run_records_its_placement_and_loads_with_it(tmp_path):
    from contextedit import ContextEditPipeline
    from contextedit.pipelines.tuned import TunedClip

    run = tune_run(tmp_path, "run")  # SDXL's default
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["temporal_layers"] == "per-transformer" and manifest["version"] == 4
    tuned = load_safetensors(run / "tuned.safetensors")
    pipe = ContextEditPipeline.from_pretrained("tiny-xl-random", device="cpu")
    layers, params = expected_parameters(pipe.components.unet.config, "per-transformer")
    assert sum(t.numel() for t in tuned.values()) == params
    assert len({k.split(".temporal.")[0] for k in tuned if ".temporal." in k}) == layers
    clip = TunedClip.load(run)
    assert clip.temporal_layers == "per-transformer"
    unet = pipe.video_unet(clip)  # load_tuned checks the names and shapes: the same UNet as tuned
    assert len(temporal_names(unet)) == layers
    state = dict(unet.named_parameters())
    assert all(torch.equal(state[k], v) for k, v in tuned.items())
    first, again = edit_frames(run), edit_frames(run)
    assert len(first) == 1 and np.array_equal(first[0], again[0])


def test_old_manifests_mean_every_block(tmp_path):
    """A run whose manifest does not say (tuned before the choice existed) is an every-block run: it
    loads and edits; a per-transformer run whose field is lost no longer matches (the field is read)."""
    from contextedit.pipelines.tuned import TunedClip

    old = tune_run(tmp_path, "old", "--temporal-layers", "every-block")
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["temporal_layers"] == "every-block"
    tuned = load_safetensors(old / "tuned.safetensors")
    assert len({k.split(".temporal.")[0] for k in tuned if ".temporal." in k}) == 8
    del manifest["temporal_layers"]
    (old / "manifest.json").write_text(json.dumps({**manifest, "version": 3}))
    assert TunedClip.load(old).temporal_layers == "every-block"
    cli("edit", "--run", old, "--prompt", TARGET, "--steps", "2", "--format", "frames", "--out", tmp_path / "edits", *CPU)
    assert len(list((tmp_path / "edits").rglob("*.png"))) == 4

    new = tune_run(tmp_path, "new")
    manifest = json.loads((new / "manifest.json").read_text())
    (new / "manifest.json").write_text(json.dumps({**manifest, "temporal_layers": "sometimes"}))
    assert "temporal_layers" in cli("edit", "--run", new, "--prompt", TARGET, "--steps", "2", *CPU, code=2)
    del manifest["temporal_layers"]
    (new / "manifest.json").write_text(json.dumps(manifest))
    assert "do not match" in cli("edit", "--run", new, "--prompt", TARGET, "--steps", "2", *CPU, code=2)


@pytest.mark.parametrize("model", ["tiny", "tiny-v-random"])
def test_depth_one_models_get_the_same_layers_either_way(model):
    """SD-1.x / SD-2.x: every transformer has depth 1, so both placements are one set of layers —
    the same names, the same seeded initial weights, the same output."""
    from contextedit.models.loading import load_components
    from contextedit.pipelines.common import encode_text
    from contextedit.pipelines.tuning import build_video_model

    comps = load_components(model, "cpu", torch.float32)
    unets = {p: build_video_model(comps, False, seed=1, temporal_layers=p)[0].eval() for p in PLACEMENTS}
    layers, _ = expected_parameters(comps.unet.config, "every-block")
    assert layers == expected_parameters(comps.unet.config, "per-transformer")[0] == len(temporal_names(unets["every-block"]))
    a, b = (u.state_dict() for u in unets.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for u in unets.values():  # non-zero temporal outputs, so a missing layer would show
        for name in temporal_names(u):
            torch.nn.init.normal_(u.get_submodule(name).to_out.weight, std=0.02, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = encode_text(comps, [SOURCE]).expand(2, -1, -1)
    with torch.no_grad():
        out = [u(x, 10, encoder_hidden_states=text, cross_attention_kwargs={"num_frames": 2}).sample for u in unets.values()]
    assert torch.equal(*out)


def test_sd1_tunes_identically_under_both_placements():
    from contextedit import ContextEditPipeline
    from contextedit.testing import shapes

    pipe = ContextEditPipeline.from_pretrained("tiny-random", device="cpu")
    frames, _ = shapes.make_clip("circle", "red", "black", "right", start=(20, 30), frames=2)
    runs = {p: pipe.tune(frames, SOURCE, steps=2, seed=0, temporal_layers=p) for p in PLACEMENTS}
    assert pipe.tune(frames, SOURCE, steps=1).settings["temporal_layers"] == "every-block"  # SD's default
    a, b = (r.tuned for r in runs.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs["every-block"].losses == runs["per-transformer"].losses
