"""The settings of image generation, declared once (:func:`contextedit.settings.setting`).
No torch here: the CLI's --help reads these fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import UsageError
from ..settings import check_at_least_one, check_choices, check_guidance, check_types, resolve, setting

SAMPLER_NAMES = ("ddim", "ddpm")


@dataclass(kw_only=True)
class GenerateSettings:
    """How images are sampled; an unset (None) setting takes the model's recommendation, else the built-in."""

    SECTION: ClassVar[str] = "generate"

    steps: int | None = setting("Sampling steps.", 50)
    guidance: float | None = setting("Classifier-free guidance scale.", 7.5)
    sampler: str = setting("The contextual sampler.", choices=SAMPLER_NAMES, value="ddim", default_text="ddim")
    negative_prompt: str | None = setting("Negative prompt for guidance.", default_text="empty")
    width: int | None = setting("Image width (with --height; multiples of 8).", default_text="the model's native size")
    height: int | None = setting("Image height (with --width).", default_text="the model's native size")
    adapter: str | None = setting("Context adapter: base (the model's own, if any), none, or an adapter folder "
                                  "(from `train-adapter`).", "base")

    def validate(self) -> None:
        check_types(self)
        check_choices(self)
        if self.steps is not None:
            check_at_least_one(self, "steps")
        if self.guidance is not None:
            check_guidance(self.guidance)
        if (self.width is None) != (self.height is None):
            raise UsageError("give both `width` and `height`, or neither")
        if self.width is not None:
            from .. import video as vio

            vio.check_size(self.width, self.height)
        from .adapters import check_adapter_spec

        check_adapter_spec(self.adapter, "`adapter`")

    def resolve(self, model_defaults: dict | None) -> "GenerateSettings":
        self.validate()
        resolve(self, "generate", model=model_defaults)
        return self
