"""Text-to-image with the contextual samplers (paper §3.2), in memory: plain SD DDIM/DDPM without
an adapter, contextual DDIM/DDPM with r_φ evaluated on x̂0 and the prompt when one is given."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..device import cpu_generator, oom_guard
from ..errors import UsageError
from ..models.inflate import shared_copy
from ..progress import ProgressFactory, silent
from ..schedulers import ContextualDDIMScheduler, ContextualDDPMScheduler
from ..video import to_frames
from .adapters import resolve_adapter
from .common import decode_latents, encode_text, placement
from .generate_options import SAMPLER_NAMES, GenerateSettings  # noqa: F401 — declared there
from .loop import Denoiser, context_for, sample

SAMPLERS = dict(zip(SAMPLER_NAMES, (ContextualDDIMScheduler, ContextualDDPMScheduler)))


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: np.ndarray       # (H, W, 3) uint8
    seconds: float


def generate_images(comps, prompts: list[str], n: int, seed: int, settings: GenerateSettings, *,
                    progress: ProgressFactory = silent, info: dict | None = None) -> Iterator[GeneratedImage]:
    """``n`` images per prompt, image k of each prompt from seed ``seed + k`` (noise drawn on the
    CPU, so a seed gives the same image on every device). ``info`` receives the adapter's source
    and the size. The caller's UNet is not changed: an adapter folder's tuned queries load into a
    copy that shares the frozen weights."""
    device, dtype = placement(comps)
    adapter, unet_sd, meta, adapter_source = resolve_adapter(settings.adapter, comps, device, "`adapter`")
    if meta.get("model") and meta["model"] != comps.model_id:
        raise UsageError(f"adapter {settings.adapter} was trained on {meta['model']!r}, not {comps.model_id!r}; "
                         f"use the model {meta['model']}")
    unet = comps.unet
    if unet_sd:
        unet = shared_copy(unet)
        unet.load_state_dict({k: v.to(device, dtype) for k, v in unet_sd.items()}, strict=False)
    width, height = (settings.width, settings.height) if settings.width else (comps.native_size, comps.native_size)
    if info is not None:
        info.update(adapter=adapter_source, width=width, height=height)
    scheduler = SAMPLERS[settings.sampler].from_config(comps.scheduler_config)
    uncond = encode_text(comps, [settings.negative_prompt or ""])
    shape = (1, unet.config.in_channels, height // comps.vae_scale_factor, width // comps.vae_scale_factor)
    with oom_guard(device, "generation"):
        for prompt in prompts:
            text = encode_text(comps, [prompt])
            context = context_for(adapter, None, text, 1)
            for k in range(n):
                t1 = time.perf_counter()
                generator = cpu_generator(seed + k)
                scheduler.set_timesteps(settings.steps, device=device)
                latents = initial_latents(shape, generator, device, dtype) * scheduler.init_noise_sigma
                with progress(f"{prompt[:40]} (seed {seed + k})", settings.steps) as advance:
                    latents = sample(scheduler, Denoiser(unet, text, uncond, settings.guidance), latents,
                                     context=context, generator=generator, callback=lambda _: advance())
                image = to_frames(decode_latents(comps.vae, latents))[0]
                yield GeneratedImage(prompt=prompt, seed=seed + k, image=image, seconds=time.perf_counter() - t1)


def initial_latents(shape, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """x_T drawn as diffusers' randn_tensor draws it with a CPU generator."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def make_grid(images: list[np.ndarray], rows: int) -> np.ndarray:
    cols = math.ceil(len(images) / rows)
    h, w = images[0].shape[:2]
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return grid
