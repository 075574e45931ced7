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


@pytest.fixture(scope="session", autouse=True)
def _scratch_runs(tmp_path_factory):
    """Run folders and the ``runs/latest`` pointer of a test that does not take ``runs`` go to a
    scratch folder, never the checkout's (or the user's $CONTEXTEDIT_RUNS): a CLI tune given only
    ``--out`` still writes ``runs/latest`` there."""
    with pytest.MonkeyPatch.context() as mp:  # restores the variable, or its absence, afterwards
        mp.setenv("CONTEXTEDIT_RUNS", str(tmp_path_factory.mktemp("runs")))
        yield


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
