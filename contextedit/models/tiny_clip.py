"""CLIP and BLIP-2 loading: hub ids, local folders, and tiny random ones built in code.

``tiny`` (for ``eval --clip-model tiny`` and ``caption --caption-model tiny``) is built in code
from a fixed seed with the same classes that real checkpoints load into
(CLIPModel + CLIPProcessor, Blip2ForConditionalGeneration + Blip2Processor), so the metric and
captioning code runs unchanged on them, and a ``save_pretrained`` folder of them goes through the
same ``from_pretrained`` path as a downloaded model. Their numbers mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelNotFoundError, UnsafeFileError
from ..fileio import PICKLE_SUFFIXES, refuse_pickle
from .loading import hub_reachable, offline
from .tiny import tiny_tokenizer

TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_HIDDEN = 32
TINY_QUERY_TOKENS = 4
# A random language model may emit EOS at once; this keeps the tiny caption non-empty.
TINY_MIN_NEW_TOKENS = 4


def _encoder_dims(hidden: int = TINY_HIDDEN) -> dict:
    """Width and depth shared by every tiny transformer here."""
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 4}


def _tiny_image_processor(kind: str):
    """A CLIP or BLIP image processor working at 32x32 (the PIL backend: torchvision is optional)."""
    import transformers

    size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    if kind == "clip":
        cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
        return cls(size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size=size)
    cls = getattr(transformers, "BlipImageProcessorPil", transformers.BlipImageProcessor)
    return cls(size=size)


def build_tiny_clip(seed: int = 0):
    """Return ``(CLIPModel, CLIPProcessor)``: random weights, the embedded tiny tokenizer, 32x32 images."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer()
    text_config = {
        **_encoder_dims(), "vocab_size": len(tokenizer), "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {**_encoder_dims(), "image_size": TINY_IMAGE_SIZE, "patch_size": TINY_PATCH_SIZE}
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=_tiny_image_processor("clip"), tokenizer=tokenizer)
    return model, processor


def build_tiny_blip2(seed: int = 0):
    """Return ``(Blip2ForConditionalGeneration, Blip2Processor)`` with a tiny OPT language model.

    The tokenizer is the embedded tiny CLIP BPE; Blip2Processor adds the ``<image>`` token to it,
    and the config's ``image_token_index`` points at that token.
    """
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tokenizer = tiny_tokenizer()
    processor = Blip2Processor(_tiny_image_processor("blip"), tokenizer, num_query_tokens=TINY_QUERY_TOKENS)
    dims = _encoder_dims()
    text_config = {
        "model_type": "opt", "vocab_size": len(tokenizer), "hidden_size": TINY_HIDDEN,
        "word_embed_proj_dim": TINY_HIDDEN, "ffn_dim": 2 * TINY_HIDDEN, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Blip2Config(
        vision_config={**dims, "image_size": TINY_IMAGE_SIZE, "patch_size": TINY_PATCH_SIZE},
        qformer_config={**dims, "vocab_size": 64, "encoder_hidden_size": TINY_HIDDEN, "max_position_embeddings": 64},
        text_config=text_config, num_query_tokens=TINY_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids(processor.image_token.content),
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    model.generation_config.min_new_tokens = TINY_MIN_NEW_TOKENS
    # Random weights may favour tokens that decode to nothing (specials, spaces, control bytes): never emit them.
    silent = set(tokenizer.all_special_ids) | {config.image_token_index}
    silent |= {i for i in range(len(tokenizer)) if not any(c.isalnum() for c in tokenizer.decode([i], skip_special_tokens=True))}
    model.generation_config.bad_words_ids = [[i] for i in sorted(silent)]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, text_config[key])
    return model, processor


# --------------------------------------------------------------------------- loading


def load_model_and_processor(model_cls, processor_cls, model_id: str, option: str):
    """Load a transformers model + processor from a local folder or a hub id, safetensors only.

    ``option`` names the CLI flag (``--clip-model``) so the error says what to pass instead.
    Remote code is never trusted; offline mode only looks in the local cache.
    """
    path = Path(model_id).expanduser()
    if path.exists():
        source = str(_checked_folder(path, option))
    elif model_id.count("/") != 1 or model_id.startswith(("/", ".", "~")):
        raise ModelNotFoundError(f"{option} {model_id!r} is neither a local folder nor a hub id (owner/name); pass a local folder with {option} PATH or use {option} tiny")
    else:
        source = model_id
    try:
        try:  # the local cache first: no network round trip when the model is already there
            return _from_pretrained(model_cls, processor_cls, source, local_only=True)
        except OSError:
            if path.exists() or offline() or not hub_reachable():
                raise
            return _from_pretrained(model_cls, processor_cls, source, local_only=False)
    except (OSError, ValueError) as exc:
        where = "cannot be loaded" if path.exists() else "is not in the local Hugging Face cache and could not be downloaded"
        raise ModelNotFoundError(
            f"{option} {model_id!r} {where} ({str(exc).splitlines()[0][:200]}); pass a local folder with {option} PATH or use {option} tiny"
        ) from exc


def _from_pretrained(model_cls, processor_cls, source: str, local_only: bool):
    model = model_cls.from_pretrained(source, use_safetensors=True, local_files_only=local_only)
    processor = processor_cls.from_pretrained(source, local_files_only=local_only)
    return model.eval(), processor


def _checked_folder(path: Path, option: str) -> Path:
    """A model folder must hold .safetensors weights; pickle-only folders are refused."""
    if not path.is_dir():
        refuse_pickle(path)
        raise ModelNotFoundError(f"{option} {path} is a file; pass a folder saved with save_pretrained, a hub id, or {option} tiny")
    if any(path.glob("*.safetensors")):
        return path
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeFileError(f"{path} holds only pickle weights ({', '.join(pickles)}); convert them to .safetensors first or pass another {option}")
    raise ModelNotFoundError(f"{path} holds no .safetensors weights; pass a folder saved with save_pretrained or use {option} tiny")


def load_clip_model(model_id: str):
    """``(CLIPModel, CLIPProcessor)`` for a hub id, a local folder, or ``tiny``."""
    if model_id == "tiny":
        return build_tiny_clip()
    from transformers import CLIPModel, CLIPProcessor

    return load_model_and_processor(CLIPModel, CLIPProcessor, model_id, "--clip-model")


def load_blip2_model(model_id: str):
    """``(Blip2ForConditionalGeneration, Blip2Processor)`` for a hub id, a local folder, or ``tiny``."""
    if model_id == "tiny":
        return build_tiny_blip2()
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    return load_model_and_processor(Blip2ForConditionalGeneration, Blip2Processor, model_id, "--caption-model")
