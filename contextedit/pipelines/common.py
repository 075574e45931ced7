"""Pieces every pipeline shares: prompt checks and encoding, and the VAE latent codec."""

from __future__ import annotations

import logging

import torch

from ..models.families import encode_prompts, token_ids  # noqa: F401 — SD's text encoding
from ..settings import (RuntimeOptions, check_at_least_one, check_choice, check_guidance, check_lr,  # noqa: F401
                        check_prompt, check_prompts)

log = logging.getLogger("contextedit")


def placement(comps) -> tuple[torch.device, torch.dtype]:
    """Where the components' UNet lives and in what dtype: the pipelines run there, as given."""
    param = next(comps.unet.parameters())
    return param.device, param.dtype


def encode_text(comps, prompts: list[str]) -> torch.Tensor:
    """The text conditioning of ``comps``' model, as its family encodes it (:mod:`contextedit.models.families`):
    :func:`encode_prompts`, or for SDXL both encoders' states with the pooled embedding packed as one
    more token (:mod:`contextedit.models.sdxl`)."""
    return comps.family.encode(comps, prompts)


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Pixels (F, 3, H, W) in [-1, 1] → scaled latents; the posterior mean, so a clip always encodes the same."""
    param = next(vae.parameters())
    chunks = [vae.encode(p.to(param.device, param.dtype)).latent_dist.mean for p in pixels.split(batch)]
    return torch.cat(chunks) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Scaled latents → pixels (F, 3, H, W) in [-1, 1] (float32, on the CPU)."""
    param = next(vae.parameters())
    latents = latents.to(param.device, param.dtype) / vae.config.scaling_factor
    return torch.cat([vae.decode(z).sample.float().cpu() for z in latents.split(batch)]).clamp(-1, 1)
