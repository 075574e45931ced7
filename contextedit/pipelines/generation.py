"""Text-to-image with the contextual samplers (paper §3.2), in memory: plain SD DDIM/DDPM without
an adapter, contextual DDIM/DDPM with r_φ evaluated on x̂0 and the prompt when one is given."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..defaults import GENERATE_DEFAULTS
from ..device import cpu_generator, oom_guard
from ..errors import UsageError
from ..models.inflate import shared_copy
from ..progress import ProgressFactory, silent
from ..schedulers import ContextualDDIMScheduler, ContextualDDPMScheduler
from ..video import to_frames
from .adapters import check_adapter_spec, resolve_adapter
from .common import check_guidance, decode_latents, encode_text, fill_defaults, placement
from .loop import Denoiser, context_for, sample

SAMPLERS = {"ddim": ContextualDDIMScheduler, "ddpm": ContextualDDPMScheduler}


@dataclass(kw_only=True)
class GenerateSettings:
    """How images are sampled; a None takes the model's recommendation, else GENERATE_DEFAULTS."""

    steps: int | None = None
    guidance: float | None = None
    sampler: str = "ddim"
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    adapter: str | None = None   # base (the model's own, if any), none, or an adapter folder

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"`steps` must be at least 1 (got {self.steps})")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"`sampler` must be one of {', '.join(SAMPLERS)} (got {self.sampler!r})")
        if self.guidance is not None:
            check_guidance(self.guidance)
        if (self.width is None) != (self.height is None):
            raise UsageError("give both `width` and `height`, or neither")
        if self.width is not None:
            from .. import video as vio

            vio.check_size(self.width, self.height)
        check_adapter_spec(self.adapter, "`adapter`")

    def resolve(self, model_defaults: dict | None) -> "GenerateSettings":
        self.validate()
        fill_defaults(self, "generate", GENERATE_DEFAULTS, model_defaults)
        return self


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
                                     context=context, generator=generator, callback=lambda **_: advance())
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
