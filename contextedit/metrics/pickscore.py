"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on human preferences, as V2VBench and
LOVEU-TGVE report it.

Per frame, ``exp(logit_scale) · cosine(image, prompt)`` of PickScore_v1's own embeddings (its
learned scale is about 100, so published values sit near 20–22); a clip's score is the mean over
its frames. It runs through transformers' CLIPModel, so :class:`~.clip.ClipScorer` serves it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import ClipScorer
from .metric import Metric

from ..defaults import DEFAULT_PICKSCORE_MODEL  # noqa: E402,F401 — declared there


def load_pickscore(model_id: str = DEFAULT_PICKSCORE_MODEL, device: str | torch.device = "cpu", batch_size: int = 16) -> ClipScorer:
    """PickScore from a hub id, a local folder (safetensors only) or ``tiny``."""
    from ..models.loading import load_pickscore_model

    model, processor = load_pickscore_model(model_id)
    model.requires_grad_(False).to(torch.device(device))
    return ClipScorer(model=model, processor=processor, model_id=model_id, batch_size=batch_size)


def pickscore_per_frame(scorer: ClipScorer, image_embeds: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """(F,) PickScore of each frame: the model's exp(logit_scale) times the cosine with the prompt."""
    scale = scorer.model.logit_scale.detach().float().exp().cpu()
    return scale * F.cosine_similarity(image_embeds, text_embed.reshape(1, -1), dim=-1)


def _score(item, scorer: ClipScorer, ctx) -> dict:
    embeds = scorer.image_embeds(item.frames)
    scores = pickscore_per_frame(scorer, embeds, scorer.text_embeds([item.prompt])[0])
    return {"pickscore": scores.mean().item(), "per_frame": {"pickscore": scores.tolist()}}


PICKSCORE = Metric(
    "pickscore", ("pickscore",),
    scales={"pickscore": "PickScore_v1: exp(logit_scale) x cosine(frame, prompt), about 100 x cosine; mean over frames"},
    columns={"pickscore": "PickScore"},
    score=_score, load=lambda ctx: load_pickscore(ctx.options["pickscore_model"], ctx.device),
    needs_prompt=True, per_frame=("pickscore",),
)
