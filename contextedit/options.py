"""The options of each command, declared once: its own fields (:func:`~contextedit.settings.setting`)
on top of the library's settings (:class:`EditSettings`, :class:`TuneSettings`,
:class:`GenerateSettings`) and :class:`RuntimeOptions`: :class:`TuneOptions`, :class:`EditOptions`,
:class:`GenerateOptions`, :class:`TrainAdapterOptions`, :class:`EvalOptions` and
:class:`CaptionOptions`. The CLI builds its flags from these fields, ``batch`` checks its jobs'
options against them. No torch here."""

from __future__ import annotations

from dataclasses import dataclass

from .defaults import (DEFAULT_CAPTION_MODEL, DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL, DEFAULT_PICKSCORE_MODEL,
                       FLOW_METHODS, TEMPORAL_MODES)
from .errors import UsageError
from .pipelines.edit_options import EditSettings
from .pipelines.generate_options import GenerateSettings
from .pipelines.tune_options import TuneSettings
from .settings import (RuntimeOptions, check_at_least_one, check_choice, check_lr, check_prompt, check_prompts,
                       device_setting, same_as, setting)

FORMATS = ("mp4", "gif", "frames")


@dataclass
class TuneOptions(TuneSettings, RuntimeOptions):
    """``contextedit tune``: :class:`TuneSettings` with the clip, its frames and the run folder."""

    video: str = setting("Source clip: mp4/mov/webm/avi/gif or a folder of frames.", argument=True, required=True)
    prompt: str | None = setting("Source prompt.", default_text="a BLIP-2 caption of the clip")
    frames: int | str | None = setting("Frames to sample: a count, or all (every --stride-th from --start).", value=8,
                                       default_text="8")
    stride: int = setting("Take every S-th frame (the paper's sample rate is 2).", value=2, default_text="2")
    start: int = setting("First frame index.", value=0, default_text="0")
    size: str | None = setting("WIDTHxHEIGHT, multiples of 8.",
                               default_text="source aspect, short side at the model's native size")
    out: str | None = setting("Run folder.", default_text="runs/<video name>/")
    resume: bool = setting("Continue an interrupted tune from its checkpoint.", flag="--resume", value=False)
    caption_model: str = setting("BLIP-2 model for captions: hub id, folder or 'tiny'.", value=DEFAULT_CAPTION_MODEL,
                                 default_text=DEFAULT_CAPTION_MODEL)

    def validate(self) -> None:
        self.frames = parse_frames(self.frames)
        check_at_least_one(self, "stride")
        if self.frames is not None:
            check_at_least_one(self, "frames")
        if self.start < 0:
            raise UsageError(f"`start` must be 0 or more (got {self.start})")
        TuneSettings.validate(self)
        if self.prompt is not None:
            self.prompt = check_prompt(self.prompt)
        if self.size is not None:
            from . import video as vio

            vio.parse_size(self.size)
        if self.resume and self.overwrite:
            raise UsageError("`resume` and `overwrite` contradict each other; pick one")


