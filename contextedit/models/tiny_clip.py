"""Tiny random CLIP, DINOv2 and BLIP-2, built in code (``--clip-model tiny``, ``--pickscore-model tiny``,
``--dino-model tiny``, ``--caption-model tiny``).

``tiny`` (for ``eval --clip-model tiny`` and ``caption --caption-model tiny``) is built in code
from a fixed seed with the same classes that real checkpoints load into
(CLIPModel + CLIPProcessor, Blip2ForConditionalGeneration + Blip2Processor), so the metric and
captioning code runs unchanged on them, and a ``save_pretrained`` folder of them goes through the
same ``from_pretrained`` path as a downloaded model (``contextedit.models.loading``). Their
numbers mean nothing. The tokenizer is the tiny one read from ``tokenizer.json``.
"""

from __future__ import annotations

import torch

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
    """Return ``(CLIPModel, CLIPProcessor)``: random weights, the tiny tokenizer, 32x32 images."""
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


def build_tiny_dino(seed: int = 0):
    """Return ``(Dinov2Model, BitImageProcessor)``: random weights, 32x32 images (``--dino-model tiny``)."""
    import transformers
    from transformers import Dinov2Config, Dinov2Model

    dims = _encoder_dims()
    config = Dinov2Config(hidden_size=dims["hidden_size"], num_hidden_layers=dims["num_hidden_layers"],
                          num_attention_heads=dims["num_attention_heads"], mlp_ratio=2,
                          image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH_SIZE)
    torch.manual_seed(seed)
    model = Dinov2Model(config).eval()
    cls = getattr(transformers, "BitImageProcessorPil", transformers.BitImageProcessor)
    processor = cls(size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return model, processor


def build_tiny_dpt(seed: int = 0):
    """Return ``(DPTForDepthEstimation, DPTImageProcessor)``: random weights, 32x32 (``--depth-model tiny``)."""
    import transformers
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=TINY_HIDDEN, num_hidden_layers=4, num_attention_heads=4, intermediate_size=2 * TINY_HIDDEN,
                       image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH_SIZE, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, is_hybrid=False, head_in_index=-1)
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config).eval()
    cls = getattr(transformers, "DPTImageProcessorPil", transformers.DPTImageProcessor)
    return model, cls(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}, keep_aspect_ratio=False)


def build_tiny_blip2(seed: int = 0):
    """Return ``(Blip2ForConditionalGeneration, Blip2Processor)`` with a tiny OPT language model.

    The tokenizer is the tiny CLIP BPE (read from tokenizer.json); Blip2Processor adds the ``<image>`` token to it,
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
