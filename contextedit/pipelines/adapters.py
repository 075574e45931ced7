"""Where an adapter comes from: the model's base adapter, an adapter folder, or none.

Every adapter is a folder in diffusers' layout (config.json + diffusion_pytorch_model.safetensors,
:class:`~contextedit.models.adapter.ContextAdapter` is a ``ModelMixin``): a model folder's
``adapter/`` (its base adapter, trained jointly with its UNet), a run folder's ``adapter/``, and
what ``train-adapter`` writes — which adds ``unet.safetensors`` (tuned attention queries, when it
tuned them) and ``training.json`` (the base model, the data, the settings).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..fileio import load_safetensors, read_json, refuse_pickle
from ..models.adapter import CONFIG_NAME, WEIGHTS_NAME, ContextAdapter

CHOICES = ("base", "none")
UNET_FILE = "unet.safetensors"      # train-adapter --tune-unet attn: the tuned attention queries
RECORD_FILE = "training.json"       # train-adapter: model, data and settings


def base_adapter_folder(comps) -> Path | None:
    """The model's own adapter folder, if it ships one."""
    folder = comps.extra.get("base_adapter")
    return Path(folder) if folder else None


def load_adapter_folder(folder: str | Path, what: str = "adapter") -> tuple[ContextAdapter, dict[str, torch.Tensor], dict]:
    """An adapter folder: the adapter, tuned UNet tensors (maybe none) and its training record (maybe {})."""
    folder = Path(folder).expanduser()
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise InputError(f"{what} {folder} is not an adapter folder (it needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                         "make one with `contextedit train-adapter` or ContextAdapter.save_pretrained")
    try:
        adapter = ContextAdapter.from_pretrained(str(folder), use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"{what} {folder} cannot be loaded ({str(exc).splitlines()[0][:200]})") from exc
    unet_sd = load_safetensors(folder / UNET_FILE) if (folder / UNET_FILE).is_file() else {}
    record = read_json(folder / RECORD_FILE, "adapter training record") if (folder / RECORD_FILE).is_file() else {}
    return adapter.eval(), unet_sd, record


def check_adapter_spec(spec: str | None, option: str = "`adapter`") -> None:
    """Fail before any model loads when the adapter named is neither a choice nor a path."""
    if spec is None or spec in CHOICES:
        return
    refuse_pickle(spec)  # a .bin/.ckpt/.pt gets the reason, whether or not it exists
    path = Path(spec).expanduser()
    if path.is_dir():
        return
    what = "is a file" if path.exists() else "does not exist"
    raise InputError(f"{option} {spec} {what}; pass base, none, or an adapter folder "
                     f"({CONFIG_NAME} + {WEIGHTS_NAME}, as `contextedit train-adapter` writes)")


def resolve_adapter(spec: str | None, comps, device: torch.device, option: str = "`adapter`"):
    """``base`` (or None): the model's base adapter, None when it has none; ``none``: None;
    otherwise an adapter folder.

    Returns (adapter or None, UNet tensors to load, metadata, :func:`describe`'s record)."""
    spec = spec or "base"
    source = describe(spec, comps)
    if spec == "none" or (spec == "base" and base_adapter_folder(comps) is None):
        return None, {}, {}, source
    check_adapter_spec(spec, option)
    path = base_adapter_folder(comps) if spec == "base" else Path(spec).expanduser()
    adapter, unet_sd, meta = load_adapter_folder(path, option)
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
    have = (adapter.config.latent_channels, adapter.config.text_dim)
    if want != have:
        raise InputError(f"{option} {spec}: the adapter takes {have[0]} latent channels and text width {have[1]}, "
                         f"the model {want[0]} and {want[1]}; use an adapter made for this model, or {option} none")
