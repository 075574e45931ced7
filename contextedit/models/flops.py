"""Size and cost of a module: parameter counts, FLOPs per call, and the adapter's share of the UNet's."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


# torch counts the CUDA attention kernels but not the CPU one SDPA dispatches to
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)`` (matmuls, convolutions and attention), without grad."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def adapter_flop_share(adapter: torch.nn.Module, unet: torch.nn.Module, latent_shape: tuple[int, int, int],
                       text_len: int = 77, num_frames: int = 1) -> float:
    """FLOPs of one adapter call over FLOPs of one UNet call on the same clip of ``num_frames``."""
    from .inflate import is_inflated

    param = next(unet.parameters())
    latents = torch.zeros(num_frames, *latent_shape, device=param.device, dtype=param.dtype)
    unet_text = torch.zeros(num_frames, text_len, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype)
    adapter_text = torch.zeros(1, text_len, adapter.config.text_dim, device=param.device, dtype=param.dtype)
    kwargs = {"cross_attention_kwargs": {"num_frames": num_frames}} if is_inflated(unet) else {}
    unet_flops = flops(unet, latents, 500, unet_text, **kwargs)
    return flops(adapter, latents, adapter_text, 500, num_frames) / unet_flops
