"""Inflate a 2-D Stable-Diffusion UNet into a spatio-temporal one (docs/concepts/design.md §5.3), and say what is tuned.

Inflation swaps attention processors (sparse-causal attention) and adds temporal layers
(``...attn1.temporal``, real submodules) where ``temporal_layers`` places them: on every transformer
block's self-attention (``every-block``), or on the first block of each Transformer2DModel only
(``per-transformer``: SDXL's depth-10 transformers get one layer each, not ten); no 2-D weight
changes shape, so pretrained weights load before inflation unchanged, and the temporal layers
start at zero (the inflated UNet is the 2-D UNet until tuned). One-shot tuning
(docs/concepts/design.md §5.4) trains the attention queries and the temporal layers; their names
are those of ``unet.named_parameters()``, so a tuned state dict saves and loads by name.
"""

from __future__ import annotations

import re

import torch
from diffusers.models.attention_processor import Attention

from ..attention.processors import CrossAttnProcessor, InflatedSelfAttnProcessor, add_temporal_layer, attention_modules
from ..defaults import EVERY_BLOCK, TEMPORAL_LAYERS
from ..errors import InputError

# attention queries of the spatial layers, and everything of the temporal layers
_TRAINABLE = re.compile(r"(\.attn[12]\.to_q\.|\.attn1\.temporal\.)")
# Runs tuned before the temporal layers became modules kept them under the processor.
_OLD_TEMPORAL = ".attn1.processor.temporal."
# a transformer block's self-attention inside a Transformer2DModel: ``….transformer_blocks.<i>.attn1``
_BLOCK_ATTN1 = re.compile(r"(?:^|\.)transformer_blocks\.(\d+)\.attn1$")


def _is_self_attention(name: str, attn: Attention) -> bool:
    return name.endswith("attn1") and not attn.is_cross_attention


def carries_temporal_layer(name: str, temporal_layers: str = EVERY_BLOCK) -> bool:
    """Whether the self-attention ``name`` gets a temporal layer under ``temporal_layers``:
    every one (``every-block``), or only a transformer's first block (``per-transformer``)."""
    if temporal_layers not in TEMPORAL_LAYERS:
        raise InputError(f"temporal_layers must be one of {', '.join(TEMPORAL_LAYERS)} (got {temporal_layers!r})")
    block = _BLOCK_ATTN1.search(name)
    return temporal_layers == EVERY_BLOCK or block is None or block.group(1) == "0"


def inflate_unet(unet: torch.nn.Module, *, temporal: bool = True, temporal_layers: str = EVERY_BLOCK) -> torch.nn.Module:
    """Install sparse-causal processors on every self-attention ``attn1`` (and temporal layers where
    ``temporal_layers`` places them: :func:`carries_temporal_layer`), plain ones elsewhere; in
    place. Temporal layers already there keep their weights.
    """
    for name, attn in attention_modules(unet).items():
        if _is_self_attention(name, attn):
            attn.set_processor(InflatedSelfAttnProcessor())
            if temporal and carries_temporal_layer(name, temporal_layers):
                add_temporal_layer(attn)
        else:
            attn.set_processor(CrossAttnProcessor())
    return unet


def shared_copy(unet: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``unet`` to inflate, tune or load tuned tensors into that shares every frozen weight with it: only the
    tuned tensors (attention queries, temporal layers) are new, so the caller's UNet is left as
    it was and the copy costs megabytes, not a second UNet."""
    import copy

    tuned = {id(p) for p in trainable_parameters(unet).values()}
    # new Parameter objects over the same storage: the copy's requires_grad flags are its own
    memo = {id(p): torch.nn.Parameter(p.data, requires_grad=p.requires_grad) for p in unet.parameters() if id(p) not in tuned}
    memo.update({id(b): b for b in unet.buffers()})
    return copy.deepcopy(unet, memo)


def is_inflated(unet: torch.nn.Module) -> bool:
    return any(isinstance(attn.processor, InflatedSelfAttnProcessor) or getattr(attn, "temporal", None) is not None
               for attn in attention_modules(unet).values())


def trainable_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The one-shot-tuned parameters: attention queries (attn1, attn2) and all temporal layers; with
    AnimateDiff motion modules (:mod:`.motion`), all of theirs when they are tuned, none when frozen."""
    motion = bool(getattr(unet, "tune_motion", False))
    return {name: p for name, p in unet.named_parameters()
            if (motion if ".motion_module." in name else _TRAINABLE.search(name) is not None)}


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
    state_dict = {name.replace(_OLD_TEMPORAL, ".attn1.temporal."): t for name, t in state_dict.items()}
    expected = trainable_parameters(unet)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        detail = (f"missing {len(missing)} (e.g. {missing[:2]})" if missing else "") + \
                 (f" unexpected {len(unexpected)} (e.g. {unexpected[:2]})" if unexpected else "")
        raise InputError(f"tuned weights do not match this model ({detail.strip()}); "
                         "use the base model (and temporal_layers) the run was tuned with")
    for name, tensor in state_dict.items():
        if tensor.shape != expected[name].shape:
            raise InputError(f"tuned weight {name} has shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(expected[name].shape)}; use the base model the run was tuned with")
    unet.load_state_dict(state_dict, strict=False)
    return unet
