"""Where an adapter comes from: the model's base adapter, a `train-adapter` file, a folder, or none.

A model folder may ship a base adapter trained jointly with its UNet (``adapter/``, config.json +
safetensors, like any diffusers sub-model). ``tune`` starts a clip's adapter from it and
``generate`` samples with it, because that UNet learned to denoise the biased x_t it makes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import InputError
from ..fileio import load_safetensors, refuse_pickle, safetensors_metadata
from ..models.adapter import CONFIG_NAME, ContextAdapter

ADAPTER_META = "contextedit.adapter_config"
CHOICES = ("base", "none")


def base_adapter_folder(comps) -> Path | None:
    """The model's own adapter folder, if it ships one."""
    folder = comps.extra.get("base_adapter")
    return Path(folder) if folder else None


def load_image_adapter(path: str | Path, device: torch.device) -> tuple[ContextAdapter, dict[str, torch.Tensor], dict]:
    """An adapter file from ``train-adapter``: the adapter, tuned UNet tensors (maybe none), metadata."""
    meta = safetensors_metadata(path)
    if ADAPTER_META not in meta:
        raise InputError(f"{path} is not a contextedit adapter file (no {ADAPTER_META} metadata); make one with `contextedit train-adapter`")
    tensors = load_safetensors(path)
    adapter = ContextAdapter.from_config(json.loads(meta[ADAPTER_META]))
    adapter.load_state_dict({k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")})
    unet_sd = {k[len("unet."):]: v for k, v in tensors.items() if k.startswith("unet.")}
    return adapter.to(device).eval(), unet_sd, meta


def check_adapter_spec(spec: str | None, option: str = "--adapter") -> None:
    """Fail before any model loads when the adapter named is neither a choice nor a path."""
    if spec is None or spec in CHOICES:
        return
    refuse_pickle(spec)  # a .bin/.ckpt/.pt gets the reason, whether or not it exists
    if Path(spec).expanduser().exists():
        return
    raise InputError(f"{option} {spec}: no such file or folder; pass base, none, an adapter folder "
                     f"(with {CONFIG_NAME}) or a file from `contextedit train-adapter`")


def resolve_adapter(spec: str | None, comps, device: torch.device, option: str = "--adapter"):
    """``base`` (or None): the model's base adapter, None when it has none; ``none``: None;
    otherwise an adapter folder or a ``train-adapter`` .safetensors file.

    Returns (adapter or None, UNet tensors to load, metadata, :func:`describe`'s record)."""
    spec = spec or "base"
    source = describe(spec, comps)
    if spec == "none" or (spec == "base" and base_adapter_folder(comps) is None):
        return None, {}, {}, source
    check_adapter_spec(spec, option)
    path = base_adapter_folder(comps) if spec == "base" else Path(spec).expanduser()
    if path.is_dir():
        adapter, unet_sd, meta = ContextAdapter.from_pretrained(path), {}, {}
    else:
        adapter, unet_sd, meta = load_image_adapter(path, device)
    check_fits(adapter, comps.unet, spec, option)
    return adapter.to(device).eval(), unet_sd, meta, source


def describe(spec: str | None, comps) -> str:
    """Where the adapter comes from, as run records write it: base, none, or the resolved path."""
    spec = spec or "base"
    if spec == "base":
        return "base" if base_adapter_folder(comps) is not None else "none (the model ships no base adapter)"
    return spec if spec == "none" else str(Path(spec).expanduser().resolve())


def check_fits(adapter: ContextAdapter, unet, spec: str, option: str) -> None:
    """The adapter reads the UNet's latents and its text states: both widths must agree."""
    want = (int(unet.config.in_channels), int(unet.config.cross_attention_dim))
    have = (adapter.cfg.latent_channels, adapter.cfg.text_dim)
    if want != have:
        raise InputError(f"{option} {spec}: the adapter takes {have[0]} latent channels and text width {have[1]}, "
                         f"the model {want[0]} and {want[1]}; use an adapter made for this model, or {option} none")
