"""What an edit does differently where its changed words edit the rest of the frame (issue 27):
direct inversion's offsets per region, the fresh noise a new background is drawn from, and where
the adapter's bias acts."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def renoised(x_T: torch.Tensor, region: torch.Tensor, share: float, seed: int = 0) -> torch.Tensor:
    """x_T with fresh noise mixed into ``region`` (F, 1, h, w): √(1−λ)·x_T + √λ·ε, variance kept.
    One ε for every frame (seeded: edits stay deterministic), so a new background is one background."""
    if share <= 0:
        return x_T
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x_T.shape[1:], generator=generator).to(x_T.device, x_T.dtype).expand_as(x_T)
    mixed = (1 - share) ** 0.5 * x_T + share ** 0.5 * noise
    return region * mixed + (1 - region) * x_T


def kept_only(context, outside: torch.Tensor):
    """The adapter's bias r_φ (a ``Context``) zeroed where the background is redrawn (``outside``,
    F × 1 × h × w). Trained on the clip's own frames, r_φ pulls the redrawn region back toward the
    clip, its object included (measured: ghosts beside the kept object)."""
    if context is None:
        return None
    kept = 1 - outside  # once, not at every step
    return lambda x0_hat, t: context(x0_hat, t) * kept.to(x0_hat.dtype)


@dataclass
class RegionalOffsets:
    """Direct inversion's offsets per region: OUTSIDE regions get ``share_out`` of the offset at
    their guidance; the rest the offset at the prompt's guidance, ``offset_inside`` of it where an
    INSIDE group edits (``mask``)."""

    inner: list | None
    outer: list | None
    outside: torch.Tensor
    offset_inside: float
    share_out: float | None

    def at(self, i: int, mask: torch.Tensor | None) -> torch.Tensor:
        share_out = self.share_out if self.share_out is not None else self.offset_inside
        rest = 1 - self.outside
        if mask is not None:
            rest = rest * (1 - mask * (1 - self.offset_inside))
        return rest * self.inner[i] + self.outside * share_out * self.outer[i]
