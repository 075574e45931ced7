"""Model families as records in one registry: how to tell a family from its UNet, the parts it
loads besides SD's, how it encodes a prompt into contextedit's one text tensor, the hooks its UNet
needs, and how it saves. Nothing else in contextedit asks which family a model is, so a family
is one record and one :func:`register` line (docs: extending). A family may recommend settings
(``recommends``), as a model folder's ``contextedit.json`` does; the folder's own win."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger("contextedit")


@dataclass(frozen=True)
class ModelFamily:
    name: str
    detect: Callable[[torch.nn.Module], bool]           # from the UNet (its config)
    encode: Callable[[object, list[str]], torch.Tensor]  # (components, prompts) → (N, L, D) text states
    extra_parts: tuple[tuple[str, str, str], ...] = ()    # (subfolder = attribute, library, class) besides SD's parts
    prepare: Callable[[object], None] | None = None       # hooks the UNet needs (after loading or building by hand)
    vae_upcast_fp16: bool = False                         # its VAE overflows in fp16 (force_upcast means it here)
    pipeline_class: str = "StableDiffusionPipeline"       # the diffusers pipeline that saves its folder
    pipeline_kwargs: tuple[tuple[str, object], ...] = ()  # what that pipeline takes besides the parts
    recommends: tuple[tuple[str, str, object], ...] = ()  # (section, setting, value), under contextedit.json's

    def recommended(self, folder: dict | None = None) -> dict:
        """``{section: {setting: value}}``: this family's recommendations, overridden by a model
        folder's ``contextedit.json`` (``folder``)."""
        out: dict = {}
        for section, name, value in self.recommends:
            out.setdefault(section, {})[name] = value
        for section, values in (folder or {}).items():
            out[section] = {**out.get(section, {}), **values} if isinstance(values, dict) else values
        return out

    def load_extra_parts(self, source: str, **kw) -> dict:
        parts = {}
        for part, library, name in self.extra_parts:
            cls = getattr(importlib.import_module(library), name)
            extra = {"use_safetensors": True} if library != "transformers" or "Tokenizer" not in name else {}
            parts[part] = cls.from_pretrained(source, subfolder=part, **extra, **kw)
        return parts

    def save(self, comps, folder) -> None:
        import diffusers
        from diffusers import DDIMScheduler

        parts = {"vae": comps.vae, "text_encoder": comps.text_encoder, "tokenizer": comps.tokenizer, "unet": comps.unet,
                 "scheduler": DDIMScheduler.from_config(comps.scheduler_config),
                 **{part: getattr(comps, part) for part, _, _ in self.extra_parts}}
        getattr(diffusers, self.pipeline_class)(**parts, **dict(self.pipeline_kwargs)).save_pretrained(
            str(folder), safe_serialization=True)


FAMILIES: list[ModelFamily] = []  # the first whose detect says yes; the last (SD) takes the rest


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family``, asked before those registered earlier (SD, which takes any UNet, stays last)."""
    FAMILIES.insert(0, family)
    return family


def family_of(unet: torch.nn.Module) -> ModelFamily:
    return next(f for f in FAMILIES if f.detect(unet))


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


def token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


def _encode_sd(comps, prompts: list[str]) -> torch.Tensor:
    return encode_prompts(comps.tokenizer, comps.text_encoder, prompts)


def _encode_xl(comps, prompts: list[str]) -> torch.Tensor:
    from .sdxl import encode_xl

    device = next(comps.text_encoder.parameters()).device
    return encode_xl([comps.tokenizer, comps.tokenizer_2], [comps.text_encoder, comps.text_encoder_2], prompts, device)


def _prepare_xl(comps) -> None:
    from ..errors import InputError
    from .sdxl import add_xl_conditioning

    if comps.text_encoder_2 is None:
        raise InputError(f"`model` {comps.model_id}: its UNet takes SDXL's pooled text embedding, but the folder has no "
                         "text_encoder_2/ and tokenizer_2/; pass a folder saved from StableDiffusionXLPipeline")
    add_xl_conditioning(comps.unet, comps.vae_scale_factor)


def _is_xl(unet) -> bool:
    from .sdxl import is_xl

    return is_xl(unet)


# SD-1.x and SD-2.x: one CLIP text encoder (SD-2's v-prediction lives in the scheduler config)
register(ModelFamily("sd", detect=lambda unet: True, encode=_encode_sd,
                     pipeline_kwargs=(("safety_checker", None), ("feature_extractor", None),
                                      ("requires_safety_checker", False))))
register(ModelFamily("sdxl", detect=_is_xl, encode=_encode_xl, prepare=_prepare_xl, vae_upcast_fp16=True,
                     extra_parts=(("text_encoder_2", "transformers", "CLIPTextModelWithProjection"),
                                  ("tokenizer_2", "transformers", "CLIPTokenizer")),
                     pipeline_class="StableDiffusionXLPipeline",
                     # 70 transformer blocks in 11 transformers: one temporal layer per transformer tunes
                     # 252 M parameters, not 614 M (docs/guides/model-families.md)
                     recommends=(("tune", "temporal_layers", "per-transformer"),)))
