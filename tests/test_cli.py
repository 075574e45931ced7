"""The command-line surface: help, version, the shared options, and the error contract."""

from __future__ import annotations

from typer.testing import CliRunner

from contextedit import __version__
from contextedit.cli import app

from helpers import MODEL, write_clip

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("tune", "edit", "generate", "eval", "caption", "train-adapter", "ui"):
        assert command in result.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"contextedit {__version__}"


def test_model_commands_share_options():
    for command in ("tune", "edit", "generate", "train-adapter"):
        text = runner.invoke(app, [command, "--help"]).stdout
        for option in ("--model", "--device", "--dtype", "--debug", "--quiet"):
            assert option in text, (command, option)
        assert ("--seed" in text) == (command != "edit"), command  # edits are deterministic: no seed


def test_missing_video_is_exit_2_with_path_and_no_traceback(tmp_path):
    missing = tmp_path / "nope.mp4"
    result = runner.invoke(app, ["tune", str(missing), "--model", MODEL, "--prompt", "a cat", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and str(missing) in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["tune", str(tmp_path / "nope.mp4"), "--prompt", "a cat", "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_caption_and_tune_with_tiny_captioner(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    clip = write_clip(tmp_path / "clip.mp4")
    result = runner.invoke(app, ["caption", str(clip), "--caption-model", "tiny", "--frames", "4", "--device", "cpu"])
    assert result.exit_code == 0 and result.stdout.strip()
    result = runner.invoke(app, ["tune", str(clip), "--caption-model", "tiny", "--model", MODEL, "--frames", "2",
                                 "--steps", "1", "--device", "cpu", "--quiet", "--no-checkpointing"])
    assert result.exit_code == 0, result.stderr
    import json
    from pathlib import Path

    manifest = json.loads((Path(result.stdout.strip()) / "manifest.json").read_text())
    assert manifest["source_prompt"].strip()


def test_help_of_every_command_imports_no_torch():
    """`--help` stays instant: building the options from the settings must not import torch
    (a fresh interpreter, since this test process has torch loaded already)."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from contextedit.cli import app; "
            "r = [CliRunner().invoke(app, a).exit_code for a in ([\"--help\"], [\"tune\", \"--help\"], "
            "[\"edit\", \"--help\"], [\"eval\", \"--help\"], [\"caption\", \"--help\"], [\"train-adapter\", \"--help\"], "
            "[\"ui\", \"--help\"])]; print(r, 'torch' in sys.modules, 'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "False"], out  # neither torch nor gradio
    assert "".join(out[:-2]) == "[0,0,0,0,0,0,0]"
