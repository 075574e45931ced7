"""Which region each changed word edits, found from the model, not from a word list (issue 27).

A target prompt may change several things at once ("a *blue* circle … on a *white* background").
:func:`change_groups` splits the change into groups, one per changed run of words, each with its
own *partial* prompt: the source prompt with only that group changed. For each group:

1. its **segment** is where its words' cross-attention stands out from the rest of the frame
   (:func:`~.control.contrast`, whichever the sign);
2. its **side** is which way the attention stands out there. A model marks what a word names
   with *more* attention (Stable Diffusion, as Prompt-to-Prompt shows) or with *less* (the
   embedded ``tiny``, measured): ``region_attention`` says which. With "more", a word whose
   attention is higher on its segment edits the segment, one whose attention is lower there
   (it names something else: a background, a scene, the weather) edits the complement; "less"
   reads the same sign the other way round.

Neither reading alone separates them on ``tiny``: the sign flips on gray clips (colour words
stand out up to +0.12 the "rest" way), and DiffEdit's (Couairon et al. 2023) response
|ε(x_t, partial) − ε(x_t, source)| on the inverted source lies mostly inside the segment for some
background edits too (ratio outside/inside 0.11–0.24: the model redraws its object when a
background word changes). Their sum does (:func:`region_side`): measured over 48 tuned runs, 224
groups, object words score ≤ 0.23 and background words ≥ 0.34 (docs: benchmarks, "Which side a
word edits"). Both readings go into ``edits.json``.

:class:`RegionMask` holds the groups' regions and stands in for one :class:`~.control.BlendMask`
where the attention processors and the sampler read a mask: *inside* groups keep accumulating
their maps while sampling (so a new shape's own map widens the mask), *outside* groups are fixed
by the probe. ``outside()`` is the union of the outside regions, which take the background settings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .control import STOPWORDS, BlendMask, BlendWords, content_positions, mask_tokens, word_positions

INSIDE, OUTSIDE = "inside", "outside"


@dataclass
class ChangeGroup:
    """One changed run of words: its mask words, and the source prompt with only it changed."""

    words: BlendWords
    partial_prompt: str
    span: tuple[int, int] = (0, 0)                        # the source words it replaces, [i1, i2)
    replacement: list[str] = field(default_factory=list)  # the target words it puts there
    side: str = INSIDE
    evidence: dict = field(default_factory=dict)


def applied(source_prompt: str, groups: list[ChangeGroup]) -> str:
    """The source prompt with only ``groups``' changes made (the right-most first, so spans hold)."""
    words = source_prompt.split()
    for group in sorted(groups, key=lambda g: g.span[0], reverse=True):
        words[group.span[0]:group.span[1]] = group.replacement
    return " ".join(words)


def change_groups(tokenizer, source_prompt: str, target_prompt: str, source_ids, target_ids) -> list[ChangeGroup]:
    """Word-level difference of the prompts, one group per replaced / inserted / deleted run that
    holds a content word (stopwords and special tokens never make a mask)."""
    src, tgt = source_prompt.split(), target_prompt.split()
    groups = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, src, tgt, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        s = content_positions(tokenizer, source_ids, [p for w in src[i1:i2] for p in word_positions(tokenizer, source_ids, w)])
        t = content_positions(tokenizer, target_ids, [p for w in tgt[j1:j2] for p in word_positions(tokenizer, target_ids, w)])
        if s or t:
            groups.append(ChangeGroup(BlendWords(sorted(set(s)), sorted(set(t))), " ".join(src[:i1] + tgt[j1:j2] + src[i2:]),
                                      (i1, i2), tgt[j1:j2]))
    return groups


# The response outside the segment over the response inside it (DiffEdit's |Δε|) adds to the
# attention's reading, at half weight: a change of what the segment shows moves ε mostly inside it
# (colour ≤ 0.22, shape ≤ 0.34), a change of the rest of the frame 0.11–1.8 times as much outside.
# With the attention's signed standing-out (+: it names the rest) the sum is ≤ 0.23 for object
# words and ≥ 0.34 for background words on tiny's 24 benchmark clips, both arms; OUTSIDE_SCORE is
# the middle, checked on 12 held-out clips (BENCHMARKS.md, "Which side a word edits").
RESPONSE_WEIGHT = 0.5
OUTSIDE_SCORE = 0.29


