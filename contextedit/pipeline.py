"""The library's front door: :class:`ContextEditPipeline` tunes, edits and generates in memory.

    pipe = ContextEditPipeline.from_pretrained("tiny")
    tuned = pipe.tune(frames, "a red circle moving right on a black background", steps=100)
    [blue] = pipe.edit(tuned, ["a blue circle moving right on a black background"])

Frames are uint8 arrays (F, H, W, 3) used as given; results are arrays and PIL images. The
pipeline writes nothing it is not asked to (``TunedClip.save`` writes a run folder), touches no
global RNG, and leaves the components it was given as they were: the video UNet is a copy that
shares their frozen weights. The CLI (``contextedit.commands``) is a layer on top.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import UsageError
from .models.inflate import inflate_unet, load_tuned, shared_copy
from .models.loading import Components, load_components
from .pipelines.common import check_prompt, decode_latents, placement
from .pipelines.edit_options import EditSettings
from .pipelines.editing import EditedPrompt, NullTextCache, edit_clip
from .pipelines.generation import GenerateSettings, generate_images
from .pipelines.tuned import TunedClip
from .pipelines.tuning import TuneSettings, tune_clip
from .progress import ProgressFactory, silent

__all__ = ["ContextEditPipeline", "TunedClip"]


class ContextEditPipeline:
    """Stable-Diffusion components (VAE, UNet, text encoder, tokenizer, scheduler config) and the
    three jobs on them: :meth:`tune`, :meth:`edit`, :meth:`generate`."""

    def __init__(self, components: Components):
        if components.family.prepare is not None:  # built by hand, not by load_components: SDXL still gets its hook
            components.family.prepare(components)
        self.components = components
        self._motion: dict[str, torch.nn.Module] = {}  # motion adapters loaded for runs, by source

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, *, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto", model_config: str | None = None,
                        loras=None, motion_adapter: str | os.PathLike | None = None) -> "ContextEditPipeline":
        """``model``: a hub id (the local cache first; offline mode respected), a diffusers folder,
        a ``.safetensors`` single file (mapped onto ``model_config``), ``tiny`` (the embedded
        shapes-world model) or ``tiny-random``. ``device`` auto picks CUDA, then MPS, then CPU;
        ``dtype`` auto is fp16 on CUDA, fp32 elsewhere. ``loras``: ``FILE[:SCALE]`` strings or
        ``(file, scale)`` pairs, fused into the weights (as :meth:`load_lora`). ``motion_adapter``: a
        diffusers ``MotionAdapter`` (hub id or folder) whose AnimateDiff motion modules a later
        :meth:`tune` uses as its temporal layers (:mod:`contextedit.models.motion`)."""
        from .device import resolve_device, resolve_dtype

        device = resolve_device(str(device)) if isinstance(device, str) else torch.device(device)
        dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
        comps = load_components(str(model) if model is not None else None, device, dtype,
                                model_config=model_config, loras=loras)
        if motion_adapter is not None:
            from .models.motion import load_motion_adapter

            comps.extra["motion_adapter"] = load_motion_adapter(str(motion_adapter))
        return cls(comps)

    @classmethod
    def from_single_file(cls, path: str | os.PathLike, config: str | os.PathLike | None = None,
                         **kwargs) -> "ContextEditPipeline":
        """An SD-1.x, SD-2.x or SDXL ``.safetensors`` single file (A1111/ComfyUI layout), mapped onto
        ``config`` (a diffusers hub id in the local cache, or a folder; default: the matching base
        model's id). Keywords as :meth:`from_pretrained`."""
        return cls.from_pretrained(str(path), model_config=str(config) if config is not None else None, **kwargs)

    def load_lora(self, file: str | os.PathLike, scale: float = 1.0) -> "ContextEditPipeline":
        """Fuse the LoRA ``file`` (.safetensors, diffusers or kohya format) at ``scale`` into this
        pipeline's 2-D weights; a later :meth:`tune` sees (and records) it. Returns the pipeline."""
        from .models.lora import describe_loras, fuse_loras

        described = describe_loras([(str(file), float(scale))])
        fuse_loras(self.components, described)
        self.components.extra["loras"] = [*self.components.extra.get("loras", []), *described]
        return self

    @property
    def sources(self) -> dict:
        """What a run records of where the weights came from: the single file (path, sha256, family,
        config), the LoRAs (file, sha256, scale) and the motion adapter (id, or folder and sha256), where
        there are any."""
        extra = self.components.extra
        return {**({"model_file": extra["single_file"]} if extra.get("single_file") else {}),
                **({"loras": list(extra["loras"])} if extra.get("loras") else {}),
                **({"motion_adapter": extra["motion_adapter"][1]} if extra.get("motion_adapter") else {})}

    @property
    def device(self) -> torch.device:
        return placement(self.components)[0]

    @property
    def dtype(self) -> torch.dtype:
        return placement(self.components)[1]

    # -- tune -------------------------------------------------------------------------------------
    def tune(self, frames: np.ndarray, prompt: str, *, fps: float = 8.0, progress: ProgressFactory = silent,
             checkpoint: str | os.PathLike | None = None, resume: bool = False, stop: Callable[[], bool] | None = None,
             **settings) -> TunedClip:
        """Tune the inflated UNet and the adapter on ``frames`` (every frame, as given; sides
        divisible by 8) and ``prompt``. ``settings``: steps (500), lr (1e-5), seed (0), adapter
        (True), adapter_init ("base" | "none" | folder), adapter_lr, adapter_input, checkpointing,
        checkpoint_every, window (16: a longer clip trains one window per step), temporal_layers
        (every-block | per-transformer; default: the model family's, per-transformer for SDXL),
        motion_adapter (a MotionAdapter's id or folder; default: the one given to from_pretrained) and
        temporal (tune | freeze its motion modules) — see
        :class:`~contextedit.pipelines.tuning.TuneSettings`.
        ``checkpoint``: a file for resumable training (written only when given); it records
        :attr:`sources`, and ``resume`` refuses LoRAs, a single file or a motion adapter other than
        those, or changed since (sha256).
        ``stop``: asked after each step; True checkpoints and ends the tune with
        :class:`~contextedit.errors.Interrupted` (a web page's Cancel; ``resume=True`` continues it)."""
        prompt = check_prompt(prompt, "`prompt`")
        tuned = tune_clip(self.components, frames, prompt, TuneSettings(**settings), fps=fps, progress=progress,
                          checkpoint=Path(checkpoint) if checkpoint is not None else None, resume=resume,
                          sources=self.sources, stop=stop)
        tuned.record.update(self.sources)
        return tuned

    # -- edit -------------------------------------------------------------------------------------
    def video_unet(self, tuned: TunedClip) -> torch.nn.Module:
        """The inflated UNet with ``tuned``'s weights, its temporal layers where the run placed them
        (``tuned.temporal_layers``), or the run's motion modules: a copy sharing this pipeline's frozen weights."""
        self._check_model(tuned)
        from .device import seeded

        device, dtype = self.device, self.dtype
        record = tuned.settings.get("motion_adapter")
        with seeded(0):  # the new temporal layers' initial draws (overwritten) leave the caller's RNG alone
            unet = inflate_unet(shared_copy(self.components.unet), temporal=not record,
                                temporal_layers=tuned.temporal_layers)
        if record:
            from .models.motion import attach_motion_modules

            attach_motion_modules(unet, self._motion_adapter(record), tuned.settings.get("temporal") or "tune")
        load_tuned(unet, {k: v.to(device, dtype) for k, v in tuned.tuned.items()})
        return unet.requires_grad_(False).eval()

    def _motion_adapter(self, record: dict) -> torch.nn.Module:
        """The run's motion adapter: the one this pipeline holds when it is the same, else loaded
        from the record (a folder's sha256 checked) and kept for the next edit."""
        from .models.motion import check_recorded_motion, load_motion_adapter, record_source

        held = self.components.extra.get("motion_adapter")
        if held is not None and held[1] == record:
            return held[0]
        source = record_source(record)
        if source not in self._motion:
            check_recorded_motion(record, "the clip")
            self._motion[source] = load_motion_adapter(source)[0]
        return self._motion[source]

    def edit(self, tuned: TunedClip, prompts: str | list[str], **kwargs) -> list[np.ndarray]:
        """One edited clip, uint8 (F, H, W, 3), per target prompt. Keywords: see :meth:`iter_edit`."""
        return [edited.frames for edited in self.iter_edit(tuned, prompts, **kwargs)]

    def iter_edit(self, tuned: TunedClip, prompts: str | list[str], *, source_prompt: str | None = None,
                  adapter: bool = True, mask: np.ndarray | torch.Tensor | None = None,
                  progress: ProgressFactory = silent, cache_dir: str | os.PathLike | None = None,
                  timings: dict | None = None, settings: EditSettings | None = None, **kw) -> Iterator[EditedPrompt]:
        """Edit ``tuned`` toward each prompt, yielding each as soon as it is decoded.

        ``settings``: an :class:`~contextedit.pipelines.edit_options.EditSettings`, or its fields as
        keywords ``kw`` (steps, guidance, inversion, self_fusion, …); unset ones take the run's, the
        model's recommendation, else the built-in defaults.
        ``mask`` (H, W) or (F, H, W), nonzero where the edit may change things. ``adapter=False``
        samples without the tuned adapter. ``cache_dir`` keeps null-text embeddings on disk (the
        CLI passes the run folder); they are always kept in memory on ``tuned``."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise UsageError("no target prompt; give at least one")
        prompts = [check_prompt(p, "a target prompt") for p in prompts]
        # the one resolve (a resolved ``settings`` stays as it is): explicit > the run's (its tune
        # window, its structure control) > the model's contextedit.json > the built-in default
        opts = (settings if settings is not None else EditSettings(**kw)).resolve(
            self.components.recommended, run=tuned.settings)
        structure = None
        if opts.controlnet is not None or opts.control is not None:  # a lone one is refused here
            from .pipelines.structure import structure_control

            structure = structure_control(self.components, tuned.source_frames(), opts.control, opts.controlnet,
                                          opts.control_scale, **({"depth_model": opts.depth_model} if opts.depth_model else {}))
        unet = self.video_unet(tuned)
        use = tuned.adapter if adapter else None
        if use is not None:
            use = use.to(self.device).eval().requires_grad_(False)
        cache = NullTextCache(memory=tuned.cache.setdefault("null_text", {}),
                              folder=Path(cache_dir) if cache_dir is not None else None)
        yield from edit_clip(self.components, unet, use, tuned.latents, source_prompt or tuned.prompt, prompts, opts,
                             mask=as_mask(mask, tuned.num_frames), cache=cache, timings=timings, progress=progress,
                             structure=structure, source_frames=tuned.source_frames)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """VAE latents (F, C, h, w) → uint8 frames (F, H, W, 3)."""
        from . import video as vio

        return vio.to_frames(decode_latents(self.components.vae, latents))

    def _check_model(self, tuned: TunedClip) -> None:
        if tuned.model != self.components.model_id:
            raise UsageError(f"the clip was tuned on {tuned.model!r}, this pipeline holds {self.components.model_id!r}; "
                             "load the model it was tuned on, or tune again")

    # -- generate ---------------------------------------------------------------------------------
    def generate(self, prompt: str | list[str], *, n: int = 1, seed: int = 0, progress: ProgressFactory = silent,
                 **settings):
        """``n`` PIL images per prompt; image k from seed ``seed + k``. ``settings``: steps,
        guidance, sampler (ddim | ddpm), negative_prompt, width, height, adapter (base | none |
        folder) — see :class:`~contextedit.pipelines.generation.GenerateSettings`."""
        from PIL import Image

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [check_prompt(p, "`prompt`") for p in prompts]
        if n < 1:
            raise UsageError(f"`n` must be at least 1 (got {n})")
        opts = GenerateSettings(**settings).resolve(self.components.recommended)
        return [Image.fromarray(g.image) for g in generate_images(self.components, prompts, n, seed, opts, progress=progress)]


def as_mask(mask, frames: int) -> torch.Tensor | None:
    """A user mask as (F, 1, H, W) in {0, 1}: nonzero (or > ½ for floats in [0, 1]) marks what may change."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)
    if m.dtype == torch.uint8 and bool(m.max() > 1):
        m = m.float() / 255.0
    m = (m.float() > 0.5).float()
    if m.ndim == 2:
        m = m.expand(frames, -1, -1)
    if m.ndim == 3:
        m = m.unsqueeze(1)
    if m.ndim != 4 or m.shape[0] != frames or m.shape[1] != 1:
        raise UsageError(f"mask must be (H, W) or ({frames}, H, W) for a clip of {frames} frames; got {tuple(np.shape(mask))}")
    return m
