"""contextedit batch: planning errors before any work, a local run (a failure alone, resumable,
batch.json whole after every job), and the same jobs as Ray tasks on a local Ray."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import contextedit.commands.batch as batch_module
import contextedit.commands.jobs as jobs_module
import contextedit.commands.workers as workers_module
from contextedit.cli import app
from contextedit.commands.batch import plan_jobs
from contextedit.commands.workers import pinned_device
from contextedit.errors import UsageError

from helpers import MODEL, write_clip

runner = CliRunner()
SOURCE = "a red circle moving right on a black background"
EDITS = [{"prompt": "a blue circle moving right on a black background"}, {"prompt": "a red square moving right on a black background"}]
FAST = ["--model", MODEL, "--tune-steps", "2", "--edit-steps", "2", "--frames", "4", "--stride", "1", "--device", "cpu",
        "--format", "gif", "--quiet"]


def jobs_file(tmp_path, sets):
    path = tmp_path / "jobs" / "jobs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sets))
    return path


def two_clips(tmp_path, missing: bool = False):
    write_clip(tmp_path / "jobs" / "clips" / "a.mp4", frames=6)
    if not missing:
        write_clip(tmp_path / "jobs" / "clips" / "b.mp4", frames=6, colour="green")
    return jobs_file(tmp_path, [{"video": f"clips/{n}.mp4", "source_prompt": SOURCE, "edits": EDITS} for n in "ab"])


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_plan_refuses_bad_jobs_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="collide"):
        plan_jobs(jobs_file(tmp_path, [{"video": "x/a.mp4", "edits": EDITS}, {"video": "y/a.mp4", "edits": EDITS}]), {})
    with pytest.raises(UsageError, match=r"set 0 \(clip a.mp4\): unknown options colour"):
        plan_jobs(jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS, "options": {"colour": 1}}]), {})
    with pytest.raises(UsageError, match=r"set 1 \(clip b.mp4\): .*`inversion`"):
        plan_jobs(jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS},
                                       {"video": "b.mp4", "edits": EDITS, "options": {"inversion": "magic"}}]), {})
    with pytest.raises(UsageError, match="`tune_steps`"):
        plan_jobs(jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS, "options": {"tune_steps": 0}}]), {})
    with pytest.raises(UsageError, match="no 'video'"):
        plan_jobs(jobs_file(tmp_path, [{"edits": EDITS}]), {})
    # a missing clip is not a planning error: its job fails alone at run time
    jobs = plan_jobs(jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS, "options": {"guidance": 3, "frames": "all"}},
                                          {"video": "sub/b.mp4", "edits": EDITS}]), {"guidance": 7.5})
    assert [j.stem for j in jobs] == ["a", "b"] and jobs[0].video == str(tmp_path / "jobs" / "a.mp4")  # relative to the file
    assert jobs[0].options["guidance"] == 3 and jobs[1].options["guidance"] == 7.5
    assert jobs[0].tune_options("r").frames == "all" and jobs[0].edit_options("r", "e").guidance == 3


def test_cli_refuses_a_bad_jobs_file_with_exit_2(tmp_path):
    out = tmp_path / "out"
    bad = jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS, "options": {"steps": 5}}])
    result = runner.invoke(app, ["batch", str(bad), "--out", str(out), *FAST])
    assert result.exit_code == 2 and len(errors(result)) == 1 and "unknown options steps" in result.stderr
    twice = jobs_file(tmp_path, [{"video": "x/a.mp4", "edits": EDITS}, {"video": "y/a.mp4", "edits": EDITS}])
    result = runner.invoke(app, ["batch", str(twice), "--out", str(out), *FAST])
    assert result.exit_code == 2 and len(errors(result)) == 1 and "collide" in result.stderr
    result = runner.invoke(app, ["batch", str(twice), "--out", str(out), *FAST, "--inversion", "magic"])
    assert result.exit_code == 2 and "--inversion" in errors(result)[0]
    assert not out.exists()  # nothing was started


def test_workers_pin_auto_and_cuda_to_their_gpu():
    assert pinned_device("auto", 3) == "cuda:3" and pinned_device("cuda", 1) == "cuda:1" and pinned_device(None, 0) == "cuda:0"
    assert pinned_device("cpu", 2) == "cpu" and pinned_device("cuda:5", 2) == "cuda:5" and pinned_device("auto", None) == "auto"


@pytest.mark.slow
def test_local_batch_isolates_a_failure_resumes_and_skips_done_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    snapshots = []
    real_write = batch_module.write_json

    def write_and_read_back(path, data):  # batch.json as a reader sees it after each job
        real_write(path, data)
        snapshots.append(json.loads(path.read_text()))

    monkeypatch.setattr(batch_module, "write_json", write_and_read_back)
    jobs = two_clips(tmp_path, missing=True)
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(jobs), "--out", str(out), "--workers", "1", *FAST])
    assert result.exit_code == 1
    assert errors(result) == [f"Error: job b: video not found: {tmp_path / 'jobs' / 'clips' / 'b.mp4'}"]
    assert [sorted(s["jobs"]) for s in snapshots] in (
        [["a"], ["a", "b"]], [["b"], ["a", "b"]])  # written after each job, whole
    record = json.loads((out / "batch.json").read_text())["jobs"]
    assert record["a"]["status"] == "done" and record["b"]["status"] == "failed"
    assert len(record["a"]["outputs"]) == 2 and all(p.endswith(".gif") for p in record["a"]["outputs"])
    assert set(record["a"]["timings"]) >= {"tune_s", "inversion_s", "sampling_s_per_prompt", "total_s"}
    assert len(record["a"]["timings"]["sampling_s_per_prompt"]) == 2  # one edit call: inverted once, two prompts
    assert (out / "a" / "run" / "manifest.json").is_file() and (out / "a" / "edits" / "edits.json").is_file()
    stamp = (out / "a" / "run" / "manifest.json").stat().st_mtime_ns

    write_clip(tmp_path / "jobs" / "clips" / "b.mp4", frames=6, colour="green")
    # the runs above went through a spawned worker; resuming and skipping are the parent's, so the
    # runs below do their jobs in this process (a spawned worker costs seconds of imports)
    monkeypatch.setattr(workers_module, "local_runner", in_process)
    again = runner.invoke(app, ["batch", str(jobs), "--out", str(out), "--workers", "1", *FAST])
    assert again.exit_code == 0, again.stderr
    now = json.loads((out / "batch.json").read_text())["jobs"]
    assert now["b"]["status"] == "done" and now["a"] == record["a"]  # a was skipped: same timings
    assert (out / "a" / "run" / "manifest.json").stat().st_mtime_ns == stamp

    written = len(snapshots)
    third = runner.invoke(app, ["batch", str(jobs), "--out", str(out), *FAST])
    assert third.exit_code == 0 and len(snapshots) == written  # all done: nothing run, nothing rewritten
    (out / "a" / "edits" / "a-blue-circle-moving-right-on-a-black-background.gif").unlink()
    fourth = runner.invoke(app, ["batch", str(jobs), "--out", str(out), *FAST])  # an output gone: a runs again
    assert fourth.exit_code == 0 and sorted(snapshots[-1]["jobs"]) == ["a", "b"] and len(snapshots) == written + 1


def test_ray_missing_is_one_error_line(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *args, **kwargs)

    jobs = jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS}])
    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = runner.invoke(app, ["batch", str(jobs), "--out", str(tmp_path / "out"), "--ray", *FAST])
    assert result.exit_code == 2 and errors(result) == ['Error: --ray needs Ray: pip install -e ".[cluster]"']


@pytest.mark.slow
def test_batch_on_a_local_ray(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    jobs = two_clips(tmp_path)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # one Ray worker: both jobs, one import of torch
    try:
        result = runner.invoke(app, ["batch", str(jobs), "--out", str(tmp_path / "out"), "--ray", *FAST])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "batch.json").read_text())["jobs"]
    assert [record[s]["status"] for s in "ab"] == ["done", "done"]
    assert all(len(record[s]["outputs"]) == 2 for s in "ab")


# Issue 29 (1): folders named after an input never leave OUT (or the runs folder).

def write_frames(folder, n: int = 4):
    from PIL import Image

    from contextedit.testing import shapes

    folder.mkdir(parents=True, exist_ok=True)
    clip, _ = shapes.make_clip("square", "blue", "white", "left", start=(20, 30), frames=n)
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"frame{i}.png")
    return folder


def in_process(jobs, out, workers=None):  # batch's jobs run here, not in a spawned worker: the same run_job
    return ((job, batch_module.run_job(job, out)) for job in jobs)


@pytest.mark.slow
def test_batch_keeps_dot_named_clips_and_dotdot_folders_inside_out(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))  # tune's runs/latest pointer: outside work
    monkeypatch.setattr(workers_module, "local_runner", in_process)
    work = tmp_path / "work"
    write_clip(work / "jobs" / "...mp4", frames=6)                  # its stem is ".."
    write_frames(work / "jobs" / "shots")
    (work / "jobs" / "shots" / "take1").mkdir()                    # "shots/take1/.." is the frame folder shots
    jobs = jobs_file(work, [{"video": "...mp4", "source_prompt": SOURCE, "edits": EDITS[:1]},
                            {"video": "shots/take1/..", "source_prompt": "a blue square", "edits": [{"prompt": "a red square"}]}])
    out = work / "out"
    result = runner.invoke(app, ["batch", str(jobs), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["jobs", "out"]  # nothing beside OUT: no ../run, ../edits
    assert sorted(p.name for p in (work / "jobs").iterdir()) == ["...mp4", "jobs.json", "shots"]
    record = json.loads((out / "batch.json").read_text())["jobs"]
    assert sorted(record) == ["shots", "untitled"]
    for name, job in record.items():
        assert job["status"] == "done" and job["run"] == str(out / name / "run")
        assert all(str(out / name / "edits") == str(Path(p).parent) for p in job["outputs"])
        assert (out / name / "run" / "manifest.json").is_file()
    assert record["shots"]["video"] == str(work / "jobs" / "shots")


def test_folder_names_are_sanitised_and_still_refused_when_they_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    from contextedit.runs import clip_name, default_run_dir

    write_frames(tmp_path / "jobs" / "elsewhere" / "Take 2" / "inner")
    (tmp_path / "jobs" / "link").symlink_to(tmp_path / "jobs" / "elsewhere" / "Take 2" / "inner")
    # "link/.." is the folder the system reaches through the link, Take 2, not the jobs folder
    jobs = plan_jobs(jobs_file(tmp_path, [{"video": "...mp4", "edits": EDITS}, {"video": "link/..", "edits": EDITS}]), {})
    assert [j.stem for j in jobs] == ["untitled", "take-2"]
    assert jobs[1].video == str(tmp_path / "jobs" / "elsewhere" / "Take 2")
    for name in ("..", ".", "/", "...mp4", "../..", "a/..", ".mp4"):
        assert clip_name(name) not in ("", ".", "..") and "/" not in clip_name(name)
        assert default_run_dir(name).parent == tmp_path / "runs"
    out = tmp_path / "out"
    twice = jobs_file(tmp_path, [{"video": "Clip A.mp4", "edits": EDITS}, {"video": "x/clip-a.mp4", "edits": EDITS}])
    result = runner.invoke(app, ["batch", str(twice), "--out", str(out), *FAST])
    assert result.exit_code == 2 and len(errors(result)) == 1 and "'clip-a'" in result.stderr and "collide" in result.stderr
    dots = jobs_file(tmp_path, [{"video": "...mp4", "edits": EDITS}, {"video": "..mp4", "edits": EDITS}])
    result = runner.invoke(app, ["batch", str(dots), "--out", str(out), *FAST])
    assert result.exit_code == 2 and len(errors(result)) == 1 and "'untitled'" in result.stderr
    assert not out.exists()


def test_tune_names_a_frame_folder_ending_in_dotdot_after_the_folder_it_resolves_to(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    write_frames(tmp_path / "shots")
    (tmp_path / "shots" / "take1").mkdir()
    result = runner.invoke(app, ["tune", str(tmp_path / "shots" / "take1" / ".."), "--model", MODEL, "--prompt", SOURCE,
                                 "--steps", "1", "--frames", "2", "--stride", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == ["shots"]  # not runs/untitled
    assert (tmp_path / "runs" / "shots" / "manifest.json").is_file()


# Issue 29 (9): every option is checked before the first job, and the error names the job and the option.

def test_a_duplicate_prompt_is_refused_before_any_tuning(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs_module, "components", lambda options: pytest.fail("a model was loaded"))
    write_clip(tmp_path / "jobs" / "a.mp4", frames=6)
    write_clip(tmp_path / "jobs" / "b.mp4", frames=6)
    jobs = jobs_file(tmp_path, [{"video": "a.mp4", "source_prompt": SOURCE, "edits": EDITS},
                                {"video": "b.mp4", "source_prompt": SOURCE, "edits": [EDITS[0], {"prompt": f"  {EDITS[0]['prompt']} "}]}])
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(jobs), "--out", str(out), *FAST])
    assert result.exit_code == 2 and len(errors(result)) == 1, result.stderr
    assert "set 1 (clip b.mp4)" in result.stderr and "same output name" in result.stderr and "Traceback" not in result.output
    assert not out.exists()  # refused before the first job: no run folder, no batch.json


def test_a_value_of_the_wrong_type_names_the_option_and_the_job(tmp_path):
    out = tmp_path / "out"
    for options, named in (({"guidance": "lots"}, '"guidance" must be a number or null'),
                           ({"seed": "3"}, '"seed" must be a whole number'),
                           ({"adapter": "yes"}, '"adapter" must be true or false'),
                           ({"reweight": "blue=2"}, '"reweight" must be a list of text')):
        jobs = jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS},
                                    {"video": "clips/b.mp4", "edits": EDITS, "options": options}])
        result = runner.invoke(app, ["batch", str(jobs), "--out", str(out), *FAST])
        assert result.exit_code == 2 and len(errors(result)) == 1, result.stderr
        line = errors(result)[0]
        assert f"jobs file {jobs}, set 1 (clip clips/b.mp4): option {named}" in line and "wrong type" not in line
    assert not out.exists()
    # a whole number is a number: JSON's 3 for a float option stays accepted
    plan_jobs(jobs_file(tmp_path, [{"video": "a.mp4", "edits": EDITS, "options": {"guidance": 3, "lr": 1}}]), {})
