"""Per-prompt attention control for ``edit``: the token alignment (word swap, refine, reweight)
and the regions the changed words edit (:mod:`contextedit.attention.regions`), built from the
options, the two prompts and, for the regions' sides, one probe of the model on the inverted source."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention.control import BlendMask, BlendWords, PromptEdit, content_positions, prompt_edit, word_positions
from ..attention.fusion import FusionPlan
from ..attention.regions import (OUTSIDE, ChangeGroup, RegionMask, background_prompts, change_groups, region_side,
                                 response_map, word_score)
from ..errors import InputError
from .common import token_ids
from .edit_options import EditSettings, parse_reweight

PROBE_LEVELS = (0.0, 0.1, 0.2)  # sampling steps (fractions of T), the noisy end, where the probe reads maps and responses


@dataclass
class PromptControl:
    edit: PromptEdit | None = None
    blend: BlendMask | RegionMask | None = None
    groups: list[ChangeGroup] | None = None   # the changed words, before their regions are assigned
    source_prompt: str | None = None
    word_tokens: dict[int, list[int]] | None = None  # source word index → its content tokens' positions
    background_prompt: str | None = None      # a background edit's pass prompt (regions.background_prompts)…
    background_source: str | None = None      # …and its source counterpart, the negative of that pass
    aligned: bool = True                       # the sampled text is the prompt ``edit`` aligns (False: no word swap)

    @property
    def reweights(self) -> bool:
        return self.edit is not None and self.edit.reweights

    @property
    def outside(self) -> torch.Tensor | None:
        """Where OUTSIDE groups edit (F, 1, h, w), which take the background settings; None: nowhere."""
        return self.blend.outside() if isinstance(self.blend, RegionMask) else None

    @property
    def background(self) -> bool:
        """Every changed word edits the complement of its object: a background edit."""
        return isinstance(self.blend, RegionMask) and self.blend.words.invert

    def setting(self, opts: EditSettings, name: str):
        """``opts.<name>``, or ``opts.background_<name>`` when set and this is a background edit."""
        special = getattr(opts, f"background_{name}")
        return special if self.background and special is not None else getattr(opts, name)

    def local_blend(self, setting: str) -> bool:
        """LocalBlend on this prompt? ``auto``: whenever there is a mask — for a background edit the
        kept region is the object's own segment, not grown, and the seam is healed in pixel space."""
        return self.blend is not None and setting != "off"

    def describe(self, tokenizer=None, source_ids=None) -> dict:
        """What edits.json says about this prompt's control."""
        out = {}
        if self.edit is not None:
            out["swapped_tokens"], out["new_tokens"] = len(self.edit.swapped), len(self.edit.new)
        if self.blend is not None:
            out["mask"] = "user" if self.blend.user_mask is not None else "attention"
            out["mask_inverted"] = self.blend.words.invert
            if isinstance(self.blend, RegionMask):
                out["regions"] = [{"words": g.partial_prompt, "side": g.side, **g.evidence} for g in self.groups or []]
                if self.background_prompt is not None:
                    out["background_prompt"], out["background_source"] = self.background_prompt, self.background_source
            if tokenizer is not None and source_ids is not None and self.blend.words.source:
                out["blend_source_words"] = tokenizer.convert_ids_to_tokens([int(source_ids[p]) for p in self.blend.words.source])
        return out


def prompt_control(tokenizer, source_ids, prompt: str, opts: EditSettings, latent_hw: tuple[int, int],
                   user_mask: torch.Tensor | None = None, source_prompt: str | None = None,
                   strict: bool = True) -> PromptControl:
    """The alignment of ``prompt`` to the source and its mask: the user's, the ``blend_words``', or
    the changed words' groups, whose regions :func:`assign_regions` decides (None where nothing changed).
    ``strict=False`` (one side's pass of a prompt): a reweighted word the pass lacks is skipped."""
    target_ids = token_ids(tokenizer, [prompt])[0]
    reweight = {}
    for word, scale in parse_reweight(opts.reweight).items():
        positions = word_positions(tokenizer, target_ids, word)
        if not positions and strict:
            raise InputError(f"`reweight` {word}={scale}: {word!r} is not in the target prompt {prompt!r}; "
                             "name a word of the prompt")
        reweight.update({p: scale for p in positions})
    edit = prompt_edit(source_ids, target_ids, reweight, opts.new_word_weight)
    blend, groups = None, None
    if user_mask is not None:
        blend = BlendMask(BlendWords([], []), latent_hw, user_mask=fit_mask(user_mask, latent_hw))
    elif opts.blend_words:
        words = BlendWords([p for w in opts.blend_words for p in word_positions(tokenizer, source_ids, w)],
                           [p for w in opts.blend_words for p in word_positions(tokenizer, target_ids, w)])
        if not (words.source or words.target):
            raise InputError(f"`blend_words` {', '.join(opts.blend_words)}: none is in the source or the target "
                             "prompt; name words of the prompts")
        blend = BlendMask(words, latent_hw, threshold=opts.blend_threshold)
    elif opts.blend and source_prompt is not None:
        groups = change_groups(tokenizer, source_prompt, prompt, source_ids, target_ids) or None
    word_tokens = None
    if groups:
        word_tokens = {j: content_positions(tokenizer, source_ids, word_positions(tokenizer, source_ids, w))
                       for j, w in enumerate(source_prompt.split())}
        word_tokens = {j: ps for j, ps in word_tokens.items() if ps}
    return PromptControl(edit=edit, blend=blend, groups=groups, source_prompt=source_prompt, word_tokens=word_tokens)


