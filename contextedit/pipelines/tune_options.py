"""The settings of a tune, declared once (:func:`contextedit.settings.setting`), and their checks.
No torch here: the CLI's --help reads these fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..defaults import DEFAULT_DEPTH_MODEL, EVERY_BLOCK, TEMPORAL_LAYERS
from ..errors import UsageError
from ..settings import check_at_least_one, check_choices, check_lr, check_types, resolve, setting

ADAPTER_INPUTS = ("clean", "predicted")
MOTION_TEMPORAL = ("tune", "freeze")  # tune's --temporal: whether a motion adapter's modules are tuned
# The adapter's own AdamW lr (the UNet's stays at --lr 1e-5): the lowest tuning loss of 1e-5,
# 1e-4, 1e-3, from a base adapter and from a fresh one (bench/adapter_lr.py).
ADAPTER_LR = 1e-3


@dataclass(kw_only=True)
class TuneSettings:
    """How a clip is tuned (the library's names; the CLI spells them as flags). An unset (None)
    setting takes the model's recommendation (its family's, then its contextedit.json's ``tune``),
    else the built-in default."""

    SECTION: ClassVar[str] = "tune"

    steps: int = setting("Tuning steps.", value=500, default_text="500")
    lr: float = setting("AdamW learning rate.", value=1e-5, default_text="1e-05")
    seed: int = setting("Random seed; the same inputs and seed give the same outputs.", value=0, default_text="0")
    adapter: bool = setting("Tune with the context adapter (--no-adapter: the Tune-A-Video baseline).",
                            flag="--adapter/--no-adapter", value=True, default_text="on")
    adapter_init: str = setting("Start the clip's adapter from: base (the model's own base adapter; a fresh one when it "
                                "has none), none (fresh, zero output), or an adapter folder (from `train-adapter`, or "
                                "a run's adapter/).", value="base", default_text="base")
    adapter_lr: float = setting("AdamW learning rate of the adapter (its own group, no weight decay on its head).",
                                value=ADAPTER_LR, default_text=f"{ADAPTER_LR:g}")
    adapter_input: str = setting("What the adapter reads in training: clean (x0) or predicted (every other step, the x̂0 "
                                 "the UNet predicts, as in sampling).", choices=ADAPTER_INPUTS, value="clean",
                                 default_text="clean")
    checkpointing: bool = setting("Gradient checkpointing (less memory, a little slower).",
                                  flag="--checkpointing/--no-checkpointing", value=True, default_text="on")
    checkpoint_every: int = setting("Steps between resumable checkpoints.", value=100, default_text="100")
    window: int = setting("Frames per tuning step: a longer clip trains on one window (frame 0 + W-1 consecutive "
                          "frames) per step; edit uses the same windows.", value=16, default_text="16")
    control: str | None = setting("Structure control that edit applies with --controlnet: canny | depth | pose | a "
                                  "folder of per-frame condition images. Recorded in the run.")
    controlnet: str | None = setting("ControlNet for --control: hub id, folder, or tiny-random (checked against "
                                     "--model now).")
    temporal_layers: str | None = setting(
        "Where the temporal layers go: on every transformer block's self-attention, or one per transformer (on its "
        "first block; the same layers where every transformer has depth 1, as in SD-1/2). Recorded in the run; edit "
        "rebuilds the UNet with it.", EVERY_BLOCK, choices=TEMPORAL_LAYERS,
        default_text="per-transformer for SDXL, else every-block")
    motion_adapter: str | None = setting(
        "AnimateDiff motion modules (a diffusers MotionAdapter: hub id, in the local cache first, or a folder) used as "
        "the temporal layers instead of the zero-initialised ones. Recorded in the run (a folder with its sha256); "
        "edit rebuilds the same UNet.", default_text="none")
    temporal: str = setting("With `motion_adapter`: tune its motion modules with the attention queries (saved in the "
                            "run), or freeze them (as loaded; not saved).", choices=MOTION_TEMPORAL, value="tune",
                            default_text="tune")
    depth_model: str = setting("Depth estimator for --control depth (transformers' DPT / Depth-Anything): hub id, "
                               "folder, or tiny.", value=DEFAULT_DEPTH_MODEL, default_text=DEFAULT_DEPTH_MODEL)

    def resolve(self, model_defaults: dict | None = None) -> "TuneSettings":
        """Fill the unset settings (the model's recommendation, else the built-in default); validate."""
        resolve(self, self.SECTION, model=model_defaults)
        self.validate()
        return self

    def validate(self) -> None:
        from .adapters import check_adapter_spec
        from .structure import check_control
        from .windows import check_window

        check_types(self)
        check_choices(self)
        check_at_least_one(self, "steps", "checkpoint_every")
        check_lr(self.lr, "; the paper uses 1e-5")
        check_lr(self.adapter_lr, f"; the default is {ADAPTER_LR:g}", "`adapter_lr`")
        check_adapter_spec(self.adapter_init, "`adapter_init`")
        check_window(self.window, 0)
        if self.motion_adapter in ("", "none"):
            self.motion_adapter = None
        if self.control == "none":  # edit's word for off; here it only means no structure control
            if self.controlnet is not None:
                raise UsageError("`control` none turns structure control off; drop `controlnet` or pass canny, depth, pose or a folder")
            self.control = None
        check_control(self.control, self.controlnet)
        if self.control is not None and Path(self.control).is_dir():  # the run folder records where it is
            self.control = str(Path(self.control).resolve())