def parse_frames(value) -> int | None:
    """``--frames``: a count, or ``all`` (None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"`frames` must be a frame count or all (got {value!r})") from None


@dataclass
class EditOptions(EditSettings, RuntimeOptions):
    """``contextedit edit``: :class:`EditSettings` with the prompts, the run and the outputs."""

    prompts: list[str] = setting("Target prompt (repeatable).", flag="--prompt", required=True)
    run: str | None = setting("Tuned run folder.", default_text="the latest run")
    source_prompt: str | None = setting("Override the run's source prompt.")
    mask: str | None = setting("User mask: a PNG for all frames or a folder of one per frame; white = may change.")
    adapter: bool = setting("Sample with the tuned adapter (--no-adapter: the ablation without it).",
                            flag="--adapter/--no-adapter", value=True, default_text="on")
    out: str | None = setting("Output folder.", default_text="<run>/edits/")
    format: str = setting("Output format.", choices=FORMATS, flag="--format", value="mp4", default_text="mp4")
    side_by_side: bool = setting("Write source | edit side by side.", flag="--side-by-side", value=False)

    def validate(self) -> None:
        self.prompts = check_prompts(self.prompts, "pass `prompt` TEXT (repeatable) or `prompts_file` FILE")
        if self.source_prompt is not None:
            self.source_prompt = check_prompt(self.source_prompt, "`source_prompt`")
        check_choice("`format`", self.format, FORMATS)
        EditSettings.validate(self)

    def settings(self) -> dict:
        return {**EditSettings.settings(self), "mask": self.mask, "format": self.format, "side_by_side": self.side_by_side}


@dataclass
class GenerateOptions(GenerateSettings, RuntimeOptions):
    """``contextedit generate``: :class:`GenerateSettings` with the prompts and the outputs."""

    prompts: list[str] = setting("Prompt (repeatable).", flag="--prompt", required=True)
    n: int = setting("Images per prompt (seeds seed, seed+1, …).", value=1, default_text="1")
    grid: bool = setting("Also write grid.png of all images.", flag="--grid", value=False)
    out: str | None = setting("Output folder.", default_text="outputs/generate/<timestamp>/")

    def validate(self) -> None:
        self.prompts = check_prompts(self.prompts, "pass `prompt` TEXT (repeatable)")
        check_at_least_one(self, "n")
        GenerateSettings.validate(self)


TUNE_UNET = ("none", "attn")


@dataclass
class TrainAdapterOptions(RuntimeOptions):
    """``contextedit train-adapter``: the image–caption folder, the adapter folder and the training."""

    data: str = setting("Image folder with metadata.jsonl or same-stem .txt captions.", argument=True, required=True)
    out: str = setting("Adapter folder to write (config.json + safetensors, diffusers' layout).", required=True)
    steps: int = setting("Training steps.", value=1000)
    lr: float = setting("AdamW learning rate.", value=1e-4)
    batch: int = setting("Images per step.", value=4)
    size: int | None = setting("Square training size (multiple of 8).", default_text="native")
    tune_unet: str = setting("Also tune the UNet's attention queries (attn), or not (none).", choices=TUNE_UNET,
                             value="none")
    resume: bool = setting("Continue from the checkpoint beside --out.", flag="--resume/--no-resume", value=False)
    checkpoint_every: int = setting("Steps between resumable checkpoints.", value=100)

    def validate(self) -> None:
        from . import video as vio
        from .fileio import refuse_pickle

        check_at_least_one(self, "steps", "batch", "checkpoint_every")
        check_lr(self.lr)
        check_choice("`tune_unet`", self.tune_unet, TUNE_UNET)
        if self.size is not None:
            vio.check_size(self.size, self.size)
        refuse_pickle(self.out)
        if str(self.out).endswith(".safetensors"):
            raise UsageError(f"`out` {self.out} must be a folder: train-adapter writes an adapter folder "
                             "(config.json + diffusion_pytorch_model.safetensors); drop the .safetensors suffix")


@dataclass
class CaptionOptions:
    """``contextedit caption``: the clip, the frames read from it and the BLIP-2 model."""

    video: str = setting("Clip to caption.", argument=True, required=True)
    caption_model: str = setting("BLIP-2 model: hub id, folder or 'tiny'.", value=DEFAULT_CAPTION_MODEL)
    frames: int = setting("Frames to sample.", value=8)
    stride: int = setting("Frame stride.", value=2)
    start: int = setting("First frame index.", value=0)
    device: str = device_setting()


@dataclass
class EvalOptions:
    """``contextedit eval``: the outputs scored, the metrics and their models."""

    paths: list[str] = setting("Videos, frame folders, images, image folders, or edit/generate output folders.",
                               argument=True, factory=list)
    metrics: str = setting("Comma list of: clip (clip_text, clip_text_logit, clip_temporal), pickscore, dino "
                           "(dino_temporal), flow (flow_epe), warp (warp_error), psnr (psnr, bg_psnr with --mask), "
                           "oracle (shapes world).", value="clip", default_text="clip")
    prompt: str | None = setting("Prompt to score against.", default_text="read from edits.json / generate.json")
    source: str | None = setting("Source clip: flow, warp, psnr and the oracle compare with it.")
    mask: str | None = setting("Edited region (white), one image or a folder of one per frame: psnr adds bg_psnr "
                               "outside it.")
    temporal: str = setting("Frame pairs for clip_temporal and dino_temporal.", choices=TEMPORAL_MODES, value="consecutive",
                            default_text="consecutive")
    clip_model: str = setting("CLIP model: hub id, folder, or 'tiny'.", value=DEFAULT_CLIP_MODEL,
                              default_text=DEFAULT_CLIP_MODEL)
    pickscore_model: str = setting("PickScore model: hub id, folder, or 'tiny'.", value=DEFAULT_PICKSCORE_MODEL,
                                   default_text=DEFAULT_PICKSCORE_MODEL)
    dino_model: str = setting("DINOv2 model: hub id, folder, or 'tiny'.", value=DEFAULT_DINO_MODEL,
                              default_text=DEFAULT_DINO_MODEL)
    flow: str = setting("Optical flow for flow and warp: farneback (OpenCV, no weights) | raft (torchvision, needs "
                        "--flow-model).", choices=FLOW_METHODS, value="farneback", default_text="farneback")
    flow_model: str | None = setting("RAFT weights, a .safetensors file (raft_large or raft_small).")
    json_out: str | None = setting("Also write the results as JSON.", flag="--json")
    report: str | None = setting("Also write an HTML page: source | edit, metrics, per-frame plot.")
    device: str = device_setting()


@dataclass
class UIOptions:
    """``contextedit ui``: the web UI's server (Gradio, the ``ui`` extra)."""

    model: str | None = same_as(RuntimeOptions, "model")  # what the page tunes on
    device: str = device_setting()
    host: str = setting("Address to bind; 0.0.0.0 serves the network (no login: anyone who reaches it can run jobs).",
                        value="127.0.0.1", default_text="127.0.0.1")
    port: int = setting("Port to serve on.", value=7860, default_text="7860")
    runs: str | None = setting("Runs folder the page tunes into and lists (the CLI's run folders).",
                               default_text="$CONTEXTEDIT_RUNS, else runs/")
    share: bool = setting("Also open a public Gradio share link (off by default: the page is reachable from this "
                          "machine only).", flag="--share", value=False)
    max_upload_mb: int = setting("Largest upload accepted, in MB.", value=500, default_text="500")
    edit_steps: int | None = setting("DDIM steps T of the page's edits.", default_text="edit's default")
    caption_model: str = same_as(TuneOptions, "caption_model")  # the page's Caption button
    clip_model: str = same_as(EvalOptions, "clip_model")  # the page's Score: eval's models
    pickscore_model: str = same_as(EvalOptions, "pickscore_model")
    dino_model: str = same_as(EvalOptions, "dino_model")

    def validate(self) -> None:
        if self.max_upload_mb < 1:
            raise UsageError("`max_upload_mb` must be at least 1")
        if not 0 < self.port < 65536:
            raise UsageError(f"`port` {self.port} is not a port number (1-65535)")
        if self.edit_steps is not None:
            check_at_least_one(self, "edit_steps")
