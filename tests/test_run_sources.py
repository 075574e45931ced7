"""Runs tuned on single files and LoRAs (issue 32) and what later commands do with them: a batch job
edits with its run's LoRAs, a resumed tune refuses a LoRA that changed, and an edit names a moved
file by path and sha256. Files from tests/source_files.py; nothing is mocked."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contextedit.commands.batch import plan_jobs, run_job
from contextedit.commands.tune import CHECKPOINT, TuneOptions, tune
from contextedit.pipelines.training import Trainer
from contextedit.runs import sha256_file as sha256

from helpers import MODEL, write_clip
from source_files import CPU, PROMPT, build_files, fails, invoke, lora_file

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


@contextlib.contextmanager
def _stopping(calls: dict):
    def advance(**_):
        calls["n"] += 1
        if calls["n"] == 2:  # after step 1's checkpoint, before step 2's
            raise RuntimeError("stopped")
    yield advance


def test_resume_refuses_a_lora_that_changed(files, tmp_path, runs):
    """The checkpoint records the LoRAs; `tune --resume` checks them (single_file.check_unchanged)
    before any work: a changed file, or other `lora` values, is one line; the original resumes."""
    lora = shutil.copy(lora_file(files), tmp_path / "style.safetensors")
    clip = write_clip(tmp_path / "clip.mp4", frames=4)
    run = tmp_path / "run"
    calls = {"n": 0}
    with pytest.raises(RuntimeError, match="stopped"):
        tune(TuneOptions(video=str(clip), prompt=PROMPT, frames=2, stride=1, steps=3, checkpoint_every=1, out=str(run),
                         model=MODEL, device="cpu", checkpointing=False, lora=[f"{lora}:0.8"]),
             progress=lambda description, total: _stopping(calls))
    recorded = {"file": str(Path(lora).resolve()), "sha256": sha256(lora), "scale": 0.8}
    assert Trainer.recorded_sources(run / CHECKPOINT) == {"loras": [recorded]}
    resume = ["tune", clip, "--model", MODEL, "--prompt", PROMPT, "--steps", "3", "--checkpoint-every", "1", "--out", run,
              "--resume", *FAST]
    shutil.copy(lora_file(files, "exact"), lora)  # another LoRA for this model, at the same path
    line = fails([*resume, "--lora", f"{lora}:0.8"], str(recorded["file"]), recorded["sha256"], "changed", "--overwrite")
    assert line.startswith(f"Error: the interrupted tune {run / CHECKPOINT}")
    shutil.copy(lora_file(files), lora)
    fails(resume, "--lora", f"{recorded['file']}:0.8, not none")  # the LoRA left out
    fails([*resume, "--lora", f"{lora}:0.5"], f"{recorded['file']}:0.8, not {recorded['file']}:0.5")
    assert (run / CHECKPOINT).is_file() and not (run / "manifest.json").exists()
    result = invoke([*resume, "--lora", f"{lora}:0.8"])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["loras"] == [recorded] and len(manifest["loss_curve"]) == 3


def test_edit_names_the_moved_single_file_and_lora_it_needs(files, tmp_path, runs):
    """A run's single file or LoRA moved away: `edit` says, in one line, the path and the whole
    sha256 of the file it needs."""
    model = Path(shutil.copy(files / "tiny.safetensors", tmp_path / "model.safetensors")).resolve()
    lora = Path(shutil.copy(lora_file(files), tmp_path / "style.safetensors")).resolve()
    result = invoke(["tune", write_clip(tmp_path / "clip.mp4", frames=4), "--model", model, "--model-config",
                     files / "folder", "--lora", lora, "--prompt", PROMPT, "--steps", "1", "--out", tmp_path / "run", *FAST])
    assert result.exit_code == 0, result.stderr
    edit = ["edit", "--prompt", TARGET, "--run", tmp_path / "run", "--steps", "2", "--out", tmp_path / "e", *CPU]
    (tmp_path / "moved").mkdir()
    for file in (model, lora):
        digest = sha256(file)
        file.rename(tmp_path / "moved" / file.name)
        fails(edit, f"{file} (sha256 {digest}), which is missing")
        (tmp_path / "moved" / file.name).rename(file)


def test_resume_refuses_another_single_file_or_motion_adapter(tmp_path):
    """The checkpoint's single file and motion adapter, as recorded, against what is loaded now:
    another sha256 (the file changed in place), another folder, or none is one line."""
    from contextedit.errors import UsageError
    from contextedit.pipelines.tuning import check_resumed_sources

    checkpoint = tmp_path / CHECKPOINT
    file = {"path": "/m/model.safetensors", "sha256": "a" * 64, "family": "sd1", "config": "tiny-random"}
    motion = {"folder": "/m/motion", "sha256": "b" * 64}
    recorded = {"model_file": file, "motion_adapter": motion}
    check_resumed_sources(recorded, dict(recorded), checkpoint)  # the same: resumes
    for current, said in (({"model_file": {**file, "sha256": "c" * 64}, "motion_adapter": motion},
                           f"single file /m/model.safetensors (sha256 {'a' * 64}), not /m/model.safetensors (sha256 {'c' * 64})"),
                          ({"model_file": file}, f"motion adapter /m/motion (sha256 {'b' * 64}), not none"),
                          ({"model_file": file, "motion_adapter": {"id": "guoyww/animatediff-motion-adapter-v1-5-2"}},
                           "not guoyww/animatediff-motion-adapter-v1-5-2;")):
        with pytest.raises(UsageError) as error:
            check_resumed_sources(recorded, current, checkpoint)
        assert said in str(error.value) and str(error.value).startswith(f"the interrupted tune {checkpoint} was tuned with")
