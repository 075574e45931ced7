"""Text-to-image with the contextual samplers (paper §3.2): plain SD DDIM/DDPM without an adapter,
contextual DDIM/DDPM with r_φ evaluated on x̂0 and the prompt when one is given."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from ..device import cpu_generator, oom_guard, peak_memory_gib, resolve_device, resolve_dtype
from ..errors import UsageError
from ..fileio import atomic_path, write_json
from ..models.loading import Components, load_components
from ..progress import ProgressFactory, silent
from ..runs import check_new_output, output_name
from ..schedulers import ContextualDDIMScheduler, ContextualDDPMScheduler
from .. import video as vio
from ..defaults import GENERATE_DEFAULTS
from .common import RuntimeOptions, fill_defaults, check_at_least_one, check_choice, check_guidance, check_prompts, decode_latents, encode_prompts
from .adapters import check_adapter_spec, resolve_adapter
from .loop import Denoiser, context_for, sample

SAMPLERS = {"ddim": ContextualDDIMScheduler, "ddpm": ContextualDDPMScheduler}


@dataclass
class GenerateOptions(RuntimeOptions):
    prompts: list[str]
    n: int = 1
    sampler: str = "ddim"
    steps: int | None = None            # default: the model's recommendation, else GENERATE_DEFAULTS
    guidance: float | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    adapter: str | None = None         # base (the model's own, if any), none, or a file/folder; default: the model's recommendation, else base
    grid: bool = False
    out: str | None = None

    def validate(self) -> None:
        self.prompts = check_prompts(self.prompts, "pass --prompt TEXT (repeatable)")
        check_at_least_one(self, "n")
        if self.steps is not None:
            check_at_least_one(self, "steps")
        check_choice("--sampler", self.sampler, SAMPLERS)
        if self.guidance is not None:
            check_guidance(self.guidance)
        if self.width is not None or self.height is not None:
            if self.width is None or self.height is None:
                raise UsageError("give both --width and --height, or neither")
            vio.check_size(self.width, self.height)
        check_adapter_spec(self.adapter)


@dataclass
class GenerateResult:
    out_dir: Path
    files: list[Path]
    record: dict = field(default_factory=dict)


def generate(opts: GenerateOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> GenerateResult:
    opts.validate()
    out_dir = Path(opts.out) if opts.out else Path("outputs/generate") / datetime.now().strftime("%Y%m%d-%H%M%S")
    names = [output_name(p, opts.seed + k, "png") for p in opts.prompts for k in range(opts.n)]
    if len(set(names)) < len(names):
        raise UsageError("two prompts give the same file name; remove the duplicate --prompt")
    for name in names + (["grid.png"] if opts.grid else []):
        check_new_output(out_dir / name, opts.overwrite)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    t0 = time.perf_counter()
    comps = comps or load_components(opts.model, device, dtype)
    fill_defaults(opts, "generate", GENERATE_DEFAULTS, comps.extra.get("defaults"))
    adapter, unet_sd, meta, adapter_source = resolve_adapter(opts.adapter, comps, device)
    if meta.get("model") and meta["model"] != comps.model_id:
        raise UsageError(f"adapter {opts.adapter} was trained on {meta['model']!r}, not {comps.model_id!r}; pass --model {meta['model']}")
    if unet_sd:
        comps.unet.load_state_dict({k: v.to(device, dtype) for k, v in unet_sd.items()}, strict=False)
    width, height = (opts.width, opts.height) if opts.width else (comps.native_size, comps.native_size)
    scheduler = SAMPLERS[opts.sampler].from_config(comps.scheduler_config)
    uncond = encode_prompts(comps.tokenizer, comps.text_encoder, [opts.negative_prompt or ""])
    shape = (1, comps.unet.config.in_channels, height // comps.vae_scale_factor, width // comps.vae_scale_factor)
    images, entries, times = [], [], []
    with oom_guard(device, "generation"):
        for prompt in opts.prompts:
            text = encode_prompts(comps.tokenizer, comps.text_encoder, [prompt])
            context = context_for(adapter, None, text, 1)
            for k in range(opts.n):
                t1 = time.perf_counter()
                seed = opts.seed + k
                generator = cpu_generator(seed)
                scheduler.set_timesteps(opts.steps, device=device)
                latents = initial_latents(shape, generator, device, dtype) * scheduler.init_noise_sigma
                with progress(f"{prompt[:40]} (seed {seed})", opts.steps) as advance:
                    latents = sample(scheduler, Denoiser(comps.unet, text, uncond, opts.guidance), latents,
                                     context=context, generator=generator, callback=lambda **_: advance())
                image = vio.to_frames(decode_latents(comps.vae, latents))[0]
                name = output_name(prompt, seed, "png")
                _write_png(image, out_dir / name, exclusive=not opts.overwrite)
                images.append(image)
                times.append(time.perf_counter() - t1)
                entries.append({"prompt": prompt, "seed": seed, "file": name, "seconds": times[-1]})
    files = [out_dir / e["file"] for e in entries]
    if opts.grid:
        files.append(_write_png(make_grid(images, rows=len(opts.prompts)), out_dir / "grid.png", exclusive=not opts.overwrite))
    record = {
        "model": comps.model_id, "images": entries,
        "settings": {"sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance,
                     "negative_prompt": opts.negative_prompt, "width": width, "height": height, "n": opts.n,
                     "adapter": adapter_source, "seed": opts.seed,
                     "device": str(device), "dtype": str(dtype).replace("torch.", "")},
        "timings": {"load_s": t1 - t0 if entries else None, "seconds_per_image": sum(times) / max(len(times), 1),
                    "peak_gib": peak_memory_gib(device)},
    }
    write_json(out_dir / "generate.json", record)
    return GenerateResult(out_dir=out_dir, files=files, record=record)


def initial_latents(shape, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """x_T drawn as diffusers' randn_tensor draws it with a CPU generator."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def make_grid(images: list[np.ndarray], rows: int) -> np.ndarray:
    cols = math.ceil(len(images) / rows)
    h, w = images[0].shape[:2]
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return grid


def _write_png(image: np.ndarray, path: Path, exclusive: bool = False) -> Path:
    from PIL import Image

    with atomic_path(path, exclusive=exclusive) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path
