"""The one model loader: Stable Diffusion, CLIP, PickScore, DINOv2 and BLIP-2, from a hub id or a local folder.

:func:`load_components` serves the CLI, the library and the tests for the SD parts;
:func:`load_clip_model` and :func:`load_blip2_model` for the metric and the captioner. All three
resolve a model the same way (:func:`from_pretrained_or_hub`): a local folder (pickle-only
weights refused) or an ``owner/name`` hub id; the local cache first, then — unless
huggingface_hub is offline (``HF_HUB_OFFLINE``) — an ordinary hub download through
``from_pretrained``, which uses huggingface_hub's HTTP session (so HTTP(S) proxies apply) and its
timeouts (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``).

``--model tiny`` is an ordinary diffusers folder (``contextedit/assets/tiny``). Only the random
test models (``tiny-random``, ``tiny-v-random``, ``--clip-model tiny``, ``--caption-model tiny``) are built in code,
by :mod:`contextedit.models.tiny` and :mod:`contextedit.models.tiny_clip`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import torch

from ..defaults import DEFAULTS_FILE
from ..errors import InputError, ModelNotFoundError, UnsafeFileError
from ..fileio import PICKLE_SUFFIXES, refuse_pickle
from .folders import refuse_custom_classes, refuse_pickle_weights  # noqa: F401 — re-exported
from .single_file import is_single_file
from .tiny import TRAINED, TRAINED_TINY  # noqa: F401 — the trained embedded models' folders (contextedit/assets/)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
EMBEDDED = ("tiny", "tiny-scenes", "tiny-random", "tiny-v-random", "tiny-xl-random")
# PickScore_v1 is fine-tuned from this CLIP-H and its authors load this processor with it.
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

T = TypeVar("T")


@dataclass
class Components:
    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    model_id: str
    extra: dict = field(default_factory=dict)
    text_encoder_2: torch.nn.Module | None = None  # SDXL's second encoder (with a projection: the pooled embedding)
    tokenizer_2: object | None = None

    @property
    def family(self):
        """Its :class:`~contextedit.models.families.ModelFamily`, told from the UNet."""
        from .families import family_of

        return family_of(self.unet)

    @property
    def recommended(self) -> dict:
        """The settings the model recommends, ``{"edit": {...}, "tune": {...}, ...}``: its family's
        (:attr:`ModelFamily.recommends`), overridden by its folder's ``contextedit.json``."""
        return self.family.recommended(self.extra.get("defaults"))

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
            for module in (self.unet, self.text_encoder, self.text_encoder_2):
                if module is not None:
                    module.to(device=device, dtype=dtype)
            # SDXL's VAE overflows in fp16 (its config says force_upcast): it stays in float32. SD-1/2
            # VAEs carry force_upcast too (diffusers' default) but run fine in fp16.
            upcast = dtype == torch.float16 and self.family.vae_upcast_fp16 and getattr(self.vae.config, "force_upcast", False)
            self.vae.to(device=device, dtype=torch.float32 if upcast else dtype)
        finally:
            dlog.set_verbosity(level)
        return self


def default_model() -> str:
    return os.environ.get("CONTEXTEDIT_MODEL") or DEFAULT_MODEL


def load_components(model: str | None = None, device: str | torch.device = "cpu",
                    dtype: str | torch.dtype = torch.float32, *, model_config: str | None = None,
                    loras=None) -> Components:
    """Return vae, unet, text_encoder, tokenizer and scheduler config for ``model``.

    ``dtype`` is a torch dtype or a CLI name (``auto``, ``fp32``, ``fp16``, ``bf16``). ``model`` may
    be a ``.safetensors`` single file, mapped onto ``model_config`` (:mod:`.single_file`); ``loras``
    (``FILE[:SCALE]`` strings, or records with file and scale) are fused into the 2-D weights
    (:mod:`.lora`) and recorded in ``extra["loras"]``.
    """
    device = torch.device(device)
    if isinstance(dtype, str):
        from ..device import resolve_dtype

        dtype = resolve_dtype(dtype, device)
    model = model or default_model()
    if loras:  # checked (and hashed) before the model loads: a wrong path fails fast
        from .lora import describe_loras

        loras = describe_loras(loras)
    if model in TRAINED and TRAINED[model].is_dir():
        # The trained embedded models ship as ordinary diffusers folders: same code path as real weights.
        comps = _load_pretrained(str(TRAINED[model]))
        comps.model_id = model
    elif model in TRAINED and model != "tiny":
        raise ModelNotFoundError(f"the embedded model {model} is not in this install ({TRAINED[model]} is missing); "
                                 "pass `model` tiny or another model")
    elif model in EMBEDDED:
        from . import tiny

        from ..device import seeded

        with seeded(0):  # the builders seed their weights; the caller's RNG stays as it was
            comps = Components(model_id=model, **tiny.BUILDERS.get(model, tiny.build_tiny_random)())
    elif is_single_file(model):
        comps = single_file_components(model, model_config)
    else:
        comps = _load_pretrained(model)
    for module in (comps.vae, comps.unet, comps.text_encoder, comps.text_encoder_2):
        if module is not None:
            module.requires_grad_(False).eval()
    if loras:  # fused in float32 on the CPU, before the family's hooks and before any inflation
        from .lora import fuse_loras

        fuse_loras(comps, loras)
        comps.extra["loras"] = loras
    if comps.family.prepare is not None:  # SDXL: the hook that unpacks its pooled token
        comps.family.prepare(comps)
    return comps.to(device, dtype)


