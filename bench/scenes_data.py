"""The scenes-world data of ``bench/train_tiny.py --world scenes`` and its oracle-scored evaluation.

Frames and image captions come from ``contextedit.worlds.scenes``; a model is judged by sampling
36 one-object and 36 two-object captions (fixed below) with several seeds and reading each
image with the oracle: right when its objects (colour and shape, any order) and its background
are what the caption says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contextedit.worlds import scenes
from tiny_data import sample_prompts, save_grid, to_uint8  # noqa: F401  (bench/ is on the path; shared with the shapes world)

SIZE = scenes.SIZE
NEW_WORDS = ("striped", "checkered")  # whole-word tokens the tiny tokenizer lacks


def _prompt_specs() -> list[tuple[tuple[tuple[str, str], ...], str]]:
    """36 one-object and 36 two-object (things, background) pairs, every background equally often."""
    rng = np.random.default_rng(2028)
    one = [(((tuple(scenes.COLOURS)[(i // 3) % 4], scenes.SHAPES[i % 3]),), scenes.BACKGROUNDS[i % 5]) for i in range(36)]
    two = []
    for i in range(36):
        shapes, colours = rng.permutation(scenes.SHAPES)[:2], rng.permutation(list(scenes.COLOURS))[:2]
        two.append((tuple((str(c), str(s)) for c, s in zip(colours, shapes)), scenes.BACKGROUNDS[i % 5]))
    return one + two


PROMPT_SPECS = _prompt_specs()
COMBOS = PROMPT_SPECS  # the trainer's name for "the evaluation prompts"


DATA = ("on the fly from contextedit.worlds.scenes.random_image: one or two objects (half each), uniform "
        "shapes, colours and backgrounds, textures at a random phase, uniform valid centres; image captions")


def tokenizer():
    """The tiny tokenizer with ``striped`` and ``checkered`` as whole words."""
    from contextedit.testing.tiny import tiny_tokenizer

    return tokenizer_with_words(tiny_tokenizer())


def image_batch(rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, list[str]]:
    """``batch`` random scenes-world frames in [-1, 1] (B, 3, 96, 96) and their image captions;
    half have one object, half two."""
    images, captions = [], []
    for _ in range(batch):
        image, caption = scenes.random_image(rng)
        images.append(image)
        captions.append(caption)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions


def spec_of(caption: str):
    parsed = scenes.parse_caption(caption)
    return tuple((t["colour"], t["shape"]) for t in parsed["things"]), parsed["background"]


def oracle_scores(images: np.ndarray, specs) -> dict[str, float]:
    """Share of images whose oracle reading agrees: objects, colours, background, all; and ``all``
    for one- and two-object prompts apart."""
    hits = [scenes.agrees(scenes.oracle(image), things, background) for image, (things, background) in zip(images, specs)]
    scores = {key: float(np.mean([h[key] for h in hits])) for key in ("objects", "colours", "background")}
    right = [h["objects"] and h["background"] for h in hits]
    scores["all"] = float(np.mean(right))
    for n in (1, 2):
        picked = [r for r, (things, _) in zip(right, specs) if len(things) == n]
        if picked:
            scores[f"all_{n}_object"] = float(np.mean(picked))
    return scores


def tokenizer_with_words(tokenizer, words=NEW_WORDS, folder: Path | None = None):
    """``tokenizer`` (CLIP BPE) with each of ``words`` made one token by merges appended after the
    existing ones (so every word it already had tokenises as before). Saved to ``folder`` when given."""
    import json
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        data = json.loads((Path(tmp) / "tokenizer.json").read_text())
        vocab, merges = data["model"]["vocab"], data["model"]["merges"]
        next_id = max(vocab.values()) + 1
        for word in words:
            pieces = tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False).input_ids)
            while len(pieces) > 1:
                merged = pieces[0] + pieces[1]
                merges.append([pieces[0], pieces[1]])
                if merged not in vocab:
                    vocab[merged] = next_id
                    next_id += 1
                pieces = [merged, *pieces[2:]]
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        out = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
        if folder is not None:
            out.save_pretrained(folder)
    return out


def evaluate(folder: Path, steps: int = 50, guidance: float = 7.5, seeds=(0,), adapter: bool = True) -> tuple[dict, np.ndarray]:
    """Sample every evaluation prompt once per seed (tiny_data.sample_prompts, 24 prompts a batch
    to keep memory small) and score with the pixel oracle."""
    prompts = [scenes.image_caption(things, background) for things, background in PROMPT_SPECS]
    images, used = sample_prompts(folder, prompts, steps, guidance, seeds, adapter, chunk=24)
    scores = oracle_scores(images, list(PROMPT_SPECS) * len(seeds))
    scores.update(prompts=len(prompts), seeds=list(seeds), adapter=used,
                  sampler=f"contextual DDIM {steps} steps, guidance {guidance}")
    return scores, images
