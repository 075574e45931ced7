"""Prompt-to-Prompt attention control on the target prompt (docs/concepts/design.md §5.6).

:class:`PromptEdit` says, token by token, how the target prompt relates to the source one:

- *same* tokens keep the source's cross-attention map (Prompt-to-Prompt's refine);
- *swapped* tokens — a replacement of the same token count at the same place ("red" → "blue")
  — inherit the map of the source token they replace (word swap);
- *new* tokens (insertions, or replacements of another length) keep their own map;
- every target column can be reweighted (``--reweight WORD=SCALE``).

:class:`BlendMask` turns the cross-attention of some words into a mask, FateZero's MaskBlend
(inside: the target's own self-attention, outside: the source's) and Prompt-to-Prompt's
LocalBlend (latents outside the mask follow the source trajectory). Which words, and whether a
word edits its object or the rest of the frame, is :mod:`.regions`' job.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

# Function words never make a mask: their attention is spread over the whole frame.
STOPWORDS = frozenset("a an the of on in at to and with is are moving".split())


@dataclass
class PromptEdit:
    """Target token t takes source column ``mapping[t]`` (−1: its own), then × ``weights[t]``."""

    mapping: torch.Tensor                               # (L,) long
    weights: torch.Tensor                               # (L,) float
    swapped: list[int] = field(default_factory=list)    # target positions (word swap)
    new: list[int] = field(default_factory=list)        # target positions with no source token
    source_changed: list[int] = field(default_factory=list)  # source positions replaced or deleted

    def __post_init__(self):
        self.reweights = bool((self.weights != 1).any())  # read in every cross-attention layer: once

    def apply(self, source_probs: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
        """Fused cross-attention probabilities (…, queries, tokens): mapped source columns, own
        columns where unmapped, then reweighted."""
        tokens = target_probs.shape[-1]
        mapping = _fit(self.mapping, tokens, -1).to(target_probs.device)
        mapping[mapping >= source_probs.shape[-1]] = -1
        taken = source_probs.index_select(-1, mapping.clamp(min=0))
        fused = torch.where(mapping >= 0, taken, target_probs)
        return self.reweight(fused)

    def reweight(self, probs: torch.Tensor) -> torch.Tensor:
        if not self.reweights:
            return probs
        return probs * _fit(self.weights, probs.shape[-1], 1.0).to(probs.device, probs.dtype)


def _fit(x: torch.Tensor, n: int, fill) -> torch.Tensor:
    out = torch.full((n,), fill, dtype=x.dtype)
    m = min(n, len(x))
    out[:m] = x[:m]
    return out


def prompt_edit(source_ids: Sequence[int], target_ids: Sequence[int], reweight: dict[int, float] | None = None,
                new_word_weight: float = 1.0) -> PromptEdit:
    """Align the target token ids to the source's with difflib (BOS maps to BOS; the EOS/padding
    run matches as one block, as Prompt-to-Prompt's mapper does).

    ``reweight`` maps target positions to scales; ``new_word_weight`` scales swapped and new
    tokens that ``reweight`` does not name.
    """
    source, target = [int(i) for i in source_ids], [int(i) for i in target_ids]
    mapping = [-1] * len(target)
    swapped, new, source_changed = [], [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, source, target, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            for offset in range(j2 - j1):
                mapping[j1 + offset] = i1 + offset
            if op == "replace":
                swapped += range(j1, j2)
        else:
            new += range(j1, j2)
        if op in ("replace", "delete"):
            source_changed += range(i1, i2)
    if source and target:
        mapping[0] = 0
    weights = torch.ones(len(target))
    for j in (*swapped, *new):
        weights[j] = new_word_weight
    for j, scale in (reweight or {}).items():
        weights[j] = scale
    return PromptEdit(torch.tensor(mapping, dtype=torch.long), weights, swapped, new, source_changed)


def word_positions(tokenizer, ids: Sequence[int], word: str) -> list[int]:
    """Positions of ``word``'s tokens in ``ids`` (every occurrence); [] when it is not there."""
    pieces = tokenizer(word, add_special_tokens=False).input_ids
    ids = [int(i) for i in ids]
    found = []
    for start in range(len(ids) - len(pieces) + 1):
        if pieces and ids[start:start + len(pieces)] == pieces:
            found += range(start, start + len(pieces))
    return found


