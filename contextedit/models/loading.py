"""Load the Stable-Diffusion components from a hub id, a local diffusers folder, or ``tiny``.

One function, :func:`load_components`, serves the CLI, the library and the tests: the embedded
models go through the same classes, and a ``save_pretrained`` folder of them loads through the
same ``from_pretrained`` calls as a real checkpoint.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..defaults import DEFAULTS_FILE
from ..errors import InputError, ModelNotFoundError, UnsafeFileError
from ..fileio import PICKLE_SUFFIXES, refuse_pickle

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
EMBEDDED = ("tiny", "tiny-random")
TRAINED_TINY = Path(__file__).resolve().parent.parent / "assets" / "tiny"


@dataclass
class Components:
    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    model_id: str
    extra: dict = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        """The base model's native pixel resolution (512 for SD 1.x)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def to(self, device: torch.device, dtype: torch.dtype) -> "Components":
        from diffusers.utils import logging as dlog

        level = dlog.get_verbosity()
        dlog.set_verbosity_error()  # diffusers warns on every dtype cast of a model it did not load
        try:
            for module in (self.vae, self.unet, self.text_encoder):
                module.to(device=device, dtype=dtype)
        finally:
            dlog.set_verbosity(level)
        return self


def default_model() -> str:
    return os.environ.get("CONTEXTEDIT_MODEL") or DEFAULT_MODEL


def load_components(model: str | None = None, device: str | torch.device = "cpu",
                    dtype: str | torch.dtype = torch.float32) -> Components:
    """Return vae, unet, text_encoder, tokenizer and scheduler config for ``model``.

    ``dtype`` is a torch dtype or a CLI name (``auto``, ``fp32``, ``fp16``, ``bf16``).
    """
    device = torch.device(device)
    if isinstance(dtype, str):
        from ..device import resolve_dtype

        dtype = resolve_dtype(dtype, device)
    model = model or default_model()
    if model == "tiny" and TRAINED_TINY.is_dir():
        # The trained shapes-world model ships as an ordinary diffusers folder: same code path as real weights.
        comps = _load_pretrained(str(TRAINED_TINY))
        comps.model_id = model
    elif model in EMBEDDED:
        from . import tiny

        comps = Components(model_id=model, **tiny.build_tiny_random())
    else:
        comps = _load_pretrained(model)
    for module in (comps.vae, comps.unet, comps.text_encoder):
        module.requires_grad_(False).eval()
    return comps.to(device, dtype)


def _load_pretrained(model: str) -> Components:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(model).expanduser()
    is_folder = path.exists()
    if is_folder:
        refuse_pickle(path)
        if not path.is_dir():
            raise InputError(f"--model {model} is a file; pass a diffusers folder (with model_index.json), a hub id, or 'tiny'")
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{path} has no model_index.json, so it is not a diffusers model folder; "
                "pass a folder saved with save_pretrained, a hub id, or --model tiny"
            )
        refuse_pickle_weights(path)
        source, local_only = str(path), True
    else:
        if model.count("/") != 1 or model.startswith(("/", ".", "~")):
            raise ModelNotFoundError(f"model {model!r} is neither a local folder nor a hub id (owner/name); pass a diffusers folder or --model tiny")
        source, local_only = model, offline()
    kw = {"local_files_only": local_only}
    try:
        try:
            parts = _from_pretrained(source, kw, AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, DDIMScheduler)
        except OSError:
            if local_only or not hub_reachable():
                raise
            parts = _from_pretrained(source, {"local_files_only": False}, AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, DDIMScheduler)
    except OSError as exc:
        if is_folder:
            raise ModelNotFoundError(f"cannot load the diffusers folder {path}: {str(exc).splitlines()[0]}; check that it holds unet/, vae/, text_encoder/, tokenizer/ and scheduler/ with .safetensors weights") from exc
        raise ModelNotFoundError(
            f"model {model!r} is not in the local Hugging Face cache and the hub cannot be reached (offline); "
            "download it on a connected machine, pass a local diffusers folder with --model PATH, or use --model tiny"
        ) from exc
    comps = Components(model_id=model if not is_folder else str(path.resolve()), **parts)
    comps.extra["defaults"] = recommended_defaults(path if is_folder else model)
    comps.extra["base_adapter"] = base_adapter(path if is_folder else model)
    return comps


def base_adapter(source: Path | str) -> str | None:
    """The folder of the model's base context adapter (``adapter/config.json`` beside
    ``model_index.json``, a local folder or a hub id's cached snapshot), or None."""
    if isinstance(source, Path):
        config = source / "adapter" / "config.json"
        return str(config.parent) if config.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "adapter/config.json")
    return str(Path(cached).parent) if isinstance(cached, str) else None


def recommended_defaults(source: Path | str) -> dict:
    """The model's own recommended settings, ``{"edit": {...}, "generate": {...}}``, from a
    ``contextedit.json`` beside ``model_index.json`` (a local folder, or a hub id's cached
    snapshot); {} when there is none. Flags override them."""
    import json

    if isinstance(source, Path):
        file = source / DEFAULTS_FILE
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, DEFAULTS_FILE)
        file = Path(cached) if isinstance(cached, str) else None
    if file is None or not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{file} is not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise InputError(f"{file} must hold a JSON object like {{\"edit\": {{\"guidance\": 5}}}}; fix or remove it")
    return data


def refuse_pickle_weights(folder: Path, parts: tuple[str, ...] = ("unet", "vae", "text_encoder")) -> None:
    """Name the real problem when a part holds pickle weights only: they are never loaded."""
    for part in parts:
        sub = folder / part
        if sub.is_dir() and not any(sub.glob("*.safetensors")):
            pickles = sorted(p.name for p in sub.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise UnsafeFileError(
                    f"{sub} holds only pickle weights ({', '.join(pickles)}); only .safetensors are loaded — "
                    "re-save the model with save_pretrained(safe_serialization=True) or pass another --model"
                )


def _from_pretrained(source, kw, AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, DDIMScheduler) -> dict:
    return {
        "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", use_safetensors=True, **kw),
        "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", use_safetensors=True, **kw),
        "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", use_safetensors=True, **kw),
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
        "scheduler_config": dict(DDIMScheduler.load_config(source, subfolder="scheduler", **kw)),
    }


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so that an unreachable hub fails in seconds rather than after retries."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def save_components(comps: Components, folder: str | os.PathLike) -> Path:
    """Write ``comps`` as a diffusers Stable Diffusion folder (model_index.json + subfolders)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
        scheduler=DDIMScheduler.from_config(comps.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)
