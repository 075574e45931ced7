"""Source captions with BLIP-2, for editing a clip when no source prompt is given (docs/concepts/design.md §5.2).

The clip's middle frame is captioned: it is the frame most representative of the whole clip, and
one frame keeps the cost of a 2.7B-parameter language model to a single generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .defaults import DEFAULT_CAPTION_MODEL  # noqa: F401
from .errors import RunFailure


@dataclass
class Captioner:
    """A BLIP-2 model with its processor."""

    model: torch.nn.Module
    processor: object
    model_id: str

    @torch.no_grad()
    def caption(self, image: np.ndarray, max_new_tokens: int = 30) -> str:
        """Caption one uint8 (H, W, 3) image; the text is stripped and may be empty."""
        pixels = self.processor(images=[image], return_tensors="pt")["pixel_values"]
        param = next(self.model.parameters())
        # The model's own generation settings (min length, banned tokens) are passed explicitly:
        # BLIP-2's generate does not read all of them from model.generation_config.
        settings = {k: v for k, v in {"min_new_tokens": self.model.generation_config.min_new_tokens,
                                      "bad_words_ids": self.model.generation_config.bad_words_ids}.items() if v}
        ids = self.model.generate(pixel_values=pixels.to(param.device, param.dtype), max_new_tokens=max_new_tokens, **settings)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


def load_captioner(model_id: str = DEFAULT_CAPTION_MODEL, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> Captioner:
    """Load BLIP-2 from a hub id, a local folder (safetensors only) or ``tiny``.

    ``dtype`` None means the device's default: fp32 on the CPU, bf16/fp16 on a GPU.
    """
    from .device import resolve_dtype
    from .models.loading import load_blip2_model

    device = torch.device(device)
    model, processor = load_blip2_model(model_id)
    model.requires_grad_(False).to(device=device, dtype=dtype or resolve_dtype("auto", device))
    return Captioner(model=model, processor=processor, model_id=model_id)


def caption_frames(
    frames: np.ndarray,
    model_id: str = DEFAULT_CAPTION_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    max_new_tokens: int = 30,
    captioner: Captioner | None = None,
) -> str:
    """Caption a clip (uint8 (F, H, W, 3)) from its middle frame; a preloaded ``captioner`` wins."""
    if len(frames) == 0:
        raise RunFailure("cannot caption an empty clip; check the frame selection (`frames`, `stride`, `start`)")
    captioner = captioner or load_captioner(model_id, device, dtype)
    text = captioner.caption(frames[len(frames) // 2], max_new_tokens=max_new_tokens)
    if not text:
        raise RunFailure(
            f"{captioner.model_id} produced an empty caption for this clip; pass the source prompt yourself with `prompt`"
        )
    return text