def region_side(segment: torch.Tensor, deviation: torch.Tensor, polarity: str = "more",
                response: torch.Tensor | None = None) -> tuple[str, dict]:
    """The side a group edits, from the mean signed attention ``deviation`` inside its ``segment``
    (both F, 1, h, w; the segment in {0, 1}) and the model's ``polarity``, plus the response
    ratio when ``response`` is given. An empty or full segment: INSIDE. The evidence: that mean,
    the response inside and outside, and the score the side is read from."""
    inside, outside = segment.sum(), (1 - segment).sum()
    if inside == 0 or outside == 0:
        return INSIDE, {}
    standing_out = float((deviation * segment).sum() / inside)
    evidence = {"attention_inside": standing_out}
    names_rest = standing_out if polarity == "less" else -standing_out  # +: the word names the rest of the frame
    if response is None:
        return (OUTSIDE if names_rest > 0 else INSIDE), evidence
    evidence["response_inside"] = float((response * segment).sum() / inside)
    evidence["response_outside"] = float((response * (1 - segment)).sum() / outside)
    ratio = evidence["response_outside"] / max(evidence["response_inside"], 1e-12)
    evidence["response_ratio"] = ratio
    evidence["outside_score"] = names_rest + RESPONSE_WEIGHT * ratio
    return (OUTSIDE if evidence["outside_score"] >= OUTSIDE_SCORE else INSIDE), evidence


# A source word sides with the rest of the frame when its attention's score (below) has the changed
# background words' sign and at least this share of their size: on tiny's 24 benchmark clips the
# object's words take the other sign, motion words a third of the size or less (issue 27).
BACKGROUND_WORD_SHARE = 0.25


def word_score(deviation: torch.Tensor, outside: torch.Tensor) -> float:
    """How a word's signed attention ``deviation`` (F, 1, h, w) stands out on the ``outside`` region
    (in {0, 1}) against the rest: the mean there minus the mean on the kept object."""
    kept = 1 - outside
    return float((deviation * outside).sum() / outside.sum().clamp(min=1) - (deviation * kept).sum() / kept.sum().clamp(min=1))


def background_prompts(source_prompt: str, groups: list[ChangeGroup], scores: dict[int, float]) -> tuple[str, str] | None:
    """The prompts of a background edit's pass: the changed groups' new words and the unchanged
    source words that side with the rest of the frame (``scores``: source word index → :func:`word_score`,
    content words only), in order, after "a"; and the same with the groups' old words, the
    source's counterpart, which the pass's guidance starts from. The kept object's words are left
    out of both: asked for its object the tuned model draws it a second time from fresh noise, and
    guided away from the whole source prompt it draws the object's complement beside it
    (measured: a yellow smear by a kept blue circle). None when the changed words have no source
    words to compare with (an insertion)."""
    changed = {j for g in groups for j in range(*g.span)}
    reference = sum(scores.get(j, 0.0) for j in changed)
    if reference == 0:
        return None
    starts = {g.span[0]: g for g in groups}
    source_words, new, old = source_prompt.split(), [], []
    for j, word in enumerate([*source_words, None]):  # None: after the last word, where an insertion may go
        if j in starts:
            new += starts[j].replacement
            old += source_words[starts[j].span[0]:starts[j].span[1]]
        if word is not None and j not in changed and j in scores and scores[j] * reference > 0 \
                and abs(scores[j]) >= BACKGROUND_WORD_SHARE * abs(reference):
            new.append(word)
            old.append(word)
    if not new or not old:
        return None
    phrase = lambda words: " ".join(words if words[0].lower() in STOPWORDS else ["a", *words])  # noqa: E731
    return phrase(new), phrase(old)


def response_map(eps_partial: torch.Tensor, eps_source: torch.Tensor) -> torch.Tensor:
    """|Δε| averaged over channels: (F, 1, h, w)."""
    return (eps_partial.float() - eps_source.float()).abs().mean(1, keepdim=True)


