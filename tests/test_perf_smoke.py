"""Smoke run of the performance benchmark (bench/perf.py) on the tiny-random model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import bench_script

ROOT = Path(__file__).resolve().parents[1]
# Every key of a result's `ratios` (issue 31): the ratios, and the modes they were measured in.
RATIO_KEYS = {"tune_over_floor_step", "edit_over_floor", "edit_extra_prompt_over_floor", "inversion_over_floor",
              "sampling_over_floor", "adapter_share", "inversion", "source", "targets"}


@pytest.fixture(scope="module")
def perf():
    with bench_script("perf") as module:
        yield module


@pytest.mark.parametrize("model", ["tiny-random", "tiny-xl-random"])  # the SD-1.5 and the SDXL presets' code path
def test_tiny_run_writes_every_figure(perf, tmp_path, model):
    # The memory probes are fresh interpreters (~10 s of imports each), so the main run skips
    # them here and the probe itself is checked in-process below.
    out = tmp_path / "perf.json"
    assert perf.main(["--model", model, "--device", "cpu", "--no-memory", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    for key in ("device", "torch", "diffusers", "dtype", "frames", "size", "command"):
        assert doc[key]
    assert (doc["model"], doc["frames"], doc["steps"]) == (model, 2, 2)
    assert set(doc["floor_unet_fwd_ms"]) == {"2", "4"}
    figures = [*doc["floor_unet_fwd_ms"].values(), doc["floor_train_step_ms"], doc["tune_step_ms"], doc["inversion_s"],
               doc["sampling_s_per_prompt"], doc["edit_s"], doc["adapter_share"],
               *(v for k, v in doc["ratios"].items() if k not in ("targets", "inversion", "source"))]
    assert all(isinstance(v, float) and v > 0 for v in figures), figures
    assert doc["prompts"] == 2
    # where tune puts the temporal layers (SDXL's family: one per transformer) and what it trains:
    # to_q 2·d² per block + 4d² + d per temporal layer (tiny-random: 7 blocks at 32–64 channels;
    # tiny-xl-random: 8 blocks at 64, 4 temporal layers — tests/test_temporal_layers.py counts them)
    expected = {"tiny-random": ("every-block", 7, 117_088), "tiny-xl-random": ("per-transformer", 4, 131_328)}[model]
    assert (doc["temporal_layers"], doc["temporal_layer_count"], doc["tune_trained_parameters"]) == expected
    check_ratios(doc, perf)


def check_ratios(doc: dict, perf) -> None:
    """Every `ratios` key is there, and each ratio is what the file's own timings give."""
    from contextedit.pipelines.edit_options import EditSettings

    r = doc["ratios"]
    assert set(r) == RATIO_KEYS, set(r) ^ RATIO_KEYS
    steps, frames, fwd_ms = doc["steps"], doc["frames"], doc["floor_unet_fwd_ms"]
    floor_inversion_s = steps * fwd_ms[str(frames)] / 1000       # T bare forwards at batch F
    floor_prompt_s = steps * fwd_ms[str(2 * frames)] / 1000      # T guided ones at batch 2F
    expected = {
        "tune_over_floor_step": doc["tune_step_ms"] / doc["floor_train_step_ms"],
        "edit_over_floor": (doc["inversion_s"] + doc["sampling_s_first_prompt"]) / (floor_inversion_s + floor_prompt_s),
        "edit_extra_prompt_over_floor": doc["sampling_s_per_prompt"] / floor_prompt_s,
        "inversion_over_floor": doc["inversion_s"] / floor_inversion_s,
        "sampling_over_floor": doc["sampling_s_per_prompt"] / floor_prompt_s,
        "adapter_share": doc["adapter_fwd_bwd_ms"] / doc["tune_step_ms"],
    }
    assert {k: r[k] for k in expected} == pytest.approx(expected, rel=1e-9)
    assert r["inversion"] == doc["inversion"] == EditSettings.builtin("inversion")
    assert r["source"] == doc["source"] and r["source"] in perf.SOURCE_MODES
    if not perf.has_source_option():  # edit has no --source yet: its source branch is the stored one
        assert r["source"] == "stored"


