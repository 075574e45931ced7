"""The settings of an edit, declared once (:func:`contextedit.settings.setting`), and their checks.

An unset setting is resolved once (:meth:`EditSettings.resolve`): the explicit value, else the
run's (window, structure control: what the clip was tuned for), else the model's recommendation
(``contextedit.json``, section ``"edit"``), else the built-in default — chosen on the
shapes-world benchmark (docs: benchmarks, "Edit settings sweep"). ``edits.json`` records the
values that ran, by these names. No torch here: the CLI's --help reads these fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

from ..defaults import DEFAULT_DEPTH_MODEL
from ..errors import UsageError
from . import inversion_modes
from ..settings import check_at_least_one, check_choices, check_share, check_types, resolve, setting

POLARITIES = ("more", "less")
SELF_HALVES = ("cond", "both")
LOCAL_BLENDS = ("auto", "on", "off")
COMPOSITES = ("auto", "on", "off")
NEGATIVES = ("source", "words", "empty")
BACKGROUND_PROMPTS = ("words", "full")
NOISE_AREAS = ("frame", "region")
PINS = ("core", "object", "shrink")
BIAS_AREAS = ("object", "frame")
SOURCE_BRANCHES = ("auto", "live", "stored")  # :mod:`.source_branch`
_WINDOW = "a fraction of the T sampling steps, from the noisy end"
# The settings that are a share between 0 and 1, and what the share is of (for their error line).
SHARES = {"self_fusion": _WINDOW, "cross_fusion": _WINDOW, "background_cross_fusion": _WINDOW,
          "blend_stop": _WINDOW,
          "blend_threshold": "a share of the mask's per-frame attention range",
          "offset_inside": "the share of direct inversion's offset the edited region gets",
          "background_offset_inside": "the share of direct inversion's offset a background region gets",
          "background_noise": "the share of fresh noise mixed into x_T in a background region"}
_REGION = "where a changed word edits the rest of the frame (a background edit)"


@dataclass(kw_only=True)
class EditSettings:
    """How an edit samples; an unset (None) setting is resolved by :meth:`resolve`."""

    SECTION: ClassVar[str] = "edit"  # its part of a model's contextedit.json

    steps: int | None = setting("DDIM steps T for inversion and sampling.", 20)
    guidance: float | None = setting("Classifier-free guidance scale.", 7.5)
    inversion: str | None = setting("How inversion holds under guidance.", "direct", choices=inversion_modes.names)
    source: str | None = setting("The source branch: live (in each step's UNet batch, no fusion store), stored "
                                 "(recorded once), auto (stored while it fits in half the free memory).", "auto",
                                 choices=SOURCE_BRANCHES)
    null_text_steps: int | None = setting("Adam iterations per step for --inversion null-text (cached in the run).", 10)
    self_fusion: float | None = setting("Fraction of T, from the noisy end, that fuses the source's self-attention.", 0.5)
    cross_fusion: float | None = setting("Fraction of T that fuses the source's cross-attention (word swap / refine).", 0.5)
    fusion: bool = setting("Attention fusion (--no-fusion: the ablation without it).", flag="--fusion/--no-fusion",
                           value=True, default_text="on")
    self_half: str | None = setting("The guided halves whose self-attention is fused.", "cond", choices=SELF_HALVES)
    fusion_layers: str | None = setting("all | coarse | N: fuse self-attention in layers of at most N tokens per frame "
                                        "(coarse: a quarter of the finest).", "all")
    reweight: list[str] = setting("WORD=SCALE: scale a target word's cross-attention (repeatable).", flag="--reweight",
                                  factory=list)
    new_word_weight: float | None = setting("Cross-attention scale of swapped and inserted words.", 1.0)
    blend: bool | None = setting("Blend mask from the changed words' cross-attention (MaskBlend + LocalBlend).", True,
                                 flag="--blend/--no-blend")
    blend_words: list[str] = setting("Words whose attention makes the mask, instead of the changed words (repeatable).",
                                     flag="--blend-words", factory=list)
    blend_threshold: float | None = setting("Mask threshold on the min-max-normalised attention contrast.", 0.5)
    offset_inside: float | None = setting("Direct inversion: the share of the source branch's offset that the masked "
                                          "(edited) region gets.", 1.0)
    background_guidance: float | None = setting(f"Guidance {_REGION}.", default_text="as --guidance")
    background_offset_inside: float | None = setting(f"--offset-inside {_REGION}.", default_text="as --offset-inside")
    background_cross_fusion: float | None = setting(f"--cross-fusion {_REGION}.", default_text="as --cross-fusion")
    background_noise: float | None = setting(f"Share of fresh noise mixed into the inverted x_T {_REGION}.", 0.5)
    background_negative: str | None = setting(
        f"The negative prompt of the guidance {_REGION}: source (the source prompt), words (with --background-prompt "
        "words: the source's counterpart of the background's words; else as source) or empty.", "source",
        choices=NEGATIVES)
    mixed_background_negative: str | None = setting(
        "The negative of the background pass of a prompt that changes objects and the rest of the frame (a two-change "
        "edit; its objects are drawn by their own pass and pasted over it): source, words or empty.",
        default_text="as --background-negative", choices=NEGATIVES)
    background_prompt: str | None = setting(
        f"The prompt {_REGION}: words (the changed words and the words whose cross-attention sides with them on "
        "the source, the kept object's left out) or full (the whole target prompt).", "words", choices=BACKGROUND_PROMPTS)
    background_bias: str | None = setting(
        "Where the adapter's bias r_φ acts while a background edit samples: object (on the kept object only; off "
        "where the background is redrawn) or frame (everywhere).", "object", choices=BIAS_AREAS)
    background_seed: int | None = setting(
        "Seed of a background edit's fresh noise (--background-noise): another seed, another background.", 0)
    background_noise_area: str | None = setting(
        "Where a background edit's fresh noise goes: frame (one draw over the whole frame, the kept object's too) or "
        "region (the background only).", "frame", choices=NOISE_AREAS)
    background_pin: str | None = setting(
        "What of the kept object follows the source while a background edit samples: core (all but its rim of one "
        "latent cell), object (all of it) or shrink (a core two cells in at the first step, growing to all of it at the "
        "last: progressive mask shrinking); its pixels are composited from the source either way.", "core", choices=PINS)
    local_blend: str | None = setting("Latents outside the mask follow the source (auto: on wherever there is a mask).",
                                      "auto", choices=LOCAL_BLENDS)
    region_attention: str | None = setting(
        "The model marks what a word names with more (Stable Diffusion) or less cross-attention; decides whether a "
        "changed word edits its object or the rest of the frame.", "more", choices=POLARITIES)
    blend_stop: float | None = setting("LocalBlend acts on the first fraction of the steps; the rest heal the seam.", 1.0)
    composite: str | None = setting("The kept region's pixels from the source after decoding, seam inpainted "
                                    "(auto: for background edits).", "auto", choices=COMPOSITES)
    composite_seam: int | None = setting("Latent cells around the kept region inpainted from the edit before the paste: "
                                         "how far the model's VAE spreads the step between kept and edited latents.", 2)
    context_guidance: float | None = setting("Guide the adapter's bias like the noise, r_u + G·(r_c − r_u), in "
                                             "inversion's source branch and in sampling (1: the conditional bias).", 1.0)
    window: int | None = setting("Frames per window: a longer clip is inverted and sampled window by window, each "
                                 "starting with frame 0 (the anchor).", 16, from_run=True,
                                 default_text="the run's tune window, else 16")
    overlap: int | None = setting("Frames shared by neighbouring windows, blended.", 4,
                                  default_text="4, at most --window − 2")
    control: str | None = setting("Structure control: canny | depth | pose | a folder of per-frame condition images | "
                                  "none.", from_run=True, default_text="the run's")
    controlnet: str | None = setting("ControlNet: hub id, folder, or tiny-random; its residuals go into inversion and "
                                     "sampling.", from_run=True, default_text="the run's")
    control_scale: float = setting("Weight of the ControlNet's residuals.", value=1.0, default_text="1")
    depth_model: str | None = setting("Depth estimator for --control depth: hub id, folder, or tiny.", from_run=True,
                                      default_text=f"the run's, else {DEFAULT_DEPTH_MODEL}")

    def resolve(self, model_defaults: dict | None = None, run: dict | None = None) -> "EditSettings":
        """Fill every unset setting, once: the run's (``run``: its manifest's settings) for those the
        clip was tuned with, else the model's recommendation, else the built-in default."""
        if getattr(self, "_resolved", False):
            return self
        overlap_unset = self.overlap is None
        resolve(self, "edit", run=run, model=model_defaults)
        if overlap_unset:  # a short window keeps its overlap below W − 1
            self.overlap = min(self.overlap, max(0, self.window - 2))
        if not self.fusion:
            self.self_fusion = self.cross_fusion = 0.0
            self.background_cross_fusion = None  # as --cross-fusion: none
        if self.control == "none":  # the run's structure control switched off
            self.control = self.controlnet = None
        self.validate()
        self._resolved = True
        return self

    def validate(self) -> None:
        check_types(self)
        check_choices(self)
        for name in ("steps", "null_text_steps", "composite_seam"):
            if getattr(self, name) is not None:
                check_at_least_one(self, name)
        from .common import check_guidance

        for value in (self.guidance, self.background_guidance):
            if value is not None:
                check_guidance(value)
        for name, meaning in SHARES.items():
            check_share(name, getattr(self, name), meaning)
        if self.window is not None or self.overlap is not None:
            from .windows import check_window

            window = self.window if self.window is not None else EditSettings.builtin("window")
            check_window(window, self.overlap if self.overlap is not None else 0)
        if self.context_guidance is not None and not (math.isfinite(self.context_guidance) and self.context_guidance >= 0):
            raise UsageError(f"`context_guidance` must be 0 or more (got {self.context_guidance}); 1 is the plain conditional bias")
        if self.new_word_weight is not None and not (math.isfinite(self.new_word_weight) and self.new_word_weight > 0):
            raise UsageError(f"`new_word_weight` must be a positive number (got {self.new_word_weight})")
        from .structure import check_control

        check_control(self.control, self.controlnet, self.control_scale, pair=False)
        if self.fusion_layers is not None:
            parse_fusion_layers(self.fusion_layers, 4096)
        parse_reweight(self.reweight)
        self.blend_words = [w.strip() for w in self.blend_words if w and w.strip()]

    @staticmethod
    def builtin(name: str):
        from ..settings import builtin_defaults

        return builtin_defaults(EditSettings)[name]

    def settings(self) -> dict:
        """The settings, as edits.json records them."""
        return {f.name: getattr(self, f.name) for f in fields(EditSettings)}


def parse_reweight(items: list[str]) -> dict[str, float]:
    """``["WORD=SCALE", …]`` → {word: scale}; a malformed item is a UsageError."""
    out = {}
    for item in items or []:
        word, sep, scale = str(item).rpartition("=")
        try:
            value = float(scale)
        except ValueError:
            value = math.nan
        if not sep or not word.strip() or not (math.isfinite(value) and value >= 0):
            raise UsageError(f"`reweight` takes WORD=SCALE with a scale ≥ 0, like `reweight` blue=2 (got {item!r})")
        out[word.strip()] = value
    return out


def parse_fusion_layers(value: str, finest_tokens: int) -> int | None:
    """Most tokens per frame of a layer whose self-attention is fused: None for every layer."""
    value = str(value).strip().lower()
    if value == "all":
        return None
    if value == "coarse":  # FateZero: ≤ 32² tokens on SD's 64² latents
        return finest_tokens // 4
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise UsageError(f"`fusion_layers` must be all, coarse, or a positive token count (got {value!r})")
