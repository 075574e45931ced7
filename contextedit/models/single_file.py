"""Single-file checkpoints (the A1111/ComfyUI ``.safetensors`` layout) through diffusers' own
``from_single_file``: :func:`load_single_file` maps the file onto a diffusers config (``config``:
a hub id in the local cache, or a folder) and returns contextedit's components.

The family is told from the file's keys (:func:`detect_family`): SD-1 keeps CLIP's text model under
``cond_stage_model.transformer``, SD-2 OpenCLIP's under ``cond_stage_model.model``, SDXL two
encoders under ``conditioner.embedders``. Pickle files (``.ckpt``, ``.pt``, ``.bin``) are refused.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ModelNotFoundError, UnsafeFileError
from ..fileio import PICKLE_SUFFIXES
from ..runs import sha256_file

SINGLE_FILE_SUFFIXES = (".safetensors",)
# diffusers' pipeline class per family, and the base model whose config a file maps onto by default
PIPELINES = {"sd-1": "StableDiffusionPipeline", "sd-2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
BASE_CONFIGS = {"sd-1": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd-2": "stabilityai/stable-diffusion-2-1",
                "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}


def is_single_file(model: str | None) -> bool:
    """Whether ``--model`` names a file (a single-file checkpoint, or a refused pickle), not a folder or id."""
    if not model:
        return False
    path = Path(model).expanduser()
    return path.is_file() or path.suffix.lower() in SINGLE_FILE_SUFFIXES + tuple(PICKLE_SUFFIXES)


def check_file(path: Path, option: str = "`model`") -> Path:
    """A readable ``.safetensors`` file; pickles and missing files are one line each."""
    if path.suffix.lower() in PICKLE_SUFFIXES or path.suffix.lower() == ".ckpt":
        raise UnsafeFileError(f"{option} {path} is a pickle file ({path.suffix}); only .safetensors single files are "
                              "loaded — convert it to .safetensors first")
    if not path.is_file():
        raise ModelNotFoundError(f"{option} {path} does not exist; pass a .safetensors single file, a diffusers folder "
                                 "or a hub id")
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise UnsafeFileError(f"{option} {path} is not a .safetensors file; only .safetensors single files are loaded")
    return path


def file_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise InputError(f"{path} is not a readable .safetensors file ({str(exc).splitlines()[0][:120]})") from exc


def detect_family(keys: list[str], path: Path | str = "the file") -> str:
    """``sd-1``, ``sd-2`` or ``sdxl``, from a single file's key names."""
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise InputError(f"{path} holds no Stable Diffusion UNet (no model.diffusion_model.* keys); pass an SD-1.x, "
                         "SD-2.x or SDXL single file")
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd-2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd-1"
    raise InputError(f"{path} holds a UNet but no text encoder contextedit knows (SD-1, SD-2 or SDXL); pass a full "
                     "single file")


def default_config(path: Path, family: str) -> str:
    """The base model a file maps onto when ``model_config`` is not given: diffusers' own guess from
    the keys (SD-2 base vs v, SDXL base vs refiner), else the family's base."""
    try:
        from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_single_file_checkpoint

        guess = fetch_diffusers_config(load_single_file_checkpoint(str(path)))["pretrained_model_name_or_path"]
        if guess:
            return guess
    except Exception:
        pass
    return BASE_CONFIGS[family]


def describe(path: str | Path, config: str | None = None) -> dict:
    """What a run's manifest records of a single file: path, sha256, family and config."""
    path = check_file(Path(path).expanduser().resolve())
    family = detect_family(file_keys(path), path)
    config = str(Path(config).resolve()) if config and Path(config).expanduser().is_dir() else config
    return {"path": str(path), "sha256": sha256_file(path), "family": family, "config": config or default_config(path, family)}


def load_single_file(path: str | Path, config: str | None = None) -> tuple[dict, dict]:
    """``(parts, record)``: vae, unet, text_encoder(s), tokenizer(s), scheduler_config for
    :class:`~contextedit.models.loading.Components`, and the manifest's record (:func:`describe`)."""
    import diffusers

    record = describe(path, config)
    source = record["config"]
    local = Path(source).expanduser()
    if local.is_dir() and not (local / "model_index.json").is_file():
        raise ModelNotFoundError(f"`model_config` {local} has no model_index.json; pass a diffusers folder or a hub id")
    cls = getattr(diffusers, PIPELINES[record["family"]])
    extra = {"safety_checker": None, "requires_safety_checker": False} if record["family"] != "sdxl" else {}
    from diffusers.utils import logging as dlog
    from huggingface_hub import constants

    bar = dlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()  # "Loading pipeline components": contextedit reports its own progress
    try:
        try:
            pipe = cls.from_single_file(record["path"], config=source, local_files_only=True, **extra)
        except OSError:
            if local.is_dir() or constants.HF_HUB_OFFLINE:
                raise
            pipe = cls.from_single_file(record["path"], config=source, **extra)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelNotFoundError(
            f"cannot map `model` {record['path']} ({record['family']}) onto the config {source!r} ({reason}); pass "
            "`model_config` ID|FOLDER naming the diffusers model it was fine-tuned from (cached, or a local folder)"
        ) from exc
    finally:
        if bar:
            dlog.enable_progress_bar()
    parts = {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
             "scheduler_config": dict(pipe.scheduler.config)}
    if record["family"] == "sdxl":
        parts.update(text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2)
    return parts, record


def check_recorded(record: dict, run: str | Path) -> None:
    """The single file a run was tuned on, still where it was and unchanged, or one line naming it."""
    check_unchanged(record["path"], record["sha256"], f"run {run} was tuned on the single file",
                    missing="put that file back at that path", changed="put the original back, or tune again on the new file",
                    missing_error=ModelNotFoundError)


def check_unchanged(path: str | Path, digest: str, what: str, *, missing: str, changed: str,
                    missing_error: type[Exception] = InputError, digest_of=sha256_file, present=Path.is_file) -> None:
    """``path`` still there (``present``) with ``digest_of(path)`` == ``digest`` (a file's sha256 by
    default; a folder passes its own pair), or one line: ``what`` it is — its path and whole sha256,
    so that a moved copy can be found (``sha256sum``) — and what to do."""
    path = Path(path)
    if not present(path):
        raise missing_error(f"{what} {path} (sha256 {digest}), which is missing; {missing}")
    if digest_of(path) != digest:
        raise InputError(f"{what} {path} (sha256 {digest}), but the file there has changed; {changed}")
