"""Inflate a 2-D Stable-Diffusion UNet into a spatio-temporal one (DESIGN §5.3), and say what is tuned.

Inflation only swaps attention processors: no 2-D weight changes shape, so pretrained weights
load before inflation unchanged, and the new temporal layers start at zero (the inflated UNet
is the 2-D UNet until tuned). One-shot tuning (DESIGN §5.4) trains the attention queries and
the temporal layers; their names are those of ``unet.named_parameters()``, so a tuned state
dict saves and loads by name.
"""

from __future__ import annotations

import importlib.util
import re

import torch
from diffusers.models.attention_processor import Attention

from ..attention.processors import CrossAttnProcessor, InflatedSelfAttnProcessor, attention_modules
from ..errors import InputError, UsageError

# attention queries of the spatial layers, and everything of the temporal layers
_TRAINABLE = re.compile(r"(\.attn[12]\.to_q\.|\.processor\.temporal\.)")


def _is_self_attention(name: str, attn: Attention) -> bool:
    return name.endswith("attn1") and not attn.is_cross_attention


def inflate_unet(unet: torch.nn.Module, *, temporal: bool = True, use_xformers: bool = False) -> torch.nn.Module:
    """Install sparse-causal + temporal processors on every ``attn1``, plain ones elsewhere; in place.

    Layers that are inflated already keep their processor (and its tuned temporal weights).
    """
    if use_xformers and importlib.util.find_spec("xformers") is None:
        raise UsageError("xformers is not installed; install it (pip install xformers) or leave --xformers off")
    for name, attn in attention_modules(unet).items():
        if isinstance(attn.processor, InflatedSelfAttnProcessor):
            continue
        if _is_self_attention(name, attn):
            processor = InflatedSelfAttnProcessor(attn.query_dim, attn.heads, temporal=temporal, use_xformers=use_xformers)
            processor.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
        else:
            processor = CrossAttnProcessor(use_xformers=use_xformers)
        attn.set_processor(processor)
    return unet


def is_inflated(unet: torch.nn.Module) -> bool:
    return any(isinstance(attn.processor, InflatedSelfAttnProcessor) for attn in attention_modules(unet).values())


def trainable_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The one-shot-tuned parameters: attention queries (attn1, attn2) and all temporal layers."""
    return {name: p for name, p in unet.named_parameters() if _TRAINABLE.search(name)}


def mark_trainable(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Freeze everything but :func:`trainable_parameters`; return those."""
    unet.requires_grad_(False)
    tuned = trainable_parameters(unet)
    for p in tuned.values():
        p.requires_grad_(True)
    return tuned


def tuned_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What to save after tuning: the trainable tensors, detached."""
    return {name: p.detach() for name, p in trainable_parameters(unet).items()}


def load_tuned(unet: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load a tuned state dict onto an inflated UNet; InputError if it is not this UNet's artifact."""
    expected = trainable_parameters(unet)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        detail = (f"missing {len(missing)} (e.g. {missing[:2]})" if missing else "") + \
                 (f" unexpected {len(unexpected)} (e.g. {unexpected[:2]})" if unexpected else "")
        raise InputError(f"tuned weights do not match this model ({detail.strip()}); "
                         "use the base model (and temporal setting) the run was tuned with")
    for name, tensor in state_dict.items():
        if tensor.shape != expected[name].shape:
            raise InputError(f"tuned weight {name} has shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(expected[name].shape)}; use the base model the run was tuned with")
    unet.load_state_dict(state_dict, strict=False)
    return unet
