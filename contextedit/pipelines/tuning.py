"""One-shot tuning in memory (docs/concepts/design.md §5.1–5.4): inflate a copy of the UNet, attach the adapter,
train jointly, return a :class:`~contextedit.pipelines.tuned.TunedClip`.

Nothing here reads or writes run folders; the checkpoint file for a resumable tune is the
caller's choice (``checkpoint=``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..device import cpu_generator, oom_guard, seeded
from ..errors import UsageError
from ..models.adapter import ContextAdapter, config_for_unet
from ..models.inflate import inflate_unet, mark_trainable, trainable_parameters, tuned_state_dict, shared_copy
from ..models.loading import Components
from ..progress import ProgressFactory, silent
from ..schedulers import ContextualDDPMScheduler
from .adapters import describe as describe_adapter, resolve_adapter
from .common import encode_latents, encode_text, placement
from .training import Batch, Trainer, adapter_rel_scale, contextual_loss
from .tune_options import TuneSettings
from .tuned import TunedClip
from .windows import training_window


def tune_clip(comps: Components, frames: np.ndarray, prompt: str, settings: TuneSettings, *, fps: float = 8.0,
              progress: ProgressFactory = silent, checkpoint: Path | None = None, resume: bool = False,
              sources: dict | None = None, stop: Callable[[], bool] | None = None) -> TunedClip:
    """Tune on ``frames`` (F, H, W, 3) uint8, every frame as given, with ``prompt``.

    ``checkpoint``: a file to save the trainer to every ``checkpoint_every`` steps and on Ctrl-C
    or when ``stop()`` says so after a step (``resume`` continues from it;
    :meth:`~.training.Trainer.run`). ``sources`` (:attr:`ContextEditPipeline.sources`) go into
    the checkpoint, and a resume is refused when its weights' sources are not the ones it was
    interrupted with (:func:`check_resumed_sources`). The caller's components are not changed:
    the inflated UNet is a copy sharing their frozen weights."""
    settings.resolve(comps.recommended)  # temporal_layers: SDXL's family recommends per-transformer
    recorded = Trainer.recorded_sources(checkpoint) if resume and checkpoint is not None and checkpoint.is_file() else None
    if recorded is not None:  # before any work
        check_resumed_sources(recorded, sources or {}, checkpoint)
    if settings.controlnet is not None:  # edit will use them: refuse a mismatch now, not after tuning
        from .structure import structure_control

        structure_control(comps, frames[:1] if not Path(settings.control).is_dir() else frames, settings.control, settings.controlnet,
                          depth_model=settings.depth_model)
    device, dtype = placement(comps)
    t0 = time.perf_counter()
    with oom_guard(device, "tuning"):
        x0 = encode_latents(comps.vae, _to_tensor(frames))
        text = encode_text(comps, [prompt])
        motion = motion_for(comps, settings.motion_adapter)
        unet, adapter = build_video_model(comps, settings.adapter, settings.checkpointing, seed=settings.seed,
                                          adapter_init=settings.adapter_init, temporal_layers=settings.temporal_layers,
                                          motion=motion, temporal=settings.temporal)
        params = trainable_parameters(unet)
        if adapter is not None:
            params.update({f"adapter.{n}": p for n, p in adapter.named_parameters()})
        trainer = Trainer(params, lr=settings.lr, adapter_lr=settings.adapter_lr, sources=sources or {})
        if resume and checkpoint is not None:
            trainer.load(checkpoint)
        scheduler = ContextualDDPMScheduler.from_config(comps.scheduler_config)
        batch = window_batch(x0, text, settings.window, None)
        unet.train()
        first = trainer.step

        def loss(seed: int) -> torch.Tensor:
            return contextual_loss(unet, adapter, scheduler, window_batch(x0, text, settings.window, seed), seed,
                                   settings.adapter_input)

        with progress("tuning", settings.steps - trainer.step) as advance:
            trainer.run(settings.steps, loss, seed=settings.seed, checkpoint=checkpoint, every=settings.checkpoint_every, advance=advance,
                        autocast=autocast_for(device, dtype), scaler=grad_scaler_for(device, dtype), stop=stop)
        unet.eval()
        rel_scale = adapter_rel_scale(adapter.eval(), scheduler, batch) if adapter is not None else None
    train_s = time.perf_counter() - t0
    record = asdict(settings)
    record.update(adapter_init=describe_adapter(settings.adapter_init, comps) if adapter is not None else None,
                  adapter_lr=settings.adapter_lr if adapter is not None else None,
                  adapter_input=settings.adapter_input if adapter is not None else None,
                  adapter_rel_scale=rel_scale, prediction_type=comps.prediction_type,
                  device=str(device), dtype=str(dtype).replace("torch.", ""))
    record.pop("adapter")
    record.update(motion_adapter=motion[1] if motion is not None else None,
                  temporal=settings.temporal if motion is not None else None)
    # contiguous: the VAE returns channels-last strides, and convolutions round differently on them
    return TunedClip(model=comps.model_id, prompt=prompt, frames=frames, fps=fps, latents=x0.float().cpu().contiguous(),
                     tuned={k: v.float().cpu() for k, v in tuned_state_dict(unet).items()},
                     adapter=adapter.requires_grad_(False) if adapter is not None else None, settings=record,
                     losses=list(trainer.losses),
                     record={"timings": {"train_s": train_s, "steps_per_s": (trainer.step - first) / max(train_s, 1e-9)}})


def window_batch(x0: torch.Tensor, text: torch.Tensor, window: int, step_seed: int | None) -> Batch:
    """The whole clip when it fits in ``window``; else one window (anchor + W−1 consecutive
    frames), drawn from the step's seed — the first window when ``step_seed`` is None."""
    frames = x0.shape[0]
    if frames <= window:
        return Batch(x0=x0, text=text, num_frames=frames)
    idx = list(range(window)) if step_seed is None else training_window(frames, window, cpu_generator(step_seed * 31 + 17))
    return Batch(x0=x0[idx], text=text, num_frames=len(idx))


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    from .. import video as vio

    if not (isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8):
        raise UsageError(f"frames must be a uint8 array (F, H, W, 3); got {getattr(frames, 'dtype', type(frames))} "
                         f"{getattr(frames, 'shape', '')}")
    if frames.shape[1] % 8 or frames.shape[2] % 8:
        raise UsageError(f"frame size {frames.shape[2]}×{frames.shape[1]} must be divisible by 8; resize or crop the frames")
    return vio.to_tensor(frames)