class RegionMask:
    """The union of the groups' regions, read like a :class:`BlendMask` (``add``, ``begin_step``,
    ``tokens``, ``mask``), and the union of the OUTSIDE regions (``outside``)."""

    def __init__(self, masks: list[BlendMask], sides: list[str], fixed: list[torch.Tensor | None]):
        self.masks, self.sides, self.fixed = masks, sides, fixed
        self.latent_hw = masks[0].latent_hw
        self._frozen: torch.Tensor | None = None

    @property
    def from_attention(self) -> bool:
        return any(f is None for f in self.fixed)

    @property
    def words(self) -> BlendWords:  # every group's words: what edits.json lists
        return BlendWords([p for m in self.masks for p in m.words.source], [p for m in self.masks for p in m.words.target],
                          invert=bool(self.sides) and all(s == OUTSIDE for s in self.sides))

    @property
    def user_mask(self):
        return None

    @property
    def mixed(self) -> bool:
        """Some groups edit their objects and others the rest of the frame (colour + background)."""
        return len(set(self.sides)) > 1

    def add(self, source_probs, target_probs, frames: int) -> None:
        for m, f in zip(self.masks, self.fixed):
            if f is None:
                m.add(source_probs, target_probs, frames)

    def begin_step(self) -> None:
        self._frozen = self.mask()

    def _regions(self, side: str | None = None) -> list[torch.Tensor]:
        out = []
        for m, s, f in zip(self.masks, self.sides, self.fixed):
            if side is not None and s != side:
                continue
            region = f if f is not None else m.mask()
            if region is not None:
                out.append(region)
        return out

    def mask(self) -> torch.Tensor | None:
        """(F, 1, h, w) in {0, 1}: 1 where some group may change things."""
        regions = self._regions()
        return torch.stack(regions).amax(0) if regions else None

    def outside(self) -> torch.Tensor | None:
        """The union of the OUTSIDE groups' regions (None: no group edits a complement)."""
        regions = self._regions(OUTSIDE)
        return torch.stack(regions).amax(0) if regions else None

    def tokens(self, n: int) -> torch.Tensor | None:
        return mask_tokens(self._frozen, self.latent_hw, n)


class CorePinned:
    """A background edit's :class:`RegionMask` as its sampling reads it: the edited region grown by
    one latent cell into the kept object, so only the object's core follows the source. Pinning
    all of it keeps the old background's colour in its rim, which the model reads and spreads
    (measured: gray drawn as black); the object's pixels are composited from the source afterwards."""

    def __init__(self, regions: RegionMask):
        self.regions = regions
        self._frozen: torch.Tensor | None = None

    def __getattr__(self, name):
        return getattr(self.regions, name)

    def mask(self) -> torch.Tensor | None:
        m = self.regions.mask()
        return None if m is None else F.max_pool2d(m, 3, stride=1, padding=1)

    # RegionMask's own, reading this mask (they use only mask(), _frozen and latent_hw)
    begin_step = RegionMask.begin_step
    tokens = RegionMask.tokens


class ShrinkingPin(CorePinned):
    """Blended Latent Diffusion's progressive mask shrinking (Avrahami et al. 2023) for a background
    edit: the steps fall in ``cells`` + 1 equal stages, and in stage s the edited region is grown by
    ``cells`` − s latent cells into the kept object (in the last, all of the object follows the source)."""

    def __init__(self, regions: RegionMask, steps: int, cells: int = 2):
        super().__init__(regions)
        self.steps, self.cells, self.step = steps, cells, -1  # begin_step counts from 0

    def grown_by(self) -> int:
        return self.cells - max(self.step, 0) * (self.cells + 1) // self.steps

    def mask(self) -> torch.Tensor | None:
        m, k = self.regions.mask(), self.grown_by()
        return m if m is None or k == 0 else F.max_pool2d(m, 2 * k + 1, stride=1, padding=k)

    def begin_step(self) -> None:  # once at the start of each sampling step
        self.step += 1
        RegionMask.begin_step(self)
