"""One-shot tuning on a clip (DESIGN §5.1–5.4): inflate the UNet, attach the adapter, train jointly.

The run folder holds only what was tuned (safetensors), the preprocessed clip, its VAE latents
and a JSON manifest, so ``edit`` never decodes the video again.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..device import oom_guard, peak_memory_gib, resolve_device, resolve_dtype, seeded
from ..errors import InputError, OutputExistsError, UsageError
from ..fileio import save_safetensors
from ..models.adapter import ContextAdapter, config_for_unet
from ..models.flops import adapter_flop_share, count_parameters
from ..models.inflate import inflate_unet, mark_trainable, trainable_parameters, tuned_state_dict
from ..models.loading import Components, load_components
from ..progress import ProgressFactory, silent
from ..runs import check_new_output, default_run_dir, load_manifest, set_latest, sha256_file, write_manifest
from ..schedulers import ContextualDDPMScheduler
from .. import video as vio
from ..defaults import TUNE_DEFAULTS
from .adapters import check_adapter_spec, describe as describe_adapter, resolve_adapter
from .common import RuntimeOptions, check_at_least_one, check_choice, check_lr, check_prompt, encode_latents, encode_prompts
from .training import ADAPTER_INPUTS, Batch, Trainer, adapter_rel_scale, contextual_loss

CHECKPOINT = "checkpoint.safetensors"
FILES = {"tuned": "tuned.safetensors", "adapter": "adapter.safetensors", "latents": "latents.safetensors", "clip": "source.mp4"}


@dataclass
class TuneOptions(RuntimeOptions):
    video: str
    prompt: str | None = None
    frames: int = 8
    stride: int = 2
    start: int = 0
    size: str | None = None            # "WxH"; default: source aspect, short side native
    steps: int = 500
    lr: float = 1e-5
    out: str | None = None
    resume: bool = False
    adapter: bool = True
    adapter_init: str = "base"         # base | none | adapter folder | train-adapter file
    adapter_lr: float | None = None    # default: TUNE_DEFAULTS["adapter_lr"]
    adapter_input: str = "clean"       # clean | predicted: what x0 the adapter reads in training
    checkpointing: bool = True
    checkpoint_every: int = 100
    caption_model: str = "Salesforce/blip2-opt-2.7b"

    def validate(self) -> None:
        check_at_least_one(self, "frames", "stride", "steps", "checkpoint_every")
        if self.start < 0:
            raise UsageError(f"--start must be 0 or more (got {self.start})")
        check_lr(self.lr, "; the paper uses 1e-5")
        if self.adapter_lr is None:
            self.adapter_lr = TUNE_DEFAULTS["adapter_lr"]
        check_lr(self.adapter_lr, f"; the default is {TUNE_DEFAULTS['adapter_lr']:g}", "--adapter-lr")
        check_adapter_spec(self.adapter_init, "--adapter-init")
        check_choice("--adapter-input", self.adapter_input, ADAPTER_INPUTS)
        if self.prompt is not None:
            self.prompt = check_prompt(self.prompt)
        if self.size is not None:
            vio.parse_size(self.size)
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other; pick one")


@dataclass
class TuneResult:
    run_dir: Path
    manifest: dict
    losses: list[float] = field(default_factory=list)


def tune(opts: TuneOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> TuneResult:
    """Tune on ``opts.video``; returns the run folder and its manifest."""
    opts.validate()
    t_start = time.perf_counter()
    run_dir = Path(opts.out) if opts.out else default_run_dir(opts.video)
    if opts.resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise InputError(f"nothing to resume in {run_dir} (no {CHECKPOINT}); run without --resume")
    elif (run_dir / CHECKPOINT).is_file() and not opts.overwrite:
        raise OutputExistsError(f"{run_dir} holds an interrupted tune; pass --resume to continue it or --overwrite to start again")
    else:
        check_new_output(run_dir, opts.overwrite, "run folder")
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)

    clip = vio.read_video(opts.video, frames=opts.frames, stride=opts.stride, start=opts.start)
    comps = comps or load_components(opts.model, device, dtype)
    height, width = clip.frames.shape[1:3]
    size = vio.parse_size(opts.size) if opts.size else vio.default_size(width, height, comps.native_size)
    frames = vio.resize_crop(clip.frames, *size)
    prompt = opts.prompt or _caption(frames, opts)
    timings = {"load_s": time.perf_counter() - t_start}

    # The run folder appears with its first file (atomic writes create it), so a run that fails
    # before writing anything leaves no folder behind.
    with oom_guard(device, "tuning"):
        x0 = encode_latents(comps.vae, vio.to_tensor(frames))
        text = encode_prompts(comps.tokenizer, comps.text_encoder, [prompt])
        unet, adapter = build_video_model(comps, opts.adapter, opts.checkpointing, seed=opts.seed,
                                          adapter_init=opts.adapter_init)
        params = trainable_parameters(unet)
        if adapter is not None:
            params.update({f"adapter.{n}": p for n, p in adapter.named_parameters()})
        trainer = Trainer(params, lr=opts.lr, adapter_lr=opts.adapter_lr)
        if opts.resume:
            trainer.load(run_dir / CHECKPOINT)
        scheduler = ContextualDDPMScheduler.from_config(comps.scheduler_config)
        batch = Batch(x0=x0, text=text, num_frames=len(frames))
        unet.train()
        t0 = time.perf_counter()
        first = trainer.step
        with progress("tuning", opts.steps - trainer.step) as advance:
            losses = trainer.run(
                opts.steps, lambda seed: contextual_loss(unet, adapter, scheduler, batch, seed, opts.adapter_input), seed=opts.seed,
                checkpoint=run_dir / CHECKPOINT, every=opts.checkpoint_every, advance=advance,
                autocast=autocast_for(device, dtype),
            )
        unet.eval()
        rel_scale = adapter_rel_scale(adapter.eval(), scheduler, batch) if adapter is not None else None
        timings["train_s"] = time.perf_counter() - t0
        timings["steps_per_s"] = (trainer.step - first) / max(timings["train_s"], 1e-9)

    if opts.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)  # only now: an interrupted --overwrite keeps the old run usable
    save_safetensors(tuned_state_dict(unet), run_dir / FILES["tuned"])
    if adapter is not None:
        save_safetensors(dict(adapter.state_dict()), run_dir / FILES["adapter"])
    save_safetensors({"latents": x0.float().cpu()}, run_dir / FILES["latents"])
    vio.write_video(frames, run_dir / FILES["clip"], clip.fps)
    manifest = _manifest(opts, comps, clip, prompt, size, adapter, x0, timings, device, dtype, trainer.losses)
    manifest["adapter_rel_scale"] = rel_scale
    write_manifest(run_dir, manifest)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    set_latest(run_dir)
    return TuneResult(run_dir=run_dir, manifest=load_manifest(run_dir), losses=losses)


def build_video_model(comps: Components, with_adapter: bool, checkpointing: bool = False, seed: int | None = None,
                      adapter_init: str = "base"):
    """The inflated UNet (trainable parameters in fp32) and the adapter to tune: the model's base
    adapter (``adapter_init`` base, when it ships one), a given folder/file, or a fresh zero-headed one.

    With ``seed``, the new temporal layers and a fresh adapter are initialised from it (the global
    RNG is left as it was), so a tune is reproducible from its --seed.
    """
    with seeded(seed) if seed is not None else contextlib.nullcontext():
        unet = inflate_unet(comps.unet)
        adapter = None
        if with_adapter:
            adapter = resolve_adapter(adapter_init, comps, torch.device("cpu"), "--adapter-init")[0]
            adapter = adapter.train() if adapter is not None else ContextAdapter(config_for_unet(unet))
    if checkpointing:
        unet.enable_gradient_checkpointing()
    for p in mark_trainable(unet).values():
        p.data = p.data.float()
    if adapter is not None:
        adapter.to(next(unet.parameters()).device)
    return unet, adapter


def _caption(frames, opts: TuneOptions) -> str:
    from ..captioning import caption_frames

    return caption_frames(frames, model_id=opts.caption_model, device=str(resolve_device(opts.device)))


def autocast_for(device: torch.device, dtype: torch.dtype):
    """Mixed precision on CUDA for half dtypes (trainable tensors stay fp32); None elsewhere."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return torch.autocast("cuda", dtype=dtype)
    return None


