"""The checks a diffusers model folder passes before contextedit loads it: no pickle-only weights
(:func:`refuse_pickle_weights`) and no custom classes (:func:`refuse_custom_classes`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelNotFoundError, UnsafeFileError
from ..fileio import PICKLE_SUFFIXES


# The classes contextedit builds each part with; a folder naming others would be silently replaced.
STANDARD_CLASSES = {
    "unet": {"UNet2DConditionModel"}, "vae": {"AutoencoderKL"}, "text_encoder": {"CLIPTextModel"},
    "tokenizer": {"CLIPTokenizer", "CLIPTokenizerFast"},
}


def _standard(part: str) -> set | None:
    """The classes a folder may name for ``part``: SD's, or a family's extra part's (and its fast tokenizer)."""
    from .families import FAMILIES

    names = set(STANDARD_CLASSES.get(part, ()))
    for family in FAMILIES:
        names |= {n for p, _, n in family.extra_parts if p == part} | {n + "Fast" for p, _, n in family.extra_parts
                                                                         if p == part and n.endswith("Tokenizer")}
    return names or None


def refuse_custom_classes(path: Path) -> None:
    """Refuse a model_index.json that names classes other than the standard ones (custom code is
    never run, and loading the standard class in its place would be a silent substitute).
    Schedulers only lend their config, so any diffusers scheduler is fine."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{path / 'model_index.json'} is not valid JSON ({exc}); re-save the model") from exc
    custom = []
    for part, entry in index.items() if isinstance(index, dict) else ():
        if part.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
            continue
        library, name = entry
        standard = name in (_standard(part) or {name}) and library in ("diffusers", "transformers")
        if part == "scheduler":
            standard = library == "diffusers"
        if not standard:
            custom.append(f"{part}: {library}.{name}")
    if custom:
        raise ModelNotFoundError(
            f"{path} names custom classes ({'; '.join(custom)}); contextedit loads only the standard Stable Diffusion "
            "classes and runs no custom code — re-save the parts as the standard classes or pass another `model`")


def refuse_pickle_weights(folder: Path, parts: tuple[str, ...] = ("unet", "vae", "text_encoder")) -> None:
    """Name the real problem when a part holds pickle weights only: they are never loaded."""
    for part in parts:
        sub = folder / part
        if sub.is_dir() and not any(sub.glob("*.safetensors")):
            pickles = sorted(p.name for p in sub.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise UnsafeFileError(
                    f"{sub} holds only pickle weights ({', '.join(pickles)}); only .safetensors are loaded — "
                    "re-save the model with save_pretrained(safe_serialization=True) or pass another `model`"
                )
