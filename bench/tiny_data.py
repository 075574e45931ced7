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
def sample_prompts(folder: Path, prompts: list[str], steps: int, guidance: float, seeds, adapter: bool,
                   chunk: int | None = None) -> tuple[np.ndarray, bool]:
    """Every prompt once per seed with contextedit's own contextual DDIM (+ CFG), with the folder's
    base adapter unless ``adapter`` is False (without one this is plain DDIM, as diffusers samples
    it): uint8 images in prompt order, seed after seed, and whether an adapter was used. ``chunk``
    prompts share one draw of noise and one batch (None: all of them)."""
    from contextedit.models.adapter import ContextAdapter
    from contextedit.models.loading import load_components
    from contextedit.pipelines.common import decode_latents, encode_prompts
    from contextedit.pipelines.loop import Denoiser, context_for, sample
    from contextedit.schedulers import ContextualDDIMScheduler

    comps = load_components(str(folder), "cpu", torch.float32)
    base = ContextAdapter.from_pretrained(Path(folder) / "adapter").eval() if adapter and (Path(folder) / "adapter").is_dir() else None
    text = encode_prompts(comps.tokenizer, comps.text_encoder, prompts)
    uncond = encode_prompts(comps.tokenizer, comps.text_encoder, [""])
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    size = comps.native_size // comps.vae_scale_factor
    chunk = chunk or len(prompts)
    images = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        scheduler.set_timesteps(steps)
        for start in range(0, len(prompts), chunk):
            part = slice(start, start + chunk)
            n = len(prompts[part])
            latents = torch.randn((n, comps.unet.config.in_channels, size, size), generator=generator)
            latents = sample(scheduler, Denoiser(comps.unet, text[part], uncond, guidance), latents * scheduler.init_noise_sigma,
                             context=context_for(base, None, text[part], 1), generator=generator)
            images.append(to_uint8(decode_latents(comps.vae, latents)))
    return np.concatenate(images), base is not None


def evaluate(folder: Path, steps: int = 50, guidance: float = 7.5, seeds=(0,), adapter: bool = True) -> tuple[dict, np.ndarray]:
    """Sample every (shape, colour, background) prompt once per seed (:func:`sample_prompts`) and
    score with the pixel oracle."""
    prompts = [shapes.image_caption(*spec) for spec in COMBOS]
    images, used = sample_prompts(folder, prompts, steps, guidance, seeds, adapter)
    specs = list(COMBOS) * len(seeds)
    scores = oracle_scores(images, specs)
    hits = [all(shapes.agrees(shapes.oracle(image), *spec).values()) for image, spec in zip(images, specs)]
    scores.update(prompts=len(prompts), seeds=list(seeds), adapter=used, hits=[int(h) for h in hits],
                  sampler=f"contextual DDIM {steps} steps, guidance {guidance}")
    return scores, images


def save_grid(images: np.ndarray, path: Path, columns: int = 12) -> None:
    from PIL import Image

    rows, size = math.ceil(len(images) / columns), images.shape[1]  # square images of one size
    grid = np.zeros((rows * size, columns * size, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * size:(r + 1) * size, c * size:(c + 1) * size] = image
    Image.fromarray(grid).save(path)