def _manifest(opts, comps, clip, prompt, size, adapter, x0, timings, device, dtype, losses) -> dict:
    import diffusers
    import transformers

    share = None
    if adapter is not None:
        with contextlib.suppress(Exception):
            share = adapter_flop_share(adapter, comps.unet, tuple(x0.shape[1:]), 77, len(x0))
    timings["peak_gib"] = peak_memory_gib(device)
    return {
        "model": comps.model_id,
        "prediction_type": comps.prediction_type,
        "source_video": str(Path(opts.video).resolve()),
        "source_sha256": sha256_file(opts.video) if Path(opts.video).is_file() else None,
        "source_prompt": prompt,
        "frames": int(len(x0)), "stride": opts.stride, "start": opts.start,
        "width": size[0], "height": size[1], "fps": clip.fps,
        "steps": opts.steps, "lr": opts.lr, "seed": opts.seed,
        "adapter_lr": opts.adapter_lr if adapter is not None else None,
        "adapter_input": opts.adapter_input if adapter is not None else None,
        "adapter_init": describe_adapter(opts.adapter_init, comps) if adapter is not None else None,
        "checkpointing": opts.checkpointing, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "adapter": adapter is not None,
        "adapter_config": adapter.config if adapter is not None else None,
        "adapter_parameters": count_parameters(adapter) if adapter is not None else 0,
        "adapter_flop_share": share,
        "final_loss": losses[-1] if losses else None,
        "loss_curve": losses,
        "files": {k: v for k, v in FILES.items() if k != "adapter" or adapter is not None},
        "versions": {"contextedit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "timings": timings,
    }
