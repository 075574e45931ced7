"""``contextedit tune``: read and preprocess a video, tune on it in memory, write the run folder,
point ``runs/latest`` at it. The tuning itself is :meth:`ContextEditPipeline.tune`."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from .. import video as vio
from ..errors import InputError, OutputExistsError, UsageError
from ..models.loading import Components
from ..options import TuneOptions, parse_frames  # noqa: F401 — declared there
from ..models.lora import lora_specs
from ..pipeline import ContextEditPipeline
from ..pipelines.tuned import TunedClip
from ..pipelines.tuning import TuneSettings
from ..progress import ProgressFactory, silent
from ..runs import MANIFEST, MANIFEST_VERSION, check_new_output, default_run_dir, run_lock, set_latest, sha256_file

CHECKPOINT = "checkpoint.safetensors"
log = logging.getLogger("contextedit")


@dataclass
class TuneResult:
    run_dir: Path
    manifest: dict
    losses: list[float] = field(default_factory=list)
    tuned: TunedClip | None = None


def tune(opts: TuneOptions, progress: ProgressFactory = silent, comps: Components | None = None,
         stop: Callable[[], bool] | None = None) -> TuneResult:
    """Tune on ``opts.video``; returns the run folder and its manifest. ``stop`` (asked after each
    step, from any thread) ends the tune as Ctrl-C does: checkpointed, :class:`~contextedit.errors.Interrupted`,
    and the same options with ``resume`` continue it."""
    opts.validate()
    t_start = time.perf_counter()
    run_dir = Path(opts.out) if opts.out else default_run_dir(opts.video)
    if opts.resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise InputError(f"nothing to resume in {run_dir} (no {CHECKPOINT}); run without `resume`")
    elif (run_dir / CHECKPOINT).is_file() and not opts.overwrite:
        raise OutputExistsError(f"{run_dir} holds an interrupted tune; pass `resume` to continue it or `overwrite` to start again")
    else:
        check_new_output(run_dir, opts.overwrite, "run folder")
    if opts.overwrite and run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / MANIFEST).is_file() \
            and not (run_dir / CHECKPOINT).is_file():
        raise UsageError(f"`out` {run_dir} is not a run folder; `overwrite` replaces only run folders — choose another `out`")

    clip = vio.read_video(opts.video, frames=opts.frames, stride=opts.stride, start=opts.start)
    pipe = ContextEditPipeline(comps) if comps is not None else \
        ContextEditPipeline.from_pretrained(opts.model, device=opts.device, dtype=opts.dtype,
                                            model_config=opts.model_config, loras=lora_specs(opts.lora))
    frames = sized_frames(clip, opts.size, pipe.components.native_size)
    prompt = opts.prompt or source_caption(frames, opts, pipe)
    load_s = time.perf_counter() - t_start

    # The run folder appears with the first checkpoint, or whole at the end, so a run that fails
    # before either leaves no folder behind.
    settings = TuneSettings(**{f.name: getattr(opts, f.name) for f in fields(TuneSettings)})
    created = not run_dir.exists()
    try:
        tuned = pipe.tune(frames, prompt, fps=clip.playback_fps, progress=progress, checkpoint=run_dir / CHECKPOINT,
                          resume=opts.resume, stop=stop, **vars(settings))
    except BaseException:
        # a checkpoint is kept for --resume; a folder this tune made and left empty (the disk filled
        # before the first checkpoint) would only block the rerun
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    tuned.record.update(_record(opts, clip, pipe, tuned, load_s))
    # Replaces an --overwrite'd run (and the checkpoint) only now, whole: an interrupted --overwrite
    # keeps the old run usable.
    # exclusive unless asked: only a folder that holds nothing but this tune's checkpoint is ours to replace
    ours = run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {CHECKPOINT}
    with run_lock(run_dir):  # not while an edit writes into the old run (it checks for a new one)
        tuned.save(run_dir, overwrite=opts.overwrite or opts.resume or ours)
    set_latest(run_dir)
    return TuneResult(run_dir=run_dir, manifest={"version": MANIFEST_VERSION, **tuned.manifest()}, losses=tuned.losses,
                      tuned=tuned)


def sized_frames(clip: vio.Clip, size: str | None, native_size: int) -> np.ndarray:
    """The frames a tune takes from ``clip`` (the selection ``vio.read_video`` read): resized and
    centre-cropped to ``size`` (``WIDTHxHEIGHT``), by default the source's aspect with the short side
    at the model's ``native_size``."""
    height, width = clip.frames.shape[1:3]
    size = vio.parse_size(size) if size else vio.default_size(width, height, native_size)
    if size[0] > width or size[1] > height:
        log.warning("the source is %dx%d, smaller than the %dx%d the model works at: it is upscaled, so the edit "
                    "will look soft (pass `size` to choose)", width, height, *size)
    return vio.resize_crop(clip.frames, *size)


def source_caption(frames: np.ndarray, opts: TuneOptions, pipe: ContextEditPipeline) -> str:
    """The source prompt a tune without one uses: ``opts.caption_model``'s caption of the frames."""
    from ..captioning import caption_frames

    return caption_frames(frames, model_id=opts.caption_model, device=str(pipe.device))


def _record(opts: TuneOptions, clip, pipe: ContextEditPipeline, tuned, load_s: float) -> dict:
    """What the manifest adds to the tuned clip's own settings: where the clip came from, the
    adapter's cost, versions and timings."""
    import diffusers
    import torch
    import transformers

    from ..device import peak_memory_gib
    from ..models.flops import adapter_flop_share, count_parameters

    share = None
    if tuned.adapter is not None:
        try:
            share = adapter_flop_share(tuned.adapter, pipe.components.unet, tuple(tuned.latents.shape[1:]), 77, tuned.num_frames)
        except Exception:  # an estimate only; never fail a finished tune over it
            share = None
    timings = {"load_s": load_s, **tuned.record.get("timings", {}), "peak_gib": peak_memory_gib(pipe.device)}
    return {
        "source_video": str(Path(opts.video).resolve()),
        "source_sha256": sha256_file(opts.video) if Path(opts.video).is_file() else None,
        "stride": opts.stride, "start": opts.start, "source_fps": clip.fps,
        "adapter_parameters": count_parameters(tuned.adapter) if tuned.adapter is not None else 0,
        "adapter_flop_share": share,
        "versions": {"contextedit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "timings": timings,
    }
