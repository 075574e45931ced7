"""Prompt-set files: the bundled ones load, malformed ones are InputErrors that say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contextedit.errors import InputError
from contextedit.prompts import EDIT_TYPES, load_prompt_file, load_prompt_sets

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


def test_red_circle_set_covers_every_edit_type():
    (prompt_set,) = load_prompt_sets(PROMPTS / "red-circle.json")
    assert prompt_set.video == "examples/red-circle.mp4"
    assert set(prompt_set.types) == set(EDIT_TYPES)
    source, prompts = load_prompt_file(PROMPTS / "red-circle.json")
    assert source == "a red circle moving right on a black background"
    assert "a blue circle moving right on a black background" in prompts


def test_loveu_set_has_the_four_kinds_per_clip():
    for prompt_set in load_prompt_sets(PROMPTS / "loveu-tgve.json"):
        assert prompt_set.types == ["style", "object", "background", "multiple"]
        assert prompt_set.source_prompt and len(prompt_set.prompts) == 4


def test_multi_clip_file_picks_the_set_by_video_name():
    source, prompts = load_prompt_file(PROMPTS / "davis-examples.json", video="/data/man-surfing.mp4")
    assert source == "a man is surfing on a wave" and "a robot is surfing on a wave" in prompts
    with pytest.raises(InputError, match="car-turn.mp4"):
        load_prompt_file(PROMPTS / "davis-examples.json", video="other.mp4")


@pytest.mark.parametrize("data, message", [
    ({"source_prompt": "a cat"}, "edits"),
    ({"edits": [{"prompt": "a tiger", "type": "colour"}]}, "not one of"),
    ({"edits": [{"type": "object"}]}, "prompt"),
    ({"source_prompt": "", "edits": ["a tiger"]}, "source_prompt"),
    ([], "empty list"),
])
def test_malformed_files_are_input_errors(tmp_path, data, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        load_prompt_file(path)


def test_bare_strings_and_no_source_prompt(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"edits": [" a tiger ", {"prompt": "a dog"}]}))
    assert load_prompt_file(path) == (None, ["a tiger", "a dog"])


def test_multi_clip_file_picks_the_set_by_path_before_name(tmp_path):
    clip, elsewhere = tmp_path / "clips" / "cat.mp4", tmp_path / "other" / "cat.mp4"
    for path in (clip, elsewhere):
        path.parent.mkdir()
        path.write_bytes(b"not decoded here")
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"video": str(elsewhere), "edits": ["a tiger"]},
                                {"video": "clips/cat.mp4", "edits": ["a dog"]},  # relative to the prompt file
                                {"video": "missing/dog.mp4", "edits": ["a wolf"]}]))
    assert load_prompt_file(path, video=clip) == (None, ["a dog"])
    assert load_prompt_file(path, video=elsewhere) == (None, ["a tiger"])
    assert load_prompt_file(path, video="/data/dog.mp4") == (None, ["a wolf"])  # a placeholder: by name
    with pytest.raises(InputError, match="cat.mp4, cat.mp4, dog.mp4"):  # an existing other cat.mp4 is not it
        load_prompt_file(path, video=tmp_path / "third" / "cat.mp4")


# --- through the CLI, on a tiny tuned run ------------------------------------------------------

@pytest.fixture(scope="module")
def surfing_run(tmp_path_factory):
    """A tiny-random run tuned on a clip named like one of davis-examples.json's placeholders."""
    from contextedit.commands.tune import TuneOptions, tune

    from helpers import MODEL, write_clip

    root = tmp_path_factory.mktemp("surfing")
    clip = write_clip(root / "clips" / "man-surfing.mp4", frames=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTEXTEDIT_RUNS", str(root / "runs"))
        tune(TuneOptions(video=str(clip), prompt="a man is surfing on a wave", frames=2, stride=1, steps=1,
                         out=str(root / "run"), model=MODEL, device="cpu", checkpointing=False))
    return root


def _edit(run_root: Path, prompts_file: Path, out: str):
    from typer.testing import CliRunner

    from contextedit.cli import app

    args = ["edit", "--prompts-file", str(prompts_file), "--run", str(run_root / "run"), "--steps", "1",
            "--format", "gif", "--out", str(run_root / out), "--device", "cpu", "--quiet"]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("file, expected", [
    ("red-circle.json", "a blue circle moving right on a black background"),  # one set: any clip
    ("davis-examples.json", "a robot is surfing on a wave"),                  # several: the run's clip, by name
], ids=["one-set", "multi-clip"])
def test_edit_with_a_bundled_prompts_file(surfing_run, file, expected):
    from contextedit.runs import output_name

    result = _edit(surfing_run, PROMPTS / file, file)
    assert result.exit_code == 0, result.stderr
    (prompt_set,) = [s for s in load_prompt_sets(PROMPTS / file) if expected in s.prompts]
    written = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in written] == [output_name(p, None, "gif") for p in prompt_set.prompts]
    assert all(p.is_file() for p in written) and len(set(written)) == len(prompt_set.prompts)


def test_edit_with_a_prompts_file_for_other_clips_says_which(surfing_run, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"video": "videos/car-turn.mp4", "edits": ["a Porsche"]},
                                {"video": "videos/cat-in-the-sun.mp4", "edits": ["a tiger"]}]))
    result = _edit(surfing_run, path, "none")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "man-surfing.mp4" in line and "car-turn.mp4, cat-in-the-sun.mp4" in line
