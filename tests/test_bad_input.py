"""Bad input, faults and safety through the real CLI (issue 9).

Every refused case must end with exit 2 (bad usage or input) or 1 (failure while running), exactly
one ``Error:`` line on stderr that names the problem and the fix, no traceback, and nothing left in
the output location. Validation cases run before any model is loaded, so they take milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.fileio import load_safetensors, save_safetensors

from helpers import MODEL, interruptible, write_clip, write_images

runner = CliRunner()
PROMPT = "a red circle moving right on a black background"
CPU = ["--device", "cpu", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the contract


def invoke(args: list):
    """The CLI in-process; Python warnings it lets through would reach a user's terminal."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = runner.invoke(app, [str(a) for a in args])
    assert not [w for w in shown if "--debug" not in args], [str(w.message) for w in shown]
    return result


def fails(args: list, code: int, *words: str, out: Path | None = None, before: dict | None = None) -> str:
    """Run the CLI; assert exit ``code``, one ``Error:`` line holding ``words``, no traceback,
    and ``out`` absent (or, when ``before`` is given, unchanged). Returns the line."""
    result = invoke(args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    if out is not None:
        assert (_snapshot(out) == before) if before is not None else not out.exists(), _snapshot(out)
    return lines[0]


def _snapshot(folder: Path) -> dict:
    """name -> bytes of every file under ``folder`` (hidden temp files included)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture()
def clip(tmp_path) -> Path:
    return write_clip(tmp_path / "clip.mp4", frames=8)


def _tune_args(video, out, *extra):
    return ["tune", video, "--model", MODEL, "--prompt", PROMPT, "--frames", "2", "--steps", "1",
            "--no-checkpointing", "--out", out, *CPU, *extra]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    """One real tiny run (2 frames, 1 step), copied by tests that tamper with it."""
    folder = tmp_path_factory.mktemp("tuned")
    video = write_clip(folder / "clip.mp4", frames=8)
    with pytest.MonkeyPatch.context() as mp:  # set up before the function-scoped `runs` fixture
        mp.setenv("CONTEXTEDIT_RUNS", str(folder / "runs"))
        result = invoke(_tune_args(video, folder / "run"))
    assert result.exit_code == 0, result.stderr
    return folder / "run"


def _copy_run(tuned: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tuned, tmp_path / "run"))


# --------------------------------------------------------------------------- tune: the source clip


def test_missing_video(tmp_path):
    fails(_tune_args(tmp_path / "nope.mp4", tmp_path / "out"), 2, "not found", "nope.mp4", out=tmp_path / "out")


@pytest.mark.parametrize("content", [b"", b"hello, I am not a video\n" * 20], ids=["empty", "text"])
def test_unreadable_video(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    fails(_tune_args(bad, tmp_path / "out"), 2, "bad.mp4", "decode", out=tmp_path / "out")


def test_truncated_video(tmp_path, clip):
    whole = clip.read_bytes()
    clip.write_bytes(whole[: len(whole) // 2])
    fails(_tune_args(clip, tmp_path / "out", "--frames", "8", "--stride", "1"), 2, "truncated", out=tmp_path / "out")


def test_clip_shorter_than_frames_times_stride(tmp_path, clip):
    line = fails(_tune_args(clip, tmp_path / "out", "--frames", "8", "--stride", "2"), 2, "has 8 frames", "needs 15",
                 out=tmp_path / "out")
    assert "--frames 4" in line  # a fitting alternative is offered


def test_one_frame_video(tmp_path):
    one = write_clip(tmp_path / "one.mp4", frames=1)
    fails(_tune_args(one, tmp_path / "out"), 2, "has 1 frame but", "--frames 1", out=tmp_path / "out")


# --------------------------------------------------------------------------- tune: option values


@pytest.mark.parametrize("option, value, words", [
    ("--frames", "0", ("--frames", "at least 1")),
    ("--stride", "0", ("--stride", "at least 1")),
    ("--steps", "0", ("--steps", "at least 1")),
    ("--lr", "0", ("--lr", "positive")),
    ("--lr", "nan", ("--lr", "positive")),
    ("--adapter-lr", "-1", ("--adapter-lr", "positive")),
    ("--adapter-init", "missing-adapter", ("--adapter-init", "does not exist", "base, none")),
    ("--adapter-init", "adapter.ckpt", ("pickle", "safetensors")),
    ("--adapter-input", "noisy", ("--adapter-input", "clean", "predicted")),
    ("--size", "100x100", ("multiple of 8", "104x104")),
    ("--size", "big", ("WIDTHxHEIGHT",)),
    ("--size", "99992x99992", ("out of range", "4096")),
    ("--prompt", "", ("empty",)),
    ("--prompt", "   ", ("empty",)),
    ("--dtype", "fp16", ("fp16", "fp32")),
])
def test_tune_bad_option(tmp_path, clip, option, value, words):
    fails(_tune_args(clip, tmp_path / "out", option, value), 2, *words, out=tmp_path / "out")


@pytest.mark.parametrize("command", ["tune", "generate", "eval", "caption"])
def test_device_cuda_without_cuda(tmp_path, clip, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine that has one
    args = {
        "tune": _tune_args(clip, tmp_path / "out"),
        "generate": ["generate", "--prompt", PROMPT, "--model", MODEL, "--out", tmp_path / "out"],
        "eval": ["eval", clip, "--prompt", PROMPT, "--clip-model", "tiny"],
        "caption": ["caption", clip, "--frames", "2", "--caption-model", "tiny"],
    }[command]
    fails([*args, "--device", "cuda"], 2, "CUDA is not available", "--device cpu", out=tmp_path / "out")


def test_absurd_size_is_refused_before_loading(tmp_path, clip, monkeypatch):
    def no_loading(*_, **__):
        raise AssertionError("the model was loaded before the size was checked")

    monkeypatch.setattr("contextedit.pipeline.load_components", no_loading)
    monkeypatch.setattr("contextedit.video.read_video", no_loading)
    fails(_tune_args(clip, tmp_path / "out", "--size", "65536x65536"), 2, "out of range", out=tmp_path / "out")


def test_resume_without_checkpoint(tmp_path, clip):
    fails(_tune_args(clip, tmp_path / "out", "--resume"), 2, "nothing to resume", "without --resume", out=tmp_path / "out")


# --------------------------------------------------------------------------- models


def test_model_folder_without_model_index(tmp_path, clip):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    fails(_tune_args(clip, tmp_path / "out", "--model", folder), 2, "model_index.json", out=tmp_path / "out")


def test_model_folder_with_only_pickle_weights(tmp_path, clip):
    folder = tmp_path / "model"
    for part in ("unet", "vae", "text_encoder"):
        (folder / part).mkdir(parents=True)
        (folder / part / "config.json").write_text("{}")
        (folder / part / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    fails(_tune_args(clip, tmp_path / "out", "--model", folder), 2, "pickle", "safetensors", out=tmp_path / "out")


def test_model_given_as_a_pickle_file(tmp_path, clip):
    (tmp_path / "sd15.ckpt").write_bytes(b"\x80\x02pickle")
    fails(_tune_args(clip, tmp_path / "out", "--model", tmp_path / "sd15.ckpt"), 2, "pickle", ".safetensors",
          out=tmp_path / "out")


def test_unknown_model_offline_fails_with_advice(tmp_path, clip):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    fails(_tune_args(clip, tmp_path / "out", "--model", "nobody/no-such-model"), 2, "nobody/no-such-model",
          "local", "--model tiny", out=tmp_path / "out")


def test_cuda_out_of_memory_is_one_line(tmp_path, clip, monkeypatch):
    def oom(*_, **__):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("contextedit.pipelines.tuning.encode_latents", oom)
    monkeypatch.setattr("contextedit.device.peak_memory_gib", lambda device: 71.25)
    fails(_tune_args(clip, tmp_path / "out"), 1, "out of memory", "peak 71.2 GiB", "--frames", "--size",
          "--checkpointing", "--dtype", out=tmp_path / "out")


# --------------------------------------------------------------------------- outputs


def test_existing_output_without_overwrite(tmp_path, clip):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    fails(_tune_args(clip, out), 2, "already exists", "--overwrite", out=out, before={"keep.txt": b"mine"})


@pytest.mark.parametrize("command", ["tune", "generate", "train-adapter", "eval"])
def test_output_under_a_regular_file(tmp_path, clip, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    target = blocker / "out"
    args = {
        "tune": _tune_args(clip, target),
        "generate": ["generate", "--prompt", PROMPT, "--model", MODEL, "--steps", "1", "--out", target, *CPU],
        "train-adapter": ["train-adapter", write_images(tmp_path / "data", n=2), "--out", target / "a",
                          "--model", MODEL, "--steps", "1", *CPU],
        "eval": ["eval", clip, "--prompt", PROMPT, "--clip-model", "tiny", "--json", target / "r.json", *CPU],
    }[command]
    fails(args, 2, "blocker", "--", out=target)
    assert blocker.read_text() == "a file, not a folder"


# --------------------------------------------------------------------------- edit


@pytest.mark.parametrize("args, words", [
    (["--prompt", ""], ("empty",)),
    (["--prompt", "a cat", "--steps", "0"], ("--steps", "at least 1")),
    (["--prompt", "a cat", "--guidance", "nan"], ("--guidance", "finite")),
    (["--prompt", "a cat", "--cross-fusion", "2"], ("--cross-fusion", "between 0 and 1")),
    (["--prompt", "a cat", "--format", "avi"], ("--format", "mp4")),
    (["--prompt", "a cat", "--inversion", "exact"], ("--inversion", "direct")),
    (["--prompt", "a cat", "--self-fusion", "1.5"], ("--self-fusion", "between 0 and 1")),
    (["--prompt", "a cat", "--cross-fusion", "-0.1"], ("--cross-fusion", "between 0 and 1")),
    (["--prompt", "a cat", "--reweight", "cat"], ("--reweight", "WORD=SCALE")),
    (["--prompt", "a cat", "--reweight", "cat=-1"], ("--reweight", "WORD=SCALE")),
    (["--prompt", "a cat", "--fusion-layers", "some"], ("--fusion-layers", "coarse")),
    (["--prompt", "a cat", "--local-blend", "yes"], ("--local-blend", "auto")),
    (["--prompt", "a cat", "--self-half", "uncond"], ("--self-half", "cond")),
    (["--prompt", "a cat", "--null-text-steps", "0"], ("--null-text-steps", "at least 1")),
    (["--prompt", "a cat", "--blend-stop", "1.5"], ("--blend-stop", "between 0 and 1", "sampling steps")),
    (["--prompt", "a cat", "--background-noise", "-1"], ("--background-noise", "between 0 and 1", "fresh noise")),
    (["--prompt", "a cat", "--offset-inside", "2"], ("--offset-inside", "between 0 and 1", "offset")),
    (["--prompt", "a cat", "--region-attention", "sideways"], ("--region-attention", "more, less")),
    (["--prompt", "a cat", "--background-negative", "nobody"], ("--background-negative", "source")),
    (["--prompt", "a cat", "--composite", "maybe"], ("--composite", "auto")),
])
def test_edit_bad_option(tmp_path, args, words):
    fails(["edit", *args, "--run", tmp_path / "run", "--out", tmp_path / "out", *CPU], 2, *words, out=tmp_path / "out")


def test_edit_run_missing(tmp_path):
    fails(["edit", "--prompt", "a cat", "--run", tmp_path / "nope", "--out", tmp_path / "out", *CPU], 2,
          "not found", "--run", out=tmp_path / "out")


def test_edit_without_any_run(tmp_path):
    fails(["edit", "--prompt", "a cat", *CPU], 2, "no tuned run", "contextedit tune")


def test_edit_run_without_manifest(tmp_path):
    (tmp_path / "run").mkdir()
    fails(["edit", "--prompt", "a cat", "--run", tmp_path / "run", "--out", tmp_path / "out", *CPU], 2,
          "manifest.json", "tune again", out=tmp_path / "out")


def test_edit_run_tuned_on_another_model(tmp_path, tuned):
    run = _copy_run(tuned, tmp_path)
    fails(["edit", "--prompt", "a cat", "--run", run, "--model", "tiny", "--out", tmp_path / "out", *CPU], 2,
          "tuned on 'tiny-random'", "drop --model", out=tmp_path / "out")


def test_edit_manifest_path_escaping_the_run(tmp_path, tuned):
    run = _copy_run(tuned, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["latents"] = "../clip.mp4"
    (run / "manifest.json").write_text(json.dumps(manifest))
    fails(["edit", "--prompt", "a cat", "--run", run, "--out", tmp_path / "out", *CPU], 2,
          "outside", out=tmp_path / "out")


def test_edit_manifest_naming_a_pickle(tmp_path, tuned):
    run = _copy_run(tuned, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "tuned.bin").write_bytes((run / manifest["files"]["tuned"]).read_bytes())
    manifest["files"]["tuned"] = "tuned.bin"
    (run / "manifest.json").write_text(json.dumps(manifest))
    fails(["edit", "--prompt", "a cat", "--run", run, "--out", tmp_path / "out", *CPU], 2,
          "pickle", "safetensors", out=tmp_path / "out")


def test_edit_truncated_safetensors(tmp_path, tuned):
    run = _copy_run(tuned, tmp_path)
    weights = run / "tuned.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fails(["edit", "--prompt", "a cat", "--run", run, "--out", tmp_path / "out", *CPU], 2,
          "tuned.safetensors", "truncated", out=tmp_path / "out")


def test_edit_existing_output_without_overwrite(tmp_path, tuned):
    run = _copy_run(tuned, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-cat.mp4").write_bytes(b"an earlier edit")
    fails(["edit", "--prompt", "a cat", "--run", run, "--out", out, *CPU], 2, "already exists", "--overwrite",
          out=out, before={"a-cat.mp4": b"an earlier edit"})


# --------------------------------------------------------------------------- generate


@pytest.mark.parametrize("args, words", [
    (["--n", "0"], ("--n", "at least 1")),
    (["--steps", "0"], ("--steps", "at least 1")),
    (["--guidance", "nan"], ("--guidance", "finite")),
    (["--width", "100", "--height", "64"], ("multiple of 8",)),
    (["--width", "64"], ("--height",)),
    (["--sampler", "euler"], ("--sampler", "ddim")),
    (["--adapter", "adapter.bin"], ("pickle", "safetensors")),
    (["--adapter", "missing.safetensors"], ("missing.safetensors",)),
])
def test_generate_bad_option(tmp_path, args, words):
    fails(["generate", "--prompt", PROMPT, "--model", MODEL, *args, "--out", tmp_path / "out", *CPU], 2, *words,
          out=tmp_path / "out")


def test_generate_empty_prompt(tmp_path):
    fails(["generate", "--prompt", "", "--model", MODEL, "--out", tmp_path / "out", *CPU], 2, "empty",
          out=tmp_path / "out")


def test_generate_adapter_that_is_not_an_adapter(tmp_path):
    save_safetensors({"x": torch.zeros(2)}, tmp_path / "plain.safetensors")
    fails(["generate", "--prompt", PROMPT, "--model", MODEL, "--adapter", tmp_path / "plain.safetensors",
           "--out", tmp_path / "out", *CPU], 2, "is a file", "adapter folder", out=tmp_path / "out")


def test_long_prompt_is_truncated_with_a_warning(tmp_path):
    long_prompt = " ".join(["a red circle on a black background"] * 20)
    result = invoke(["generate", "--prompt", long_prompt, "--model", MODEL, "--steps", "1",
                     "--out", tmp_path / "out", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 1 and "truncated" in warnings[0] and "77" in warnings[0], result.stderr
    assert "Error" not in result.stderr


# --------------------------------------------------------------------------- train-adapter


def test_train_adapter_on_an_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    fails(["train-adapter", tmp_path / "data", "--out", tmp_path / "out" / "a", "--model", MODEL, *CPU],
          2, "no images", "caption", out=tmp_path / "out")


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], ("--steps", "at least 1")),
    (["--lr", "0"], ("--lr", "positive")),
    (["--size", "100"], ("multiple of 8",)),
])
def test_train_adapter_bad_option(tmp_path, args, words):
    data = write_images(tmp_path / "data", n=2)
    fails(["train-adapter", data, "--out", tmp_path / "out" / "a", "--model", MODEL, *args, *CPU],
          2, *words, out=tmp_path / "out")


def test_train_adapter_refuses_to_write_pickle(tmp_path):
    data = write_images(tmp_path / "data", n=2)
    fails(["train-adapter", data, "--out", tmp_path / "out" / "a.pt", "--model", MODEL, *CPU], 2, ".safetensors",
          out=tmp_path / "out")


# --------------------------------------------------------------------------- eval and caption


def test_eval_unknown_metric(tmp_path, clip):
    fails(["eval", clip, "--metrics", "fvd", "--prompt", PROMPT, "--clip-model", "tiny", *CPU], 2,
          "unknown metric fvd", "clip, pickscore, dino, flow, warp, psnr, oracle")


def test_eval_without_prompt(tmp_path, clip):
    fails(["eval", clip, "--clip-model", "tiny", "--json", tmp_path / "out" / "r.json", *CPU], 2,
          "no prompt", "--prompt", out=tmp_path / "out")


def test_eval_psnr_without_source(tmp_path, clip):
    fails(["eval", clip, "--metrics", "psnr", *CPU], 2, "--source")


def test_eval_clip_model_folder_with_only_pickle_weights(tmp_path, clip):
    folder = tmp_path / "clip-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    fails(["eval", clip, "--prompt", PROMPT, "--clip-model", folder, *CPU], 2, "pickle", "safetensors")


def test_eval_missing_path(tmp_path):
    fails(["eval", tmp_path / "nope.mp4", "--prompt", PROMPT, "--clip-model", "tiny", *CPU], 2, "nope.mp4", "not found")


@pytest.mark.parametrize("extra, words", [
    (["--metrics", "flow"], ["flow", "--source"]),
    (["--metrics", "warp"], ["warp", "--source"]),
    (["--metrics", "psnr", "--source", "SRC", "--flow", "raft"], []),  # flow unused: psnr alone runs fine
    (["--metrics", "flow", "--source", "SRC", "--flow", "raft"], ["raft", "--flow-model"]),
    (["--metrics", "flow", "--source", "SRC", "--flow", "pwc"], ["--flow", "farneback, raft"]),
    (["--metrics", "flow", "--source", "SRC", "--flow-model", "W.safetensors"], ["--flow-model", "--flow raft"]),
    (["--metrics", "flow", "--source", "SRC", "--flow", "raft", "--flow-model", "W.pth"], ["safetensors"]),
    (["--metrics", "clip", "--mask", "MASK"], ["--mask", "psnr"]),
    (["--metrics", "oracle", "--prompt", "a dog"], ["oracle", "shapes-world"]),
    (["--metrics", "pickscore"], ["no prompt", "--prompt"]),
    (["--report", "OUT/report.txt"], ["--report", ".html"]),
    (["--metrics", "dino", "--dino-model", "nowhere/none-such"], ["--dino-model"]),
])
def test_eval_bad_metric_options(tmp_path, clip, extra, words):
    subs = {"SRC": clip, "MASK": tmp_path / "mask.png", "W.safetensors": tmp_path / "w.safetensors", "W.pth": tmp_path / "w.pth",
            "OUT/report.txt": tmp_path / "out" / "report.txt"}
    for name in ("mask.png", "w.safetensors", "w.pth"):
        (tmp_path / name).write_bytes(b"x")
    args = ["eval", clip, *[subs.get(a, a) for a in extra], "--clip-model", "tiny", "--pickscore-model", "tiny", *CPU]
    if "--prompt" not in extra and "pickscore" not in extra:
        args += ["--prompt", PROMPT]
    if not words:
        assert invoke(args).exit_code == 0
        return
    fails(args, 2, *words, out=tmp_path / "out")


def test_eval_mask_folder_of_the_wrong_length(tmp_path, clip):
    from PIL import Image

    (tmp_path / "masks").mkdir()
    for i in range(3):
        Image.new("L", (64, 64), 255).save(tmp_path / "masks" / f"{i:02d}.png")
    fails(["eval", clip, "--metrics", "psnr", "--source", clip, "--mask", tmp_path / "masks", *CPU], 2, "3 images", "8 frames")


@pytest.mark.parametrize("args, words", [
    (["nope.mp4"], ("not found",)),
    (["clip.mp4", "--frames", "0"], ("--frames",)),
    (["clip.mp4", "--frames", "8"], ("has 8 frames",)),
    (["clip.mp4", "--frames", "2", "--caption-model", "nobody/blip"], ("nobody/blip", "tiny")),
])
def test_caption_bad_input(tmp_path, clip, args, words):
    fails(["caption", *args, *CPU], 2, *words)


# --------------------------------------------------------------------------- interrupt and resume


@pytest.mark.slow
def test_sigint_mid_tune_then_resume(tmp_path, clip):
    """A real ``contextedit tune`` process: SIGINT after the first checkpoint → exit 130, one line
    naming --resume, no partial file; ``--resume`` then completes the run."""
    run = tmp_path / "run"
    args = ["tune", str(clip), "--model", MODEL, "--prompt", PROMPT, "--frames", "2", "--steps", "12",
            "--checkpoint-every", "1", "--no-checkpointing", "--out", str(run), "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "contextedit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.safetensors").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--resume" in lines[0], stderr
    assert "Traceback" not in stderr
    assert (run / "checkpoint.safetensors").is_file() and not (run / "manifest.json").exists()
    assert not list(run.rglob("*.tmp*"))
    fails(args, 2, "interrupted tune", "--resume", out=run, before=_snapshot(run))  # forgot --resume

    result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.stderr
    assert (run / "manifest.json").is_file() and (run / "tuned.safetensors").is_file()
    assert not (run / "checkpoint.safetensors").exists()
    assert not [p for p in run.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    """A crash inside an atomic write keeps the earlier file and leaves no temp file."""
    target = tmp_path / "weights.safetensors"
    save_safetensors({"w": torch.ones(3)}, target)
    before = target.read_bytes()

    class Boom(dict):
        def items(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_safetensors(Boom(), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


# --------------------------------------------------------------------------- safety


def test_no_remote_code_is_ever_trusted():
    hits = [str(p) for p in (ROOT / "contextedit").rglob("*.py") if re.search(r"trust_remote_code\s*=\s*True", p.read_text())]
    assert not hits


def test_no_pickle_loader_is_used():
    """Weights come in through safetensors only: no torch.load, no pickle anywhere in the package."""
    pattern = re.compile(r"torch\.load\(|\bpickle\.loads?\(|use_safetensors\s*=\s*False")
    hits = [str(p) for p in (ROOT / "contextedit").rglob("*.py") if pattern.search(p.read_text())]
    assert not hits


# --------------------------------------------------------------------------- reproducibility


def test_tune_edit_generate_are_bit_identical_on_cpu(tmp_path, clip):
    def tune_edit(folder: Path):
        result = invoke(_tune_args(clip, folder / "run", "--steps", "2", "--seed", "3"))
        assert result.exit_code == 0, result.stderr
        result = invoke(["edit", "--prompt", "a blue circle", "--run", folder / "run", "--steps", "2",
                         "--format", "frames", "--out", folder / "edits", *CPU])
        assert result.exit_code == 0, result.stderr
        result = invoke(["generate", "--prompt", PROMPT, "--model", MODEL, "--steps", "2", "--n", "2",
                         "--sampler", "ddpm", "--out", folder / "gen", "--seed", "3", *CPU])
        assert result.exit_code == 0, result.stderr

    tune_edit(tmp_path / "a")
    tune_edit(tmp_path / "b")
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("tuned.safetensors", "adapter/diffusion_pytorch_model.safetensors", "latents.safetensors"):
        ta, tb = load_safetensors(a / "run" / name), load_safetensors(b / "run" / name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    frames_a = sorted((a / "edits").rglob("*.png"))
    assert frames_a and all(
        np.array_equal(_pixels(p), _pixels(b / "edits" / p.relative_to(a / "edits"))) for p in frames_a)
    pngs = sorted((a / "gen").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes() == (b / "gen" / p.name).read_bytes() for p in pngs)


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
