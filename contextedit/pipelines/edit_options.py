"""The settings of an edit, their checks, and where their defaults come from.

A setting left as None takes, in order: the model's recommended value (``contextedit.json`` in
the model folder, section ``"edit"``), then :data:`contextedit.defaults.EDIT_DEFAULTS` — chosen on
the shapes-world benchmark (BENCHMARKS.md, "Edit settings sweep"). ``edits.json`` records the values that ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..errors import UsageError
from .common import fill_defaults, check_at_least_one, check_choice, check_guidance
from ..defaults import EDIT_DEFAULTS
from .inversion import INVERSIONS

SELF_HALVES = ("cond", "both")
LOCAL_BLENDS = ("auto", "on", "off")
COMPOSITES = ("auto", "on", "off")
_WINDOW = "a fraction of the T sampling steps, from the noisy end"
# The settings that are a share between 0 and 1, and what the share is of (for their error line).
SHARES = {"fusion_start": _WINDOW, "self_fusion": _WINDOW, "cross_fusion": _WINDOW, "blend_stop": _WINDOW,
          "blend_threshold": "a share of the mask's per-frame attention range",
          "offset_inside": "the share of direct inversion's offset the edited region gets",
          "background_offset_inside": "the share of direct inversion's offset a background region gets",
          "background_noise": "the share of fresh noise mixed into x_T in a background region"}
NEGATIVES = ("source", "empty")


@dataclass(kw_only=True)
class EditSettings:
    """How an edit samples; a None takes the model's recommendation, else EDIT_DEFAULTS."""

    steps: int | None = None
    guidance: float | None = None
    inversion: str | None = None
    self_fusion: float | None = None       # fraction of T: sampling steps i < self_fusion·T fuse self-attention
    cross_fusion: float | None = None      # the same for cross-attention
    fusion_start: float | None = None      # older spelling: both windows = 1 − fusion_start
    fusion: bool = True
    self_half: str | None = None
    fusion_layers: str | None = None       # "all", "coarse" (≤ ¼ of the finest layer's tokens) or a token count
    reweight: list[str] = field(default_factory=list)  # "WORD=SCALE"
    new_word_weight: float | None = None
    blend: bool | None = None
    blend_words: list[str] = field(default_factory=list)
    blend_threshold: float | None = None
    offset_inside: float | None = None     # direct inversion: share of the offset the masked (edited) region gets
    background_guidance: float | None = None       # for background edits, instead of guidance
    background_offset_inside: float | None = None  # for background edits, instead of offset_inside
    local_blend: str | None = None         # auto: on wherever there is a mask
    region_attention: str | None = None    # more | less: how the model's cross-attention marks what a word names
    blend_stop: float | None = None        # LocalBlend on sampling steps i < blend_stop·T
    background_noise: float | None = None  # share λ of fresh noise mixed into x_T where a word edits the rest of the frame
    background_negative: str | None = None  # source: guide those regions away from the source prompt; empty: from ""
    composite: str | None = None           # kept region's pixels from the source; auto: for edits of the rest of the frame
    null_text_steps: int | None = None
    context_guidance: float | None = None  # the adapter's bias guided like the noise: r_u + g·(r_c − r_u)
    window: int | None = None              # frames per window (longer clips go window by window)
    overlap: int | None = None             # frames shared by neighbouring windows
    control: str | None = None             # structure control: canny | depth | pose | a folder (default: the run's)
    controlnet: str | None = None          # its ControlNet (default: the run's)
    control_scale: float = 1.0             # the ControlNet residuals' weight
    depth_model: str | None = None         # for control depth (default: the run's, else DPT-hybrid MiDaS)

    def resolve(self, model_defaults: dict | None = None) -> "EditSettings":
        """Fill every None setting from the model's recommendations, then the built-in defaults."""
        if self.fusion_start is not None:
            self.self_fusion = self.self_fusion if self.self_fusion is not None else 1.0 - self.fusion_start
            self.cross_fusion = self.cross_fusion if self.cross_fusion is not None else 1.0 - self.fusion_start
        if self.window is not None and self.overlap is None:  # a short window keeps its overlap below W − 1
            self.overlap = min(EDIT_DEFAULTS["overlap"], max(0, self.window - 2))
        fill_defaults(self, "edit", EDIT_DEFAULTS, model_defaults)
        if not self.fusion:
            self.self_fusion = self.cross_fusion = 0.0
        if self.control == "none":  # the run's structure control switched off
            self.control = self.controlnet = None
        self.validate()
        return self

    def validate(self) -> None:
        if self.steps is not None:
            check_at_least_one(self, "steps")
        if self.null_text_steps is not None:
            check_at_least_one(self, "null_text_steps")
        for value in (self.guidance, self.background_guidance):
            if value is not None:
                check_guidance(value)
        for name, meaning in SHARES.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise UsageError(f"`{name}` must be between 0 and 1 (got {value}); it is {meaning}")
        if self.window is not None or self.overlap is not None:
            from .windows import check_window

            window = self.window if self.window is not None else EDIT_DEFAULTS["window"]
            check_window(window, self.overlap if self.overlap is not None else 0)
        if self.context_guidance is not None and not (math.isfinite(self.context_guidance) and self.context_guidance >= 0):
            raise UsageError(f"`context_guidance` must be 0 or more (got {self.context_guidance}); 1 is the plain conditional bias")
        if self.new_word_weight is not None and not (math.isfinite(self.new_word_weight) and self.new_word_weight > 0):
            raise UsageError(f"`new_word_weight` must be a positive number (got {self.new_word_weight})")
        if self.inversion is not None:
            check_choice("`inversion`", self.inversion, INVERSIONS)
        from .structure import check_control

        check_control(self.control, self.controlnet, self.control_scale, pair=False)
        if self.local_blend is not None:
            check_choice("`local_blend`", self.local_blend, LOCAL_BLENDS)
        if self.region_attention is not None:
            from ..attention.regions import POLARITIES

            check_choice("`region_attention`", self.region_attention, POLARITIES)
        if self.composite is not None:
            check_choice("`composite`", self.composite, COMPOSITES)
        if self.background_negative is not None:
            check_choice("`background_negative`", self.background_negative, NEGATIVES)
        if self.self_half is not None:
            check_choice("`self_half`", self.self_half, SELF_HALVES)
        if self.fusion_layers is not None:
            parse_fusion_layers(self.fusion_layers, 4096)
        parse_reweight(self.reweight)
        self.blend_words = [w.strip() for w in self.blend_words if w and w.strip()]

    def settings(self) -> dict:
        """The resolved settings, as edits.json records them."""
        return {f.name: getattr(self, f.name) for f in fields(EditSettings) if f.name != "fusion_start"}


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