@torch.no_grad()
def assign_regions(control: PromptControl, unet, scheduler, source, src_text, encode, opts: EditSettings,
                   frames: int) -> PromptControl:
    """Each change group's segment and side from a probe on the inverted source (module docstring of
    :mod:`contextedit.attention.regions`), then one :class:`RegionMask` for the prompt."""
    from .loop import Denoiser
    from .source_branch import source_attention

    if not control.groups:
        return control
    latent_hw = tuple(source.x_T.shape[-2:])
    steps = len(scheduler.timesteps)
    # the first probe also keeps each source word's own attention, which words a background pass keeps
    track = sorted({p for ps in (control.word_tokens or {}).values() for p in ps})
    probes = [BlendMask(g.words, latent_hw, threshold=opts.blend_threshold, track=track if k == 0 else ())
              for k, g in enumerate(control.groups)]
    denoisers = [Denoiser(unet, encode([g.partial_prompt]), src_text, guidance=2.0, num_frames=frames) for g in control.groups]
    responses = [0.0] * len(probes)
    # At few steps the fractions fall on one step: it is read once (the maps are averaged and only
    # the response's inside/outside ratio is used, so a repeated read would change nothing).
    for i in sorted({min(steps - 1, int(frac * steps)) for frac in PROBE_LEVELS}):
        t, x = scheduler.timesteps[i], source.levels[len(source.levels) - 1 - i]
        for k, denoiser in enumerate(denoisers):
            plan = FusionPlan(self_attention=False, cross_attention=False, blend=probes[k], guided=True)
            with source_attention(unet, source, i, plan):
                eps_source, eps_partial = denoiser.halves(x, t)
            responses[k] = responses[k] + response_map(eps_partial, eps_source)
    masks, sides, fixed = [], [], []
    for group, probe, response in zip(control.groups, probes, responses):
        segment = probe.segment()
        if segment is not None:
            group.side, group.evidence = region_side(segment, probe.deviation(), opts.region_attention, response)
        masks.append(BlendMask(group.words, latent_hw, threshold=opts.blend_threshold))
        sides.append(group.side)
        # an OUTSIDE group edits the complement of its segment: the object is kept, neither grown nor shrunk
        fixed.append(1 - segment if group.side == OUTSIDE else None)
    control.blend = RegionMask(masks, sides, fixed)
    outside = control.blend.outside()
    if outside is not None and not control.blend.mixed and control.source_prompt is not None:
        scores = {}
        for j, positions in (control.word_tokens or {}).items():
            maps = [probes[0].token_deviation(p) for p in positions]
            if all(m is not None for m in maps):
                scores[j] = sum(word_score(m, outside) for m in maps) / len(maps)
        prompts = background_prompts(control.source_prompt, control.groups, scores)
        if prompts is not None:
            control.background_prompt, control.background_source = prompts
    return control


def read_mask(path: str, frames: int) -> torch.Tensor:
    """``--mask`` as (F, 1, H, W) in {0, 1} at the image's own size (resized to the latents when used);
    :func:`contextedit.video.read_mask_frames` reads it."""
    from ..video import read_mask_frames

    return torch.from_numpy(read_mask_frames(path, frames)).float().unsqueeze(1)


def fit_mask(mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A pixel mask at the latent resolution: the share of masked pixels per latent cell, > ½."""
    return (F.adaptive_avg_pool2d(mask, latent_hw) > 0.5).float()
