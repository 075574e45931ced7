"""Model loading: the embedded tiny model, and a saved folder through the same from_pretrained path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from contextedit.errors import ModelNotFoundError
from contextedit.models.loading import load_components, save_components

from helpers import MODEL


def test_tiny_is_sd_shaped():
    comps = load_components(MODEL)
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


def test_unknown_hub_id_offline_fails_with_advice():
    with pytest.raises(ModelNotFoundError, match="`model` tiny"):
        load_components("nobody/no-such-model")


def test_tiny_vocabulary_keeps_every_world_word_whole():
    from contextedit.testing.tiny import TINY_TOKENIZER, WORDS, tiny_tokenizer

    tokenizer = tiny_tokenizer()  # read from the shipped tokenizer.json, as --model tiny reads it
    assert (TINY_TOKENIZER / "tokenizer.json").is_file()
    assert [w for w in WORDS if len(tokenizer(w).input_ids) != 3] == []  # BOS, the word, EOS
    assert len(tokenizer) == load_components(MODEL).text_encoder.config.vocab_size == 751
    # the ids of the vocabulary that was built in code before tokenizer.json was read instead
    assert tokenizer("a red circle moving right on a black background").input_ids == [749, 320, 571, 585, 536, 543, 516, 320, 560, 556, 750]
    assert tokenizer("a jeep on the road").input_ids == [749, 320, 622, 516, 514, 650, 750]


@pytest.mark.slow
def test_normal_path_does_not_import_the_test_helpers():
    """``--model tiny`` is an ordinary diffusers folder: loading it, and the CLI, never import contextedit.testing."""
    code = (
        "import sys; import contextedit.cli, contextedit.captioning, contextedit.metrics.clip; "
        "from contextedit.models.loading import load_components; "
        "load_components('tiny'); "
        "print(sorted(m for m in sys.modules if m.startswith('contextedit.testing')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_dtype_by_name_as_the_cli_spells_it():
    from contextedit.errors import UsageError

    assert load_components("tiny-random", "cpu", "fp32").unet.dtype == torch.float32
    with pytest.raises(UsageError, match="fp16 is not supported on the CPU"):
        load_components("tiny-random", "cpu", "fp16")