def single_file_components(model: str, config: str | None) -> Components:
    """A ``.safetensors`` single file as components; ``extra["single_file"]`` records it."""
    from .single_file import load_single_file

    if config and Path(config).expanduser().is_dir() and (Path(config).expanduser() / "model_index.json").is_file():
        refuse_custom_classes(Path(config).expanduser())  # its classes build the parts: no custom code
    parts, record = load_single_file(model, config)
    comps = Components(model_id=record["path"], **parts)
    comps.extra.update(single_file=record, base_adapter=None,
                       defaults=recommended_defaults(Path(record["config"]) if Path(record["config"]).is_dir()
                                                     else record["config"]))
    return comps


def _load_pretrained(model: str) -> Components:
    parts = from_pretrained_or_hub(
        _sd_parts, model, "`model`", check_folder=_check_sd_folder,
        folder_hint="check that it holds unet/, vae/, text_encoder/, tokenizer/ and scheduler/ (SDXL: also text_encoder_2/ "
                    "and tokenizer_2/) with .safetensors weights",
    )
    path = Path(model).expanduser()
    source = path if path.is_dir() else model  # a Path: a local folder; a str: a hub id
    comps = Components(model_id=str(path.resolve()) if path.is_dir() else model, **parts)
    comps.extra["defaults"] = recommended_defaults(source)
    comps.extra["base_adapter"] = base_adapter(source)
    return comps


def _sd_parts(source: str, local_files_only: bool) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": local_files_only}
    # diffusers loads on the meta device only with accelerate; without it, ask for the plain load (no warning)
    weights = {"use_safetensors": True, "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None, **kw}
    parts = {
        "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", **weights),
        "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", **weights),
        "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", use_safetensors=True, **kw),
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
        "scheduler_config": dict(DDIMScheduler.load_config(source, subfolder="scheduler", **kw)),
    }
    from .families import family_of

    parts.update(family_of(parts["unet"]).load_extra_parts(source, **kw))  # SDXL: its second encoder and tokenizer
    return parts


def _check_sd_folder(path: Path) -> None:
    if not (path / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{path} has no model_index.json, so it is not a diffusers model folder; "
            "pass a folder saved with save_pretrained, a hub id, or `model` tiny"
        )
    refuse_pickle_weights(path)
    refuse_custom_classes(path)


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