def motion_for(comps: Components, spec: str | None):
    """``(MotionAdapter, record)`` to tune with: ``spec`` loaded (:mod:`..models.motion`), else the
    one the components were loaded with (``from_pretrained(..., motion_adapter=...)``), else None."""
    from ..models.motion import load_motion_adapter, record_source

    held = comps.extra.get("motion_adapter")
    if spec is None:
        return held
    if held is not None and record_source(held[1]) in (spec, str(Path(spec).expanduser().resolve())):
        return held
    return load_motion_adapter(spec)


def build_video_model(comps: Components, with_adapter: bool, checkpointing: bool = False, seed: int | None = None,
                      adapter_init: str = "base", temporal_layers: str | None = None, motion=None,
                      temporal: str = "tune"):
    """The inflated UNet (a copy; trainable parameters in fp32) and the adapter to tune: the
    model's base adapter (``adapter_init`` base, when it ships one), a given folder, or a fresh
    zero-headed one. ``temporal_layers``: where the temporal layers go (None: the model's
    recommendation, as tune resolves it).

    ``motion``: ``(MotionAdapter, record)`` whose motion modules replace the temporal layers (the
    UNet is inflated without them), tuned or frozen as ``temporal`` says.

    With ``seed``, the new temporal layers and a fresh adapter are initialised from it (the global
    RNG is left as it was), so a tune is reproducible from its seed.
    """
    with seeded(seed) if seed is not None else contextlib.nullcontext():
        if temporal_layers is None:
            temporal_layers = TuneSettings().resolve(comps.recommended).temporal_layers
        unet = inflate_unet(shared_copy(comps.unet), temporal=motion is None, temporal_layers=temporal_layers)
        if motion is not None:
            from ..models.motion import attach_motion_modules

            attach_motion_modules(unet, motion[0], temporal)
        adapter = None
        if with_adapter:
            adapter = resolve_adapter(adapter_init, comps, torch.device("cpu"), "`adapter_init`")[0]
            adapter = adapter.train() if adapter is not None else ContextAdapter(**config_for_unet(unet))
    if checkpointing:
        unet.enable_gradient_checkpointing()
    for p in mark_trainable(unet).values():
        p.data = p.data.float()
    if adapter is not None:
        adapter.to(next(unet.parameters()).device)
    return unet, adapter


def autocast_for(device: torch.device, dtype: torch.dtype):
    """Mixed precision on CUDA for half dtypes (trainable tensors stay fp32); None elsewhere."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return torch.autocast("cuda", dtype=dtype)
    return None


def grad_scaler_for(device: torch.device, dtype: torch.dtype):
    """A loss scaler for fp16 autocast (fp16 gradients underflow without one); None otherwise."""
    if device.type == "cuda" and dtype == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def check_resumed_sources(recorded: dict, current: dict, checkpoint: Path) -> None:
    """A resumed tune on the sources (:attr:`ContextEditPipeline.sources`) it was interrupted with:
    the same LoRAs, each unchanged, and the same single file and motion adapter (their sha256
    were taken when they were loaded now); else one line."""
    from ..models.lora import check_resumed_loras

    check_resumed_loras(recorded.get("loras", []), current.get("loras", []), checkpoint)
    for key, what in (("model_file", "single file"), ("motion_adapter", "motion adapter")):
        was, now = recorded.get(key), current.get(key)
        if was != now:
            raise UsageError(f"the interrupted tune {checkpoint} was tuned with the {what} {_source_name(was)}, not "
                             f"{_source_name(now)}; resume with the same one, or start again (`overwrite`)")


def _source_name(source: dict | None) -> str:
    """A recorded single file or motion adapter as an error line names it: where, and its sha256."""
    if not source:
        return "none"
    where = source.get("path") or source.get("folder") or source.get("id")
    return f"{where} (sha256 {source['sha256']})" if source.get("sha256") else str(where)
