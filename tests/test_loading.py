"""Model loading: the embedded tiny model, and a saved folder through the same from_pretrained path."""

from __future__ import annotations

import time

import pytest
import torch

from contextedit.errors import ModelNotFoundError
from contextedit.models.loading import load_components, save_components

from helpers import MODEL


def test_tiny_builds_fast_and_is_sd_shaped():
    load_components(MODEL)  # imports
    start = time.perf_counter()
    comps = load_components(MODEL)
    assert time.perf_counter() - start < 1.0
    assert comps.native_size == 64 and comps.vae_scale_factor == 4
    assert comps.scheduler_config["prediction_type"] == "epsilon"
    assert type(comps.unet).__name__ == "UNet2DConditionModel" and type(comps.vae).__name__ == "AutoencoderKL"
    assert not any(p.requires_grad for p in comps.unet.parameters())


def test_saved_folder_loads_through_the_same_function(tmp_path):
    comps = load_components(MODEL)
    folder = save_components(comps, tmp_path / "model")
    assert (folder / "model_index.json").is_file()
    assert not list(folder.rglob("*.bin"))
    loaded = load_components(str(folder))
    for a, b in zip(comps.unet.state_dict().values(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b)
    ids = comps.tokenizer("a red circle").input_ids
    assert loaded.tokenizer("a red circle").input_ids == ids


def test_unknown_hub_id_offline_fails_fast():
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="--model tiny"):
        load_components("nobody/no-such-model")
    assert time.perf_counter() - start < 5


def test_tiny_vocabulary_keeps_every_world_word_whole():
    from contextedit.models.tiny import WORDS, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    assert [w for w in WORDS if len(tokenizer(w).input_ids) != 3] == []  # BOS, the word, EOS


def test_dtype_by_name_as_the_cli_spells_it():
    from contextedit.errors import UsageError

    assert load_components("tiny-random", "cpu", "fp32").unet.dtype == torch.float32
    with pytest.raises(UsageError, match="fp16 is not supported on the CPU"):
        load_components("tiny-random", "cpu", "fp16")
