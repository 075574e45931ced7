"""SDXL's extra conditioning, carried through contextedit's one text tensor.

SDXL's UNet takes, besides the text states (both encoders' penultimate layers, concatenated), the
second encoder's pooled embedding and six "time ids" (original size, crop corner, target size) as
``added_cond_kwargs``. Everything in contextedit passes text as one (N, L, D) tensor — expanded over
frames, batched with the unconditional half, optimised by null-text inversion, read by the
adapter — so the pooled embedding rides along as one extra token (zero-padded to D) and a forward
pre-hook on the UNet (:func:`add_xl_conditioning`) unpacks it before the UNet sees it. The time
ids follow from the latents' size: contextedit never crops, and frames are made at their size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HOOKED = "_contextedit_xl_hook"


def is_xl(unet: torch.nn.Module) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def pack_pooled(states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(N, L, D) states and (N, P) pooled embeddings (P ≤ D) → (N, L + 1, D)."""
    extra = F.pad(pooled, (0, states.shape[-1] - pooled.shape[-1]))[:, None]
    return torch.cat([states, extra.to(states.dtype)], dim=1)


def time_ids(height: int, width: int, batch: int, device, dtype) -> torch.Tensor:
    """(batch, 6): original size, crop top-left (0, 0), target size — one (height, width) for all."""
    return torch.tensor([height, width, 0, 0, height, width], device=device, dtype=dtype).expand(batch, 6)


def add_xl_conditioning(unet: torch.nn.Module, vae_scale_factor: int) -> torch.nn.Module:
    """Make ``unet`` read the packed pooled token: every call gets ``added_cond_kwargs``. Copies of
    the UNet (``shared_copy``) keep the hook; adding it twice does nothing."""
    pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    if getattr(unet, HOOKED, False):
        return unet

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        packed = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if packed is None or kwargs.get("added_cond_kwargs") is not None:
            return None
        states, pooled = packed[:, :-1], packed[:, -1, :pooled_dim]
        height, width = (s * vae_scale_factor for s in sample.shape[-2:])
        extra = {"text_embeds": pooled, "time_ids": time_ids(height, width, sample.shape[0], sample.device, pooled.dtype)}
        args = args[:2] if len(args) > 2 else args
        return args, {**kwargs, "encoder_hidden_states": states, "added_cond_kwargs": extra}

    unet.register_forward_pre_hook(hook, with_kwargs=True)
    setattr(unet, HOOKED, True)
    return unet


@torch.no_grad()
def encode_xl(tokenizers, text_encoders, prompts: list[str], device: torch.device) -> torch.Tensor:
    """SDXL's text conditioning, packed: both encoders' penultimate hidden states concatenated, and
    the second encoder's pooled, projected embedding as the extra token (as StableDiffusionXLPipeline
    encodes a prompt without clip skip)."""
    states, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        out = encoder(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]  # the last encoder's: CLIPTextModelWithProjection's text_embeds
    return pack_pooled(torch.cat(states, dim=-1), pooled)
