"""LoRA files fused into the frozen 2-D weights, before the UNet is inflated, through diffusers'
``load_lora_weights`` (peft; the diffusers and kohya formats diffusers reads): each file is loaded as
an adapter, all are fused at their scales (``fuse_lora``) and the peft layers are removed
(``unload_lora_weights``), so the UNet and text encoder hold plain weights again and tuning,
inversion, fusion and the adapter all see the LoRA'd model.

``--lora FILE[:SCALE]`` (:func:`parse_lora`); a run records each file, its sha256 and scale.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import InputError, UnsafeFileError, UsageError
from ..fileio import PICKLE_SUFFIXES


def parse_lora(spec: str) -> tuple[str, float]:
    """``FILE`` or ``FILE:SCALE`` (scale 1 by default) → (file, scale)."""
    text = str(spec)
    file, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head and not tail.startswith(("/", "\\")):
        try:
            file, scale = head, float(tail)
        except ValueError:
            file, scale = text, 1.0
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise UsageError(f"`lora` {spec!r}: the scale must be a finite number")
    return file, scale


def lora_specs(values) -> list[str] | None:
    """The ``--lora`` values: None when not given (edit: the run's), [] for ``none``."""
    values = [str(v) for v in values or ()]
    if not values:
        return None
    if "none" in values:
        if len(values) > 1:
            raise UsageError("`lora` none means no LoRA; drop it or the other `lora` values")
        return []
    return values


def check_lora_file(file: str | Path) -> Path:
    path = Path(file).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFileError(f"`lora` {path} is a pickle file ({path.suffix}); only .safetensors LoRA files are loaded")
    if not path.is_file():
        raise InputError(f"`lora` {path} does not exist; pass a .safetensors LoRA file")
    if path.suffix.lower() != ".safetensors":
        raise UnsafeFileError(f"`lora` {path} is not a .safetensors file; only .safetensors LoRA files are loaded")
    return path.resolve()


def describe_loras(specs) -> list[dict]:
    """``[{"file", "sha256", "scale"}]`` for ``--lora`` values (``FILE[:SCALE]`` strings or (file, scale) pairs)."""
    from ..runs import sha256_file

    out = []
    for spec in specs or ():
        if isinstance(spec, dict):
            file, scale = spec["file"], float(spec["scale"])
        else:
            file, scale = parse_lora(str(spec)) if isinstance(spec, (str, Path)) else (spec[0], float(spec[1]))
        path = check_lora_file(file)
        out.append({"file": str(path), "sha256": sha256_file(path), "scale": scale})
    return out


def check_recorded_loras(loras: list[dict], run: str | Path) -> None:
    """The LoRA files a run was tuned with, where they were and unchanged, or one line naming the file."""
    from .single_file import check_unchanged

    for lora in loras:
        check_unchanged(lora["file"], lora["sha256"], f"run {run} was tuned with the LoRA",
                        missing="put it back at that path, or pass `lora` none", changed="put the original back, or tune again")


def check_resumed_loras(recorded: list[dict], current: list[dict], checkpoint: str | Path) -> None:
    """A tune resumed from ``checkpoint`` on the LoRAs it was interrupted with: each recorded file
    where it was and unchanged (sha256), and the same files at the same scales given again; else one line."""
    from .single_file import check_unchanged

    for lora in recorded:
        check_unchanged(lora["file"], lora["sha256"], f"the interrupted tune {checkpoint} was tuned with the LoRA",
                        missing="put it back at that path to resume, or start again (`overwrite`)",
                        changed="put the original back to resume, or start again (`overwrite`)")

    def given(loras: list[dict]) -> str:
        return ", ".join(f"{lora['file']}:{float(lora['scale']):g}" for lora in loras) or "none"

    if given(recorded) != given(current):
        raise UsageError(f"the interrupted tune {checkpoint} was tuned with `lora` {given(recorded)}, not "
                         f"{given(current)}; resume with the same `lora` values, or start again (`overwrite`)")


def fuse_loras(comps, loras: list[dict]) -> None:
    """Fuse ``loras`` (:func:`describe_loras`) into ``comps``' UNet and text encoders, in place, and
    remove the peft layers again. A LoRA for another base (shapes that do not match) or one that
    touches no layer of this model is refused with one line."""
    if not loras:
        return
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise UsageError("`lora` needs peft; install it with: pip install 'contextedit[lora]'")
    import diffusers
    from diffusers import DDIMScheduler
    from diffusers.utils import logging as dlog

    family = comps.family
    parts = {"vae": comps.vae, "text_encoder": comps.text_encoder, "tokenizer": comps.tokenizer, "unet": comps.unet,
             "scheduler": DDIMScheduler.from_config(comps.scheduler_config),
             **{part: getattr(comps, part) for part, _, _ in family.extra_parts}}
    pipe = getattr(diffusers, family.pipeline_class)(**parts, **dict(family.pipeline_kwargs))
    level = dlog.get_verbosity()
    dlog.set_verbosity(dlog.CRITICAL)  # a refused LoRA is our one line, not diffusers' logged state-dict dump
    with warnings.catch_warnings():  # peft's notes on several adapters in one model: that is the plan here
        warnings.simplefilter("ignore")
        _load_and_fuse(pipe, comps, loras, level)
    for module in (comps.unet, comps.text_encoder, comps.text_encoder_2):
        if module is not None:
            module.requires_grad_(False).eval()


def _load_and_fuse(pipe, comps, loras: list[dict], level: int) -> None:
    from diffusers.utils import logging as dlog

    names = []
    try:
        for i, lora in enumerate(loras):
            name = f"contextedit_lora_{i}"
            try:
                pipe.load_lora_weights(lora["file"], adapter_name=name)
            except (RuntimeError, ValueError, KeyError, OSError) as exc:
                pipe.unload_lora_weights()
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
                reason = next((line for line in lines if "size mismatch" in line), lines[0])
                reason = reason.replace("copying a param with shape", "the LoRA has").replace(
                    "the shape in current model is", "the model needs")[:220]
                raise InputError(f"`lora` {lora['file']} does not fit `model` {comps.model_id} (a LoRA for another "
                                 f"base model?): {reason}") from exc
            if not any(name in (getattr(m, "peft_config", None) or {}) for m in
                       (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None):
                pipe.unload_lora_weights()
                raise InputError(f"`lora` {lora['file']} changes no layer of `model` {comps.model_id} (a LoRA for "
                                 "another base model, or not a LoRA file)")
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[lora["scale"] for lora in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()  # the peft layers go; the fused weights stay
    finally:
        dlog.set_verbosity(level)
