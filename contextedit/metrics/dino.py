"""DINO frame consistency, as V2VBench reports it: the mean cosine between the DINOv2 [CLS]
embeddings of consecutive frames (1 for a still clip). Self-supervised features see structure and
texture that CLIP's caption-aligned ones miss, so flicker shows here first.

The embedding is transformers' ``Dinov2Model`` pooler output: the final layer-normed [CLS] token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .clip import clip_temporal_score
from .metric import Metric

from ..defaults import DEFAULT_DINO_MODEL  # noqa: E402,F401 — declared there


@dataclass
class DinoScorer:
    model: torch.nn.Module
    processor: object
    model_id: str
    batch_size: int = 16

    @torch.no_grad()
    def embeds(self, frames: np.ndarray) -> torch.Tensor:
        """(F, D) float32 [CLS] embeddings of uint8 frames (F, H, W, 3)."""
        device = next(self.model.parameters()).device
        chunks = []
        for start in range(0, len(frames), self.batch_size):
            pixels = self.processor(images=list(frames[start : start + self.batch_size]), return_tensors="pt")["pixel_values"]
            chunks.append(self.model(pixel_values=pixels.to(device, self.model.dtype)).pooler_output.float().cpu())
        return torch.cat(chunks)


def load_dino(model_id: str = DEFAULT_DINO_MODEL, device: str | torch.device = "cpu", batch_size: int = 16) -> DinoScorer:
    """DINOv2 from a hub id, a local folder (safetensors only) or ``tiny``."""
    from ..models.loading import load_dino_model

    model, processor = load_dino_model(model_id)
    model.requires_grad_(False).to(torch.device(device))
    return DinoScorer(model=model, processor=processor, model_id=model_id, batch_size=batch_size)


DINO = Metric(
    "dino", ("dino_temporal",),
    scales={"dino_temporal": "cosine of DINOv2 [CLS] embeddings, {temporal} pairs"},
    columns={"dino_temporal": "DINO"},
    score=lambda item, scorer, ctx: {"dino_temporal": clip_temporal_score(scorer.embeds(item.frames), ctx.temporal)},
    load=lambda ctx: load_dino(ctx.options["dino_model"], ctx.device),
)
