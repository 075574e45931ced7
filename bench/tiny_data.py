"""The shapes-world data of bench/train_tiny.py and its oracle-scored evaluation.

Frames and image captions are drawn on the fly by ``contextedit.testing.shapes``; a model is judged by
sampling every (shape, colour, background) caption and reading the pixels with the oracle.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch

from contextedit.testing import shapes

COMBOS = list(itertools.product(shapes.SHAPES, shapes.COLOURS, shapes.BACKGROUNDS))


def image_batch(rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, list[str]]:
    """``batch`` random shapes-world frames in [-1, 1] (B, 3, 64, 64) and their image captions."""
    images, captions = [], []
    for _ in range(batch):
        spec = shapes.random_spec(rng)
        image, caption = shapes.make_image(spec["shape"], spec["colour"], spec["background"], rng=rng)
        images.append(image)
        captions.append(caption)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions


def random_crops(pixels: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``size``x``size`` crop of each image: the VAE is convolutional, and crops cost less."""
    if size >= pixels.shape[-1]:
        return pixels
    corners = rng.integers(0, pixels.shape[-1] - size + 1, size=(len(pixels), 2))
    return torch.stack([p[:, y:y + size, x:x + size] for p, (y, x) in zip(pixels, corners)])


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def oracle_scores(images: np.ndarray, specs: list[tuple[str, str, str]]) -> dict[str, float]:
    """Fraction of images whose oracle reading matches (shape, colour, background), per field and all."""
    hits = [shapes.agrees(shapes.oracle(image), *spec) for image, spec in zip(images, specs)]
    scores = {key: float(np.mean([h[key] for h in hits])) for key in ("shape", "colour", "background")}
    scores["all"] = float(np.mean([all(h.values()) for h in hits]))
    return scores


def encode_text(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    """Token states padded to 77 tokens, exactly as StableDiffusionPipeline encodes prompts."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]


DATA = ("on the fly from contextedit.testing.shapes: random_spec + make_image "
        "(uniform shape/colour/background, uniform valid centre), image captions")


def tokenizer():
    from contextedit.testing.tiny import tiny_tokenizer

    return tiny_tokenizer()


def spec_of(caption: str) -> tuple[str, str, str]:
    """(shape, colour, background) back from an image caption."""
    words = caption.split()
    return words[2], words[1], words[5]



@torch.no_grad()
def evaluate(folder: Path, steps: int = 50, guidance: float = 7.5, seeds=(0,), adapter: bool = True) -> tuple[dict, np.ndarray]:
    """Sample every (shape, colour, background) prompt once per seed with contextedit's own
    contextual DDIM (+ CFG), with the folder's base adapter unless ``adapter`` is False; score
    with the pixel oracle. Without an adapter this is plain DDIM, as diffusers samples it."""
    from contextedit.models.adapter import ContextAdapter
    from contextedit.models.loading import load_components
    from contextedit.pipelines.common import decode_latents, encode_prompts
    from contextedit.pipelines.loop import Denoiser, context_for, sample
    from contextedit.schedulers import ContextualDDIMScheduler

    comps = load_components(str(folder), "cpu", torch.float32)
    base = ContextAdapter.from_pretrained(Path(folder) / "adapter").eval() if adapter and (Path(folder) / "adapter").is_dir() else None
    prompts = [shapes.image_caption(*spec) for spec in COMBOS]
    text = encode_prompts(comps.tokenizer, comps.text_encoder, prompts)
    uncond = encode_prompts(comps.tokenizer, comps.text_encoder, [""])
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    size = comps.native_size // comps.vae_scale_factor
    images, specs = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        scheduler.set_timesteps(steps)
        latents = torch.randn((len(prompts), comps.unet.config.in_channels, size, size), generator=generator)
        latents = sample(scheduler, Denoiser(comps.unet, text, uncond, guidance), latents * scheduler.init_noise_sigma,
                         context=context_for(base, None, text, 1), generator=generator)
        images.append(to_uint8(decode_latents(comps.vae, latents)))
        specs += COMBOS
    images = np.concatenate(images)
    scores = oracle_scores(images, specs)
    hits = [all(shapes.agrees(shapes.oracle(image), *spec).values()) for image, spec in zip(images, specs)]
    scores.update(prompts=len(prompts), seeds=list(seeds), adapter=base is not None, hits=[int(h) for h in hits],
                  sampler=f"contextual DDIM {steps} steps, guidance {guidance}")
    return scores, images


def save_grid(images: np.ndarray, path: Path, columns: int = 12) -> None:
    from PIL import Image

    rows = math.ceil(len(images) / columns)
    grid = np.zeros((rows * 64, columns * 64, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = image
    Image.fromarray(grid).save(path)
