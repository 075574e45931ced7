"""Output names (unique per prompt) and exclusive writes (never replacing what appeared meanwhile)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from contextedit import fileio, video
from contextedit.video import write as video_write
from contextedit.errors import OutputExistsError
from contextedit.prompts import load_prompt_sets
from contextedit.runs import output_name

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
COMMON = "a red circle moving right on a black background, seen from above"  # 64 characters


def frames(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


# --- names -----------------------------------------------------------------------------------

def test_long_prompts_sharing_their_start_get_distinct_stable_names():
    a, b = output_name(COMMON + ", watercolor", 0, "mp4"), output_name(COMMON + ", cartoon style", 0, "mp4")
    assert a != b and a.endswith("-s0.mp4") and a.startswith("a-red-circle-moving-right")
    assert output_name(COMMON + ", watercolor", 0, "mp4") == a  # stable: same prompt, same name
    assert output_name(COMMON + ", watercolor", 1, "frames") == a[: -len("-s0.mp4")] + "-s1"


def test_a_prompt_the_slug_spells_keeps_its_plain_name():
    assert output_name("a cat", 0, "mp4") == "a-cat-s0.mp4"
    assert output_name("a cat", None, "mp4") == "a-cat.mp4"  # edits: deterministic, no seed
    assert output_name("a blue circle moving right on a black background", 3, "gif") == \
        "a-blue-circle-moving-right-on-a-black-background-s3.gif"  # 48 characters: not cut
    # case, punctuation and non-ASCII letters are dropped by the slug: the hash tells such prompts apart
    names = {output_name(p, 0, "mp4") for p in ("a cat", "A cat", "a cat!", "a cät", "一只猫", "一只狗")}
    assert len(names) == 6


@pytest.mark.parametrize("file", sorted(PROMPTS.glob("*.json")), ids=lambda p: p.name)
def test_bundled_prompt_sets_give_distinct_names(file):
    for prompt_set in load_prompt_sets(file):
        names = [output_name(p, 0, "mp4") for p in prompt_set.prompts]
        assert len(set(names)) == len(names), names


# --- exclusive writes ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "clip"])
def test_exclusive_write_refuses_an_existing_output_and_keeps_it(tmp_path, name):
    path = video.write_video(frames(), tmp_path / name, 8, exclusive=True)
    before = _snapshot(path)
    with pytest.raises(OutputExistsError, match="`overwrite`"):
        video.write_video(frames(4), tmp_path / name, 8, exclusive=True)
    assert _snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind
    video.write_video(frames(4), tmp_path / name, 8)  # without exclusive: replaced, as before
    assert _snapshot(path) != before


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "clip"])
@pytest.mark.parametrize("intruder", ["file", "empty folder", "folder"])
def test_output_appearing_while_writing_is_not_replaced(tmp_path, monkeypatch, name, intruder):
    """Another command writes the same name between our check and our rename: we fail, it stays."""
    target = tmp_path / name
    real_ffmpeg, real_save = video_write._ffmpeg_write, video_write.Image.Image.save

    def appear():
        if not (target.exists() or target.is_symlink()):
            if intruder == "file":
                target.write_bytes(b"written by another command")
            else:
                target.mkdir()
                if intruder == "folder":
                    (target / "theirs.png").write_bytes(b"theirs")

    def ffmpeg(*args, **kwargs):
        appear()
        return real_ffmpeg(*args, **kwargs)

    def save(self, *args, **kwargs):
        appear()
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(video_write, "_ffmpeg_write", ffmpeg)
    monkeypatch.setattr(video_write.Image.Image, "save", save)
    with pytest.raises(OutputExistsError, match="appeared while this command ran"):
        video.write_video(frames(), target, 8, exclusive=True)
    assert _snapshot(target) == {"file": b"written by another command", "empty folder": {},
                                 "folder": {"theirs.png": b"theirs"}}[intruder]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # our temporary is gone


def test_atomic_path_exclusive_without_hard_links(tmp_path, monkeypatch):
    """Where the file system has no hard links, the name is claimed with O_EXCL instead."""
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "a.json"
    with fileio.atomic_path(path, exclusive=True) as tmp:
        tmp.write_text(json.dumps({"ours": 1}))
    assert json.loads(path.read_text()) == {"ours": 1}
    with pytest.raises(OutputExistsError):
        with fileio.atomic_path(path, exclusive=True) as tmp:
            tmp.write_text("{}")
    assert json.loads(path.read_text()) == {"ours": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with fileio.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert _snapshot(target) == {"a.txt": b"one"}
    with pytest.raises(RuntimeError):
        with fileio.atomic_folder(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert _snapshot(target) == {"a.txt": b"one"}  # the failed write left the old folder as it was
    with fileio.atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("two")
    assert _snapshot(target) == {"b.txt": b"two"}  # replaced whole, not merged
    with pytest.raises(OutputExistsError, match="already exists"):
        with fileio.atomic_folder(target, exclusive=True):
            raise AssertionError("an exclusive write must refuse before any work")
    assert _snapshot(target) == {"b.txt": b"two"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind

def _snapshot(path: Path):
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    return path.read_bytes()
