"""ControlNet for structure control (``--controlnet ID|FOLDER|tiny-random``), loaded like every model
(a local folder or the Hugging Face cache, safetensors only) and checked against the base model
it will steer: a ControlNet made for another base adds residuals of the wrong shapes, or of the
right shapes but meaningless, so a mismatch is refused before any work."""

from __future__ import annotations

import torch

from ..errors import InputError

TINY = "tiny-random"
# What must agree between a ControlNet and the UNet it steers (their residuals are added block by block).
MATCHING = ("cross_attention_dim", "block_out_channels", "in_channels", "layers_per_block", "use_linear_projection")


def load_controlnet(spec: str, comps) -> torch.nn.Module:
    """The ControlNet ``spec`` names, for ``comps``'s UNet: a hub id, a folder, or ``tiny-random``
    (random weights in the UNet's shape, output convolutions included, for tests)."""
    if spec == TINY:
        from ..device import seeded
        from .tiny import tiny_controlnet

        with seeded(0):
            controlnet = tiny_controlnet(comps.unet, comps.vae_scale_factor)
    else:
        from diffusers import ControlNetModel

        from .loading import _check_transformers_folder, from_pretrained_or_hub

        controlnet = from_pretrained_or_hub(
            lambda source, local: ControlNetModel.from_pretrained(source, use_safetensors=True, local_files_only=local),
            spec, "`controlnet`", check_folder=lambda path: _check_transformers_folder(path, "`controlnet`"),
            folder_hint="pass a folder saved with ControlNetModel.save_pretrained, a hub id, or `controlnet` tiny-random")
    check_controlnet(controlnet, comps, spec)
    param = next(comps.unet.parameters())
    return controlnet.to(param.device, param.dtype).eval().requires_grad_(False)


def check_controlnet(controlnet, comps, spec: str) -> None:
    """Refuse a ControlNet of another base model, or one whose condition encoder does not reduce
    frames to the latents' size."""
    unet, cn = comps.unet.config, controlnet.config
    for key in MATCHING:
        mine, theirs = getattr(unet, key, None), getattr(cn, key, None)
        if _norm(mine) != _norm(theirs):
            raise InputError(f"`controlnet` {spec} was made for another base model ({key} {theirs} vs this model's {mine}); "
                             "pass a ControlNet trained for this model's family")
    factor = 2 ** (len(cn.conditioning_embedding_out_channels) - 1)
    if factor != comps.vae_scale_factor:
        raise InputError(f"`controlnet` {spec} reduces conditions by {factor}, this model's VAE by {comps.vae_scale_factor}; "
                         "pass a ControlNet trained for this model's family")


def _norm(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value
