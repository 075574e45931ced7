import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
# Child processes (the CLI, the web UI's server, batch and Ray workers, bench scripts) inherit this:
# with two OpenMP threads each beside the other test worker, a tiny model's ops stall at every
# barrier (measured: a forward from ~0.03 s to ~2 s on 2 shared cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

# Tiny models are overhead-bound: one thread is as fast, deterministic, and does not fight
# other processes for the cores.
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    """Run folders (and ``runs/latest``) and default output folders in the test's own tmp_path."""
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 (each loads torch and the tiny models; past 4
    the suite's few long tests, not the workers, set its length)."""
    return max(1, min(os.cpu_count() or 1, 4))