def test_source_modes_without_edit_source_exit_2(perf, capsys, monkeypatch):
    monkeypatch.setattr(perf, "has_source_option", lambda: False)
    assert perf.main(["--source", "live", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--source live" in err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_script_dry_run_writes_every_ratio(perf, tmp_path):
    # bench/gpu.sh's CUDA commands, run on the CPU at tiny sizes (2 frames, T = 2): ~15 s.
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("DRY_MEMORY_FRAMES", None)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    log = (tmp_path / "gpu-sh.log").read_text()
    assert proc.returncode == 0, log[-3000:] + proc.stderr[-2000:]
    sources = ["stored", "live"] if perf.has_source_option() else ["stored"]
    names = {f"perf-cuda-{kind}-{source}.json" for kind in ("sd15", "sdxl") for source in sources}
    assert {p.name for p in tmp_path.glob("perf-cuda*.json")} == names
    for name in sorted(names):
        doc = json.loads((tmp_path / name).read_text())
        assert doc["device"] == "cpu" and doc["model"] in ("tiny-random", "tiny-xl-random")
        assert (doc["frames"], doc["steps"], doc["dtype"]) == (2, 2, "fp32")
        assert doc["source"] == name.removesuffix(".json").rsplit("-", 1)[1]
        check_ratios(doc, perf)
    status = [line.split()[0] for line in log.splitlines() if line.split()[:1] in (["OK"], ["FAIL"], ["SKIP"])]
    assert status == ["OK"] * len(names), log[-3000:]


@pytest.mark.parametrize("kind", ["tune", "edit"])
def test_memory_probe_at_two_frames(perf, kind):
    import torch

    assert perf.memory_probe(kind, perf.PRESETS["tiny"], torch.device("cpu"), frames=2) > 0


def test_cuda_without_cuda_exits_2(perf, capsys, monkeypatch):
    monkeypatch.setattr(perf.torch.cuda, "is_available", lambda: False)
    assert perf.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err


@pytest.mark.slow
def test_tune_step_parts_times_every_arm(tmp_path):
    """bench/tune_step_parts.py on tiny-random: four arms, each the median of its rounds and over the
    floor by its own ratio; the arms train to_q (floor, sparse-causal), then the temporal layers'
    parameters too, then the adapter's (counted here from freshly built modules)."""
    import statistics

    import torch

    from contextedit.attention.processors import TemporalAttention
    from contextedit.models.adapter import ContextAdapter, config_for_unet
    from contextedit.models.inflate import inflate_unet, shared_copy
    from contextedit.models.loading import load_components

    with bench_script("tune_step_parts") as parts:
        out = tmp_path / "parts.json"
        assert parts.main(["--model", "tiny-random", "--rounds", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    arms = ("floor", "sparse_causal", "temporal", "tune")
    assert tuple(doc["step_ms"]) == arms and doc["model"] == "tiny-random"
    for arm in arms:
        assert len(doc["rounds_ms"][arm]) == 3
        assert doc["step_ms"][arm] == pytest.approx(statistics.median(doc["rounds_ms"][arm]), rel=1e-12)
        assert doc["over_floor"][arm] == pytest.approx(doc["step_ms"][arm] / doc["step_ms"]["floor"], rel=1e-12)
        ratios = [a / f for a, f in zip(doc["rounds_ms"][arm], doc["rounds_ms"]["floor"])]
        assert doc["paired_over_floor"][arm] == pytest.approx(statistics.median(ratios), rel=1e-12)
    unet = inflate_unet(shared_copy(load_components("tiny-random", "cpu", torch.float32).unet),
                        temporal_layers=doc["temporal_layers"])
    temporal = sum(p.numel() for m in unet.modules() if isinstance(m, TemporalAttention) for p in m.parameters())
    adapter = sum(p.numel() for p in ContextAdapter(**config_for_unet(unet)).parameters())
    n = doc["trained_parameters"]
    assert temporal > 0 and n["sparse_causal"] == n["floor"] > 0
    assert (n["temporal"] - n["floor"], n["tune"] - n["temporal"]) == (temporal, adapter)
