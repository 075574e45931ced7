"""CLIP-text and CLIP-temporal scores (Table 2 of the paper).

CLIP-text: the mean over frames of the raw cosine between each frame's CLIP image embedding and
the prompt's CLIP text embedding. CLIP-temporal: the mean cosine between image embeddings of
consecutive frames, or of all frame pairs i < j (the paper's wording). Embeddings come from
transformers' CLIPModel with the model's own CLIPProcessor preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from .metric import Metric

from ..defaults import DEFAULT_CLIP_MODEL  # noqa: E402,F401 — declared there
from ..defaults import TEMPORAL_MODES  # noqa: E402,F401 — declared there


@dataclass
class ClipScorer:
    """A CLIP model with its processor; embeds frames (batched) and prompts."""

    model: torch.nn.Module
    processor: object
    model_id: str
    batch_size: int = 16

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeds(self, frames: np.ndarray) -> torch.Tensor:
        """(F, D) float32 image embeddings of uint8 frames (F, H, W, 3)."""
        chunks = []
        for start in range(0, len(frames), self.batch_size):
            batch = list(frames[start : start + self.batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            chunks.append(_features(out).float().cpu())
        return torch.cat(chunks)

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """(P, D) float32 text embeddings; prompts longer than CLIP's 77 tokens are truncated."""
        tokens = self.processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tokens)).float().cpu()


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected embeddings; 5 an output whose pooler_output holds them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_clip(model_id: str = DEFAULT_CLIP_MODEL, device: str | torch.device = "cpu", batch_size: int = 16) -> ClipScorer:
    """Load CLIP from a hub id, a local folder (safetensors only) or ``tiny``."""
    from ..models.loading import load_clip_model

    model, processor = load_clip_model(model_id)
    model.requires_grad_(False).to(torch.device(device))
    return ClipScorer(model=model, processor=processor, model_id=model_id, batch_size=batch_size)


def clip_text_score(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> float:
    """Mean over frames of cosine(frame embedding, prompt embedding); ``text_embed`` is (D,) or (1, D)."""
    return F.cosine_similarity(image_embeds, text_embed.reshape(1, -1), dim=-1).mean().item()


def clip_temporal_score(image_embeds: torch.Tensor, mode: str = "consecutive") -> float | None:
    """Mean cosine between frame embeddings: consecutive pairs, or ``all`` pairs i < j; None for one frame."""
    if mode not in TEMPORAL_MODES:
        raise UsageError(f"`temporal` {mode!r} is not one of {', '.join(TEMPORAL_MODES)}")
    if len(image_embeds) < 2:
        return None
    unit = F.normalize(image_embeds, dim=-1)
    if mode == "consecutive":
        return (unit[:-1] * unit[1:]).sum(-1).mean().item()
    i, j = torch.triu_indices(len(unit), len(unit), offset=1)
    return (unit[i] * unit[j]).sum(-1).mean().item()


def _score(item, scorer: ClipScorer, ctx) -> dict:
    embeds = scorer.image_embeds(item.frames)
    text = scorer.text_embeds([item.prompt])[0]
    cosines = F.cosine_similarity(embeds, text.reshape(1, -1), dim=-1)
    mean = cosines.mean().item()
    return {"clip_text": mean, "clip_text_logit": 100.0 * mean, "clip_temporal": clip_temporal_score(embeds, ctx.temporal),
            "per_frame": {"clip_text": cosines.tolist()}}


CLIP = Metric(
    "clip", ("clip_text", "clip_text_logit", "clip_temporal"),
    scales={
        "clip_text": "cosine(frame, prompt) of CLIP embeddings, mean over frames; the paper's Table 2 scale (0.274)",
        "clip_text_logit": "100 x clip_text: V2VBench's and LOVEU-TGVE's CLIP-T scale (27.5 for Tune-A-Video)",
        "clip_temporal": "cosine of CLIP frame embeddings, {temporal} pairs (V2VBench CLIP-F: consecutive)",
    },
    columns={"clip_text": "CLIP-T", "clip_text_logit": "CLIP-T×100", "clip_temporal": "CLIP-F"},
    score=_score, load=lambda ctx: load_clip(ctx.options["clip_model"], ctx.device),
    needs_prompt=True, per_frame=("clip_text",),
)
