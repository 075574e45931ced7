"""Smoke run of the performance benchmark (bench/perf.py) on the tiny-random model."""

from __future__ import annotations

import json

import pytest

from helpers import bench_script


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
               *(v for k, v in doc["ratios"].items() if k != "targets")]
    assert all(isinstance(v, float) and v > 0 for v in figures), figures


@pytest.mark.parametrize("kind", ["tune", "edit"])
def test_memory_probe_at_two_frames(perf, kind):
    import torch

    assert perf.memory_probe(kind, perf.PRESETS["tiny"], torch.device("cpu"), frames=2) > 0


def test_cuda_without_cuda_exits_2(perf, capsys, monkeypatch):
    monkeypatch.setattr(perf.torch.cuda, "is_available", lambda: False)
    assert perf.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err