def offline() -> bool:
    """huggingface_hub's own offline switch (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_model(model_id: str, option: str, check_folder: Callable[[Path], None]) -> tuple[str, Path | None]:
    """``(source, folder)`` for ``from_pretrained``: a checked local folder, or a hub id (folder None).

    ``option`` names the CLI flag (``--model``, ``--clip-model``) so that errors say what to pass.
    """
    path = Path(model_id).expanduser()
    if path.exists():
        refuse_pickle(path)
        if not path.is_dir():
            raise ModelNotFoundError(f"{option} {model_id} is a file; pass a folder saved with save_pretrained, a hub id, or {option} tiny")
        check_folder(path)
        return str(path), path
    if model_id.count("/") != 1 or model_id.startswith(("/", ".", "~")):
        raise ModelNotFoundError(
            f"{option} {model_id!r} is neither a local folder nor a hub id (owner/name); "
            f"pass a local folder with {option} PATH or use {option} tiny"
        )
    return model_id, None


def from_pretrained_or_hub(load: Callable[[str, bool], T], model_id: str, option: str,
                           check_folder: Callable[[Path], None], folder_hint: str) -> T:
    """``load(source, local_files_only)`` for a local folder or a hub id, the local cache first.

    A hub id missing from the cache is downloaded by ``from_pretrained`` itself unless
    huggingface_hub is offline: its HTTP session honours HTTP(S) proxies and its timeouts
    (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``) bound an unreachable hub. Remote code
    is never trusted. Failures become a :class:`ModelNotFoundError` that says what to do.
    """
    source, folder = resolve_model(model_id, option, check_folder)
    try:
        try:  # the local cache first: no network round trip when the model is already there
            return load(source, True)
        except OSError:
            if folder is not None or offline():
                raise
            return load(source, False)
    except (OSError, ValueError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        if folder is not None:
            raise ModelNotFoundError(f"cannot load {option} {folder} ({reason}); {folder_hint}") from exc
        why = "the hub is off (HF_HUB_OFFLINE is set)" if offline() else "could not be downloaded"
        raise ModelNotFoundError(
            f"{option} {model_id!r} is not in the local Hugging Face cache and {why} ({reason}); download it on a "
            f"connected machine, or pass a local folder with {option} PATH or use {option} tiny"
        ) from exc


# --------------------------------------------------------------------------- CLIP and BLIP-2


def load_model_and_processor(model_cls, processor_cls, model_id: str, option: str, processor_id: str | None = None):
    """A transformers model + processor from a local folder or a hub id, safetensors only.

    ``processor_id`` loads the processor from elsewhere (PickScore ships weights only and is
    used with the processor of the CLIP it was fine-tuned from).
    """
    def load(source: str, local_files_only: bool):
        model = model_cls.from_pretrained(source, use_safetensors=True, local_files_only=local_files_only)
        processor = processor_cls.from_pretrained(source, local_files_only=local_files_only) if processor_id is None else None
        return model.eval(), processor

    model, processor = from_pretrained_or_hub(
        load, model_id, option, check_folder=lambda path: _check_transformers_folder(path, option),
        folder_hint=f"pass a folder saved with save_pretrained or use {option} tiny",
    )
    if processor_id is not None:
        processor = from_pretrained_or_hub(
            lambda source, local: processor_cls.from_pretrained(source, local_files_only=local), processor_id, option,
            check_folder=lambda path: None,
            folder_hint=f"cache {processor_id} once with network, or copy its processor files (preprocessor_config.json "
                        f"and the tokenizer's) into the {option} folder; {option} tiny serves tests",
        )
    return model, processor


def _check_transformers_folder(path: Path, option: str) -> None:
    """A model folder must hold .safetensors weights; pickle-only folders are refused."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeFileError(
            f"{path} holds only pickle weights ({', '.join(pickles)}); convert them to .safetensors first or pass another {option}"
        )
    raise ModelNotFoundError(f"{path} holds no .safetensors weights; pass a folder saved with save_pretrained or use {option} tiny")


def _tiny(builder: str, **kw):
    """A ``tiny`` stand-in built by :mod:`contextedit.models.tiny_clip`, the caller's RNG left alone."""
    from ..device import seeded
    from . import tiny_clip

    with seeded(0):
        return getattr(tiny_clip, builder)(**kw)


def load_clip_model(model_id: str):
    """``(CLIPModel, CLIPProcessor)`` for a hub id, a local folder, or ``tiny`` (random, for tests)."""
    if model_id == "tiny":
        return _tiny("build_tiny_clip")
    from transformers import CLIPModel, CLIPProcessor

    return load_model_and_processor(CLIPModel, CLIPProcessor, model_id, "`clip_model`")


def load_pickscore_model(model_id: str):
    """``(CLIPModel, CLIPProcessor)`` of PickScore: the weights from ``model_id``, the processor from
    the same folder when it holds one, else from CLIP-H (:data:`PICKSCORE_PROCESSOR`), as its authors do."""
    if model_id == "tiny":
        return _tiny("build_tiny_clip", seed=1)
    from transformers import CLIPModel, CLIPProcessor

    folder = Path(model_id).expanduser()
    own = folder.is_dir() and (folder / "preprocessor_config.json").is_file()
    return load_model_and_processor(CLIPModel, CLIPProcessor, model_id, "`pickscore_model`",
                                    processor_id=None if own else PICKSCORE_PROCESSOR)


def load_dino_model(model_id: str):
    """``(Dinov2Model, image processor)`` for a hub id, a local folder, or ``tiny`` (random, for tests)."""
    if model_id == "tiny":
        return _tiny("build_tiny_dino")
    from transformers import AutoImageProcessor, Dinov2Model

    return load_model_and_processor(Dinov2Model, AutoImageProcessor, model_id, "`dino_model`")


def load_depth_model(model_id: str):
    """``(depth model, image processor)`` (DPT, Depth-Anything: transformers' depth estimation) for a
    hub id, a local folder, or ``tiny`` (random, for tests)."""
    if model_id == "tiny":
        return _tiny("build_tiny_dpt")
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    return load_model_and_processor(AutoModelForDepthEstimation, AutoImageProcessor, model_id, "`depth_model`")


def load_blip2_model(model_id: str):
    """``(Blip2ForConditionalGeneration, Blip2Processor)`` for a hub id, a local folder, or ``tiny`` (random, for tests)."""
    if model_id == "tiny":
        return _tiny("build_tiny_blip2")
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    return load_model_and_processor(Blip2ForConditionalGeneration, Blip2Processor, model_id, "`caption_model`")


def save_components(comps: Components, folder: str | os.PathLike) -> Path:
    """Write ``comps`` as a diffusers folder of its family's pipeline (model_index.json + subfolders)."""
    comps.family.save(comps, folder)
    return Path(folder)