def _words(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token id as its lower-case word (CLIP's end-of-word mark dropped)."""
    return [w.replace("</w>", "").lower() for w in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]


def content_positions(tokenizer, ids: Sequence[int], positions: Sequence[int]) -> list[int]:
    """``positions`` without special tokens, stopwords and padding."""
    special, words = set(tokenizer.all_special_ids), _words(tokenizer, ids)
    return [p for p in positions if int(ids[p]) not in special and words[p] not in STOPWORDS]


@dataclass
class BlendWords:
    """Which columns make the mask: source and target token positions, and whether to invert."""

    source: list[int]
    target: list[int]
    invert: bool = False


def deviation(m: torch.Tensor) -> torch.Tensor:
    """(m − median) / max |m − median| per frame (F, N): :func:`contrast` with its sign kept."""
    dev = m - m.median(dim=-1, keepdim=True).values
    return dev / dev.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)


def contrast(m: torch.Tensor) -> torch.Tensor:
    """|m − median| / max per frame (F, N): where a word's attention stands out from the rest of the
    frame, whichever its sign. Stable Diffusion attends to a word *more* on its object; the embedded
    model attends to it *less* there (measured on the shapes world); both give the object."""
    dev = (m - m.median(dim=-1, keepdim=True).values).abs()
    return dev / dev.amax(dim=-1, keepdim=True).clamp(min=1e-12)


class BlendMask:
    """Cross-attention maps of the blend words, accumulated over layers and steps → a binary mask
    at latent resolution (Prompt-to-Prompt's LocalBlend: max-pool 3×3, threshold after per-frame
    normalisation, here min–max), each layer's map taken as its :func:`contrast`.
    """

    def __init__(self, words: BlendWords, latent_hw: tuple[int, int], threshold: float = 0.5,
                 user_mask: torch.Tensor | None = None, track: Sequence[int] = ()):
        self.words, self.latent_hw, self.threshold = words, latent_hw, threshold
        self.user_mask = user_mask        # (F, 1, h, w) in [0, 1]: replaces the attention mask
        self.track = list(track)          # source positions whose own signed deviation is kept (token_deviation)
        self._tracked: dict[int, torch.Tensor] = {}
        self._sum: torch.Tensor | None = None
        self._signed: torch.Tensor | None = None  # the signed deviation, summed like _sum: which way the word stands out
        self._count = 0
        self._frozen: torch.Tensor | None = None

    def begin_step(self) -> None:
        """Freeze the mask the self-attention blends with during this step (maps still accumulate)."""
        self._frozen = self.mask()

    @property
    def from_attention(self) -> bool:
        """Built from cross-attention maps (every layer adds its own), not given by the user."""
        return self.user_mask is None

    def add(self, source_probs: torch.Tensor | None, target_probs: torch.Tensor | None, frames: int) -> None:
        """Add one layer's maps: probabilities (F, heads, N, L) of the source and the target pass."""
        maps = []
        for probs, cols in ((source_probs, self.words.source), (target_probs, self.words.target)):
            if probs is not None and cols:
                maps.append(probs[..., cols].float().sum(-1).mean(1))  # (F, N)
        if not maps:
            return
        m = torch.stack([contrast(x) for x in maps]).amax(0)[-frames:]
        self._add(self._to_latent(m))
        signed = torch.stack([deviation(x) for x in maps]).mean(0)[-frames:]
        self._signed = self._to_latent(signed) + (0 if self._signed is None else self._signed)
        if source_probs is not None:
            for p in self.track:
                dev = self._to_latent(deviation(source_probs[..., p].float().mean(1))[-frames:])
                self._tracked[p] = dev + self._tracked.get(p, 0)

    def token_deviation(self, position: int) -> torch.Tensor | None:
        """A tracked source token's mean signed attention deviation (F, 1, h, w), like :meth:`deviation`."""
        return self._tracked[position] / self._count if position in self._tracked else None

    def _to_latent(self, m: torch.Tensor) -> torch.Tensor:
        h, w = self.latent_hw
        scale = int(round((h * w / m.shape[-1]) ** 0.5))
        m = m.reshape(m.shape[0], 1, h // scale, w // scale)
        return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)

    def _add(self, m: torch.Tensor) -> None:
        self._sum = m if self._sum is None else self._sum + m
        self._count += 1

    def segment(self) -> torch.Tensor | None:
        """(F, 1, h, w) in {0, 1}: where the words' attention stands out (thresholded after per-frame
        min–max normalisation), neither grown nor inverted; None before any map."""
        if self._sum is None:
            return None
        m = self._sum / self._count
        low, high = m.flatten(1).amin(1).view(-1, 1, 1, 1), m.flatten(1).amax(1).view(-1, 1, 1, 1)
        return ((m - low) / (high - low).clamp(min=1e-12) > self.threshold).float()

    def deviation(self) -> torch.Tensor | None:
        """The words' mean signed attention deviation (F, 1, h, w): which way they stand out."""
        return None if self._signed is None else self._signed / self._count

    def mask(self) -> torch.Tensor | None:
        """(F, 1, h, w) in {0, 1}: 1 where the edit may change things."""
        if self.user_mask is not None:
            return self.user_mask
        m = self.segment()
        if m is None:
            return None
        if self.words.invert:  # the object is kept as it is: neither grown nor shrunk
            return 1 - m
        # Grow the edited object by one latent cell, so its new border is not pinned to the source.
        return F.max_pool2d(m, 3, stride=1, padding=1)

    def tokens(self, n: int) -> torch.Tensor | None:
        """This step's mask at a layer's resolution as (F, n, 1), for blending per query token."""
        return mask_tokens(self._frozen, self.latent_hw, n)


def mask_tokens(m: torch.Tensor | None, latent_hw: tuple[int, int], n: int) -> torch.Tensor | None:
    """A latent mask (F, 1, h, w) at a layer of ``n`` tokens per frame, as (F, n, 1)."""
    if m is None:
        return None
    h, w = latent_hw
    scale = int(round((h * w / n) ** 0.5))
    m = F.adaptive_avg_pool2d(m, (h // scale, w // scale)) if scale > 1 else m
    return m.flatten(1).unsqueeze(-1)
