"""Editing a tuned run (DESIGN §5.5–5.6): one contextual DDIM inversion, then one guided, fused,
contextual sampling per target prompt, decoded and written as videos with an ``edits.json``."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..attention.fusion import FusionStore, fuse_attention, record_attention
from ..device import oom_guard, peak_memory_gib, resolve_device, resolve_dtype
from ..errors import UsageError
from ..fileio import load_safetensors, write_json
from ..models.adapter import ContextAdapter
from ..models.inflate import inflate_unet, load_tuned
from ..models.loading import Components, load_components
from ..progress import ProgressFactory, silent
from ..runs import check_new_output, latest_run, load_manifest, run_file, slugify
from ..schedulers import ContextualDDIMScheduler
from .. import video as vio
from .common import (RuntimeOptions, check_at_least_one, check_choice, check_guidance, check_prompt, check_prompts,
                     decode_latents, encode_prompts, token_ids)
from .loop import Denoiser, invert, sample

FORMATS = ("mp4", "gif", "frames")


@dataclass
class EditOptions(RuntimeOptions):
    prompts: list[str]
    run: str | None = None
    source_prompt: str | None = None
    steps: int = 20
    guidance: float = 7.5
    fusion_start: float = 0.5
    fusion: bool = True
    adapter: bool = True
    out: str | None = None
    format: str = "mp4"
    side_by_side: bool = False

    def validate(self) -> None:
        self.prompts = check_prompts(self.prompts, "pass --prompt TEXT (repeatable) or --prompts-file FILE")
        if self.source_prompt is not None:
            self.source_prompt = check_prompt(self.source_prompt, "--source-prompt")
        check_at_least_one(self, "steps")
        check_guidance(self.guidance)
        if not (math.isfinite(self.fusion_start) and 0.0 <= self.fusion_start <= 1.0):
            raise UsageError(f"--fusion-start must be between 0 and 1 (got {self.fusion_start}); 0.5 fuses t in [0.5T, T]")
        check_choice("--format", self.format, FORMATS)


@dataclass
class EditResult:
    out_dir: Path
    files: list[Path]
    record: dict = field(default_factory=dict)


def fused_steps(steps: int, fusion_start: float) -> int:
    """Sampling steps i < n are fused: t ∈ [fusion_start·T, T], the noisy first part of sampling."""
    return int(round((1.0 - fusion_start) * steps))


def edit(opts: EditOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> EditResult:
    opts.validate()
    run_dir = Path(opts.run) if opts.run else latest_run()
    manifest = load_manifest(run_dir)
    if opts.model and opts.model != manifest["model"]:
        raise UsageError(f"run {run_dir} was tuned on {manifest['model']!r}, not --model {opts.model!r}; drop --model or tune again on that model")
    out_dir = Path(opts.out) if opts.out else run_dir / "edits"
    names = [_output_name(p, opts.seed, opts.format) for p in opts.prompts]
    if len(set(names)) < len(names):
        raise UsageError("two target prompts give the same output name; remove the duplicate --prompt")
    for name in names:
        check_new_output(out_dir / name, opts.overwrite)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    x0 = load_safetensors(run_file(run_dir, manifest, "latents"))["latents"]
    tuned = load_safetensors(run_file(run_dir, manifest, "tuned"))
    adapter_sd = load_safetensors(run_file(run_dir, manifest, "adapter")) if manifest.get("adapter") and opts.adapter else None

    t0 = time.perf_counter()
    comps = comps or load_components(manifest["model"], device, dtype)
    unet = load_tuned(inflate_unet(comps.unet), tuned)
    adapter = None
    if adapter_sd is not None:
        adapter = ContextAdapter.from_config(manifest["adapter_config"])
        adapter.load_state_dict(adapter_sd)
        adapter.to(device).eval()
    torch.manual_seed(opts.seed)
    x0 = x0.to(device, dtype)
    frames = x0.shape[0]
    source_prompt = opts.source_prompt or manifest["source_prompt"]
    encode = lambda ps: encode_prompts(comps.tokenizer, comps.text_encoder, ps)  # noqa: E731
    src_text, uncond = encode([source_prompt]), encode([""])
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(opts.steps, device=device)
    n_fused = fused_steps(opts.steps, opts.fusion_start) if opts.fusion else 0
    store = FusionStore()
    timings = {"load_s": time.perf_counter() - t0}

    with oom_guard(device, "editing"):
        t1 = time.perf_counter()
        with progress("inverting", opts.steps) as advance:
            x_T = invert_source(unet, scheduler, x0, src_text, adapter=adapter, store=store, n_fused=n_fused,
                                callback=lambda **_: advance())
        timings["inversion_s"] = time.perf_counter() - t1
        source_pixels = None
        files, outputs, per_prompt = [], [], []
        for prompt, name in zip(opts.prompts, names):
            t2 = time.perf_counter()
            text = encode([prompt])
            store.set_alignment(token_ids(comps.tokenizer, [source_prompt])[0], token_ids(comps.tokenizer, [prompt])[0])
            with progress(f"editing: {prompt[:40]}", opts.steps) as advance:
                latents = sample_edit(unet, scheduler, x_T, text, uncond, opts.guidance, adapter=adapter, store=store,
                                      n_fused=n_fused, callback=lambda **_: advance())
            pixels = vio.to_frames(decode_latents(comps.vae, latents))
            if opts.side_by_side:
                if source_pixels is None:
                    source_pixels = vio.to_frames(decode_latents(comps.vae, x0))
                pixels = vio.side_by_side(source_pixels, pixels)
            path = vio.write_video(pixels, out_dir / name, manifest["fps"], fmt=opts.format)
            per_prompt.append(time.perf_counter() - t2)
            files.append(path)
            outputs.append({"prompt": prompt, "file": name, "seed": opts.seed, "sampling_s": per_prompt[-1]})
    timings.update(sampling_s_per_prompt=per_prompt, fusion_store_mib=store.nbytes / 2**20,
                   peak_gib=peak_memory_gib(device))
    record_doc = {
        "run": str(run_dir.resolve()), "model": manifest["model"], "source_prompt": source_prompt,
        "settings": {"steps": opts.steps, "guidance": opts.guidance, "fusion": opts.fusion,
                     "fusion_start": opts.fusion_start, "fused_steps": n_fused, "adapter": adapter is not None,
                     "format": opts.format, "side_by_side": opts.side_by_side, "seed": opts.seed,
                     "device": str(device), "dtype": str(dtype).replace("torch.", "")},
        "frames": frames, "width": manifest["width"], "height": manifest["height"], "fps": manifest["fps"],
        "outputs": outputs, "timings": timings,
    }
    _merge_record(out_dir / "edits.json", record_doc)
    return EditResult(out_dir=out_dir, files=files, record=record_doc)


def invert_source(unet, scheduler, x0: torch.Tensor, source_text: torch.Tensor, *, adapter=None,
                  store: FusionStore | None = None, n_fused: int = 0, callback=None) -> torch.Tensor:
    """Contextual DDIM inversion of the source latents x0 (frames as batch) → x_T.

    The last ``n_fused`` inversion steps (the noisy ones) record the source attention in ``store``.
    """
    steps, frames = len(scheduler.timesteps), x0.shape[0]
    record = _window(steps - n_fused, lambda j: record_attention(unet, store, step=j)) if store is not None else None
    return invert(scheduler, Denoiser(unet, source_text, num_frames=frames), x0,
                  context=_context(adapter, x0, source_text, frames, fixed=True), step_context=record, callback=callback)


def sample_edit(unet, scheduler, x_T: torch.Tensor, text: torch.Tensor, uncond: torch.Tensor, guidance: float, *,
                adapter=None, store: FusionStore | None = None, n_fused: int = 0, callback=None) -> torch.Tensor:
    """Guided contextual DDIM sampling from x_T with the target text, the source attention fused in
    for the first ``n_fused`` steps (``store`` must be aligned to this prompt: ``set_alignment``)."""
    steps, frames = len(scheduler.timesteps), x_T.shape[0]
    # Sampling step i undoes inversion step T−1−i: fuse with what that step recorded.
    fuse = _window(0, lambda i: fuse_attention(unet, store, step=steps - 1 - i), end=n_fused) if store is not None else None
    return sample(scheduler, Denoiser(unet, text, uncond, guidance, num_frames=frames), x_T.clone(),
                  context=_context(adapter, None, text, frames), step_context=fuse, callback=callback)


def _window(start: int, scope, end: int | None = None):
    """A step_context that applies ``scope(i)`` for steps start ≤ i < end, and nothing elsewhere."""
    def step_context(i: int, t: int):
        inside = i >= start and (end is None or i < end)
        return scope(i) if inside else contextlib.nullcontext()
    return step_context


def _context(adapter, x0, text, frames, fixed: bool = False):
    """r_φ as the schedulers want it: on the true source latents (inversion) or on x̂0 (sampling)."""
    if adapter is None:
        return None

    def context(x0_hat: torch.Tensor, t: int) -> torch.Tensor:
        x = x0 if fixed else x0_hat
        r = adapter(x.float(), text.float(), torch.tensor([t], device=x.device), num_frames=frames)
        return r.to(x0_hat.dtype)
    return context


def _output_name(prompt: str, seed: int, fmt: str) -> str:
    stem = f"{slugify(prompt)}-s{seed}"
    return stem if fmt == "frames" else f"{stem}.{fmt}"


def _merge_record(path: Path, doc: dict) -> None:
    """edits.json keeps earlier outputs in the folder: new entries replace those with the same file."""
    from ..fileio import read_json

    if path.is_file():
        with contextlib.suppress(Exception):
            old = read_json(path)
            kept = [o for o in old.get("outputs", []) if o["file"] not in {n["file"] for n in doc["outputs"]}]
            doc = {**doc, "outputs": kept + doc["outputs"]}
    write_json(path, doc)
