"""Clips of any length in windows of W frames (docs/concepts/design.md §5.8).

Every window starts with frame 0, the shared anchor: its sparse-causal attention (frame i sees
frame 0 and frame i−1) then looks at the same first frame in every window, which ties the
windows' appearance together. After the anchor, window k holds W−1 consecutive frames; windows
overlap by ``overlap`` frames, and the overlapping latents are blended with linear ramps.
Memory follows W, not the clip's length: one window is inverted and sampled at a time.
"""

from __future__ import annotations

import torch

from ..errors import UsageError


def check_window(window: int, overlap: int) -> None:
    if window < 2:
        raise UsageError(f"`window` must be at least 2 frames (got {window})")
    if not 0 <= overlap < window - 1:
        raise UsageError(f"`overlap` must be from 0 to `window` − 2 = {window - 2} (got {overlap})")


def window_plan(frames: int, window: int, overlap: int) -> list[list[int]]:
    """Frame indices of each window: [0..W−1], then [0, s..s+W−2] with s advancing by
    W−1−overlap, the last one ending on the last frame. One window when the clip fits."""
    check_window(window, overlap)
    if frames <= window:
        return [list(range(frames))]
    plans, start, step = [list(range(window))], 1, window - 1 - overlap
    while start + window - 2 < frames - 1:
        start = min(start + step, frames - window + 1)
        plans.append([0, *range(start, start + window - 1)])
    return plans


def blend_weights(plan: list[list[int]], overlap: int) -> list[torch.Tensor]:
    """Per window, one weight per frame it owns (the anchor only in window 0): ramps of
    ``overlap`` + 1 steps up where it starts inside the previous window and down where the next
    one starts, so that normalised sums cross-fade the overlaps."""
    weights = []
    for k, idx in enumerate(plan):
        own = idx if k == 0 else idx[1:]
        n = len(own)
        w = torch.ones(n)
        for p in range(n):
            if k > 0:
                w[p] *= min(1.0, (p + 1) / (overlap + 1))
            if k < len(plan) - 1:
                w[p] *= min(1.0, (n - p) / (overlap + 1))
        weights.append(w)
    return weights


def training_window(frames: int, window: int, generator: torch.Generator) -> list[int]:
    """One window for a tuning step, drawn from the step's generator: the anchor and W−1
    consecutive frames (the first window is [0..W−1])."""
    if frames <= window:
        return list(range(frames))
    start = int(torch.randint(1, frames - window + 2, (1,), generator=generator))
    return [0, *range(start, start + window - 1)]


class WindowBlender:
    """Sums each window's latents into the whole clip with :func:`blend_weights`, on the CPU."""

    def __init__(self, plan: list[list[int]], overlap: int, like: torch.Tensor):
        self.plan, self.weights = plan, blend_weights(plan, overlap)
        frames = 1 + max(max(idx) for idx in plan)
        self.total = torch.zeros((frames, *like.shape[1:]), dtype=torch.float32)
        self.norm = torch.zeros(frames)

    def add(self, k: int, latents: torch.Tensor) -> None:
        idx = self.plan[k] if k == 0 else self.plan[k][1:]
        latents = latents.float().cpu()
        part = latents if k == 0 else latents[1:]
        w = self.weights[k]
        self.total[idx] += part * w.view(-1, *([1] * (part.ndim - 1)))
        self.norm[idx] += w

    def result(self) -> torch.Tensor:
        return self.total / self.norm.view(-1, *([1] * (self.total.ndim - 1)))
