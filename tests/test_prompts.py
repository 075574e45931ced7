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
