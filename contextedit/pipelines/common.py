"""Pieces every pipeline shares: prompt checks and encoding, and the VAE latent codec."""

from __future__ import annotations

import logging

import torch

from ..settings import (RuntimeOptions, check_at_least_one, check_choice, check_guidance, check_lr,  # noqa: F401
                        check_prompt, check_prompts)

log = logging.getLogger("contextedit")


def placement(comps) -> tuple[torch.device, torch.dtype]:
    """Where the components' UNet lives and in what dtype: the pipelines run there, as given."""
    param = next(comps.unet.parameters())
    return param.device, param.dtype


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device | None = None) -> torch.Tensor:
    """Text-encoder hidden states (N, L, D), tokenised as StableDiffusionPipeline does.

    Prompts longer than the encoder's window are truncated with a warning, not refused.
    """
    max_len = tokenizer.model_max_length
    for prompt in prompts:
        n = len(tokenizer(prompt, truncation=False).input_ids)
        if n > max_len:
            log.warning("prompt has %d tokens; the text encoder reads %d, so it was truncated: %r", n, max_len, prompt[:60] + "…")
    ids = token_ids(tokenizer, prompts)
    device = device or next(text_encoder.parameters()).device
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").attention_mask.to(device)
    return text_encoder(ids.to(device), attention_mask=mask)[0]


def encode_text(comps, prompts: list[str]) -> torch.Tensor:
    """The text conditioning of ``comps``' model: :func:`encode_prompts`, or for SDXL both encoders'
    states with the pooled embedding packed as one more token (:mod:`contextedit.models.sdxl`)."""
    if not comps.is_xl:
        return encode_prompts(comps.tokenizer, comps.text_encoder, prompts)
    from ..models.sdxl import encode_xl

    device = next(comps.text_encoder.parameters()).device
    return encode_xl([comps.tokenizer, comps.tokenizer_2], [comps.text_encoder, comps.text_encoder_2], prompts, device)


def token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


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
