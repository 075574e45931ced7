"""Runs tuned on single files and LoRAs (issue 32) and what later commands do with them: a batch job
edits with its run's LoRAs. Files from tests/source_files.py; nothing is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contextedit.commands.batch import plan_jobs, run_job
from contextedit.runs import sha256_file as sha256

from helpers import MODEL, write_clip
from source_files import CPU, PROMPT, build_files, invoke, lora_file

pytest.importorskip("peft")

TARGET = "a blue circle moving right on a black background"
FAST = ["--frames", "2", "--stride", "1", "--no-checkpointing", *CPU]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("sources"))


def frames(folder: Path) -> list[np.ndarray]:
    found = sorted(folder.rglob("*.png"))
    assert found, f"no frames in {folder}"
    return [np.asarray(Image.open(p)) for p in found]


def edit_frames(run: Path, out: Path, *extra) -> list[np.ndarray]:
    result = invoke(["edit", "--prompt", TARGET, "--run", run, "--steps", "2", "--format", "frames", "--out", out, *extra,
                     *CPU])
    assert result.exit_code == 0, result.stderr
    return frames(out)


def test_a_batch_job_edits_with_its_runs_loras(files, tmp_path, runs):
    """batch tunes and edits on one model loaded with the job's LoRAs; its edit is the one `edit`
    makes of that run, which fuses the LoRAs the run's manifest records."""
    write_clip(tmp_path / "jobs" / "clip.mp4", frames=4)
    (tmp_path / "jobs" / "jobs.json").write_text(json.dumps(
        [{"video": "clip.mp4", "source_prompt": PROMPT, "edits": [{"prompt": TARGET}]}]))
    lora = [f"{lora_file(files)}:0.8"]
    [job] = plan_jobs(tmp_path / "jobs" / "jobs.json", {"model": MODEL, "lora": lora, "tune_steps": 1, "edit_steps": 2,
                                                         "frames": 2, "stride": 1, "device": "cpu", "format": "frames",
                                                         "checkpointing": False})
    record = run_job(job, tmp_path / "out")
    assert record["status"] == "done", record
    recorded = [{"file": str(lora_file(files).resolve()), "sha256": sha256(lora_file(files)), "scale": 0.8}]
    run = Path(record["run"])
    assert json.loads((run / "manifest.json").read_text())["loras"] == recorded
    assert json.loads(Path(record["edits_json"]).read_text())["loras"] == recorded
    batch = frames(tmp_path / "out" / "clip" / "edits")
    reference = edit_frames(run, tmp_path / "edit")  # the run's LoRAs, from its manifest
    assert len(batch) == len(reference) and all(np.array_equal(a, b) for a, b in zip(batch, reference))
    without = edit_frames(run, tmp_path / "none", "--lora", "none")  # the comparison has power: the LoRA shows
    assert not all(np.array_equal(a, b) for a, b in zip(reference, without))
