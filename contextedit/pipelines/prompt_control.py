"""Per-prompt attention control for ``edit``: the token alignment (word swap, refine, reweight)
and the blend mask, built from the options and the two prompts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention.control import BlendMask, BlendWords, PromptEdit, choose_blend_words, prompt_edit, word_positions
from ..errors import InputError
from .common import token_ids
from .edit_options import EditSettings, parse_reweight

@dataclass
class PromptControl:
    edit: PromptEdit | None = None
    blend: BlendMask | None = None

    @property
    def reweights(self) -> bool:
        return self.edit is not None and self.edit.reweights

    @property
    def background(self) -> bool:
        """A background edit: the blend mask is the object's, inverted."""
        return self.blend is not None and self.blend.words.invert and self.blend.user_mask is None

    def setting(self, opts: EditSettings, name: str):
        """``opts.<name>``, or ``opts.background_<name>`` when set and this is a background edit."""
        special = getattr(opts, f"background_{name}")
        return special if self.background and special is not None else getattr(opts, name)

    def local_blend(self, setting: str) -> bool:
        """LocalBlend on this prompt? ``auto``: for object and attribute edits, not for background
        edits — on the embedded model, source latents kept around the object of a recoloured
        background leave a ring of the old background that the edit cannot repair (measured)."""
        if self.blend is None or setting == "off":
            return False
        return setting == "on" or not self.blend.words.invert

    def describe(self, tokenizer=None, source_ids=None) -> dict:
        """What edits.json says about this prompt's control."""
        out = {}
        if self.edit is not None:
            out["swapped_tokens"], out["new_tokens"] = len(self.edit.swapped), len(self.edit.new)
        if self.blend is not None:
            out["mask"] = "user" if self.blend.user_mask is not None else "attention"
            out["mask_inverted"] = self.blend.words.invert
            if tokenizer is not None and source_ids is not None and self.blend.words.source:
                out["blend_source_words"] = tokenizer.convert_ids_to_tokens([int(source_ids[p]) for p in self.blend.words.source])
        return out


def prompt_control(tokenizer, source_ids, prompt: str, opts: EditSettings, latent_hw: tuple[int, int],
                   user_mask: torch.Tensor | None = None) -> PromptControl:
    """The alignment of ``prompt`` to the source and its blend mask (None where nothing changed)."""
    target_ids = token_ids(tokenizer, [prompt])[0]
    reweight = {}
    for word, scale in parse_reweight(opts.reweight).items():
        positions = word_positions(tokenizer, target_ids, word)
        if not positions:
            raise InputError(f"`reweight` {word}={scale}: {word!r} is not in the target prompt {prompt!r}; "
                             "name a word of the prompt")
        reweight.update({p: scale for p in positions})
    edit = prompt_edit(source_ids, target_ids, reweight, opts.new_word_weight)
    blend = None
    if user_mask is not None:
        blend = BlendMask(BlendWords([], []), latent_hw, user_mask=fit_mask(user_mask, latent_hw))
    elif opts.blend or opts.blend_words:
        words = choose_blend_words(tokenizer, source_ids, target_ids, edit, opts.blend_words)
        if words is not None and (words.source or words.target):
            blend = BlendMask(words, latent_hw, threshold=opts.blend_threshold)
        elif opts.blend_words:
            raise InputError(f"`blend_words` {', '.join(opts.blend_words)}: none is in the source or the target "
                             "prompt; name words of the prompts")
    return PromptControl(edit=edit, blend=blend)


def read_mask(path: str, frames: int) -> torch.Tensor:
    """``--mask`` as (F, 1, H, W) in {0, 1} at the image's own size (resized to the latents when used);
    :func:`contextedit.video.read_mask_frames` reads it."""
    from ..video import read_mask_frames

    return torch.from_numpy(read_mask_frames(path, frames)).float().unsqueeze(1)


def fit_mask(mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A pixel mask at the latent resolution: the share of masked pixels per latent cell, > ½."""
    return (F.adaptive_avg_pool2d(mask, latent_hw) > 0.5).float()
