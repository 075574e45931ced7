"""BLIP-2 captioning with the tiny random BLIP-2 (in code and saved as a model folder)."""

from __future__ import annotations

import numpy as np
import pytest

from contextedit.captioning import caption_frames, load_captioner
from contextedit.errors import ModelNotFoundError, RunFailure, UnsafeFileError
from contextedit.testing.tiny_clip import build_tiny_blip2


@pytest.fixture(scope="module")
def clip():
    return np.random.RandomState(0).randint(0, 256, (3, 48, 64, 3), dtype=np.uint8)


def test_tiny_caption_is_a_nonempty_string(clip):
    text = caption_frames(clip, model_id="tiny", max_new_tokens=8)
    assert isinstance(text, str) and text == text.strip() and text
    assert caption_frames(clip, model_id="tiny", max_new_tokens=8) == text  # fixed seed, greedy


def test_saved_folder_loads_like_a_real_checkpoint(tmp_path, clip):
    model, processor = build_tiny_blip2()
    model.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    captioner = load_captioner(str(tmp_path))
    assert caption_frames(clip, captioner=captioner, max_new_tokens=8) == caption_frames(clip, model_id="tiny", max_new_tokens=8)


def test_empty_clip_and_bad_models_are_refused(tmp_path, clip):
    with pytest.raises(RunFailure, match="empty clip"):
        caption_frames(clip[:0], model_id="tiny")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UnsafeFileError):
        load_captioner(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="`caption_model` PATH or use `caption_model` tiny"):
        load_captioner("nobody/no-such-blip2")
