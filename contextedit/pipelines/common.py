"""Pieces every pipeline shares: prompt checks and encoding, and the VAE latent codec."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..errors import UsageError

log = logging.getLogger("contextedit")


@dataclass(kw_only=True)
class RuntimeOptions:
    """Options of every command that loads a model (keyword-only, after each command's own)."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    overwrite: bool = False


def fill_defaults(opts: object, section: str, defaults: dict, model_defaults: dict | None) -> None:
    """Set each None option in ``defaults`` to the model's recommendation (``contextedit.json``,
    ``section``), else to the built-in default; explicit values stay."""
    recommended = (model_defaults or {}).get(section, {})
    unknown = set(recommended) - set(defaults)
    if unknown:
        raise UsageError(f"the model's contextedit.json sets unknown {section} settings {sorted(unknown)}; "
                         f"known: {', '.join(defaults)}")
    for name, value in defaults.items():
        if getattr(opts, name) is None:
            setattr(opts, name, recommended.get(name, value))


def check_at_least_one(opts: object, *names: str) -> None:
    for name in names:
        value = getattr(opts, name)
        if value < 1:
            raise UsageError(f"`{name}` must be at least 1 (got {value})")


def check_lr(lr: float, hint: str = "", option: str = "`lr`") -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"{option} must be a positive number (got {lr}){hint}")


def check_guidance(guidance: float) -> None:
    if not math.isfinite(guidance):
        raise UsageError(f"`guidance` must be a finite number (got {guidance}); 7.5 is usual")


def check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)} (got {value!r})")


def check_prompts(prompts: list[str], how: str) -> list[str]:
    if not prompts:
        raise UsageError(f"no prompt; {how}")
    return [check_prompt(p) for p in prompts]


def check_prompt(prompt: str, what: str = "`prompt`") -> str:
    if prompt is None or not str(prompt).strip():
        raise UsageError(f"{what} is empty; give a text prompt such as \"a red square moving right\"")
    return str(prompt).strip()


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
