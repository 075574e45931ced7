"""Editing a tuned run (DESIGN §5.5–5.6): one source pass (contextual DDIM inversion, made to hold
under guidance as ``--inversion`` says), then one guided, fused, contextual sampling per target
prompt with Prompt-to-Prompt control and blend masks, decoded and written as videos with an
``edits.json``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..attention.fusion import FusionPlan, FusionStore, fuse_attention
from ..device import oom_guard, peak_memory_gib, resolve_device, resolve_dtype
from ..errors import UsageError
from ..fileio import load_safetensors, save_safetensors, write_json
from ..models.adapter import ContextAdapter
from ..models.inflate import inflate_unet, load_tuned
from ..models.loading import Components, load_components
from ..progress import ProgressFactory, silent
from ..runs import check_new_output, latest_run, load_manifest, output_name, run_file
from ..schedulers import ContextualDDIMScheduler
from .. import video as vio
from .common import decode_latents, encode_prompts, token_ids
from .edit_options import FORMATS, EditOptions, parse_fusion_layers
from .inversion import Recording, SourcePass, ddim_inversion, null_text_optimisation, replay_source
from .loop import Denoiser, context_for, sample
from .prompt_control import PromptControl, prompt_control, read_mask

__all__ = ["FORMATS", "EditOptions", "EditResult", "edit", "fused_steps", "prepare_source", "sample_edit"]


@dataclass
class EditResult:
    out_dir: Path
    files: list[Path]
    record: dict = field(default_factory=dict)


def fused_steps(steps: int, fraction: float) -> int:
    """Sampling steps i < n are fused: the first ``fraction`` of them, the noisy end (t near T)."""
    return int(round(fraction * steps))


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
    user_mask = read_mask(opts.mask, manifest["frames"]) if opts.mask else None
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    x0 = load_safetensors(run_file(run_dir, manifest, "latents"))["latents"]
    tuned = load_safetensors(run_file(run_dir, manifest, "tuned"))
    adapter_sd = load_safetensors(run_file(run_dir, manifest, "adapter")) if manifest.get("adapter") and opts.adapter else None

    t0 = time.perf_counter()
    comps = comps or load_components(manifest["model"], device, dtype)
    opts.resolve(comps.extra.get("defaults"))
    unet = load_tuned(inflate_unet(comps.unet), tuned).requires_grad_(False)
    adapter = None
    if adapter_sd is not None:
        adapter = ContextAdapter.from_config(manifest["adapter_config"])
        adapter.load_state_dict(adapter_sd)
        adapter.to(device).eval().requires_grad_(False)
    torch.manual_seed(opts.seed)
    x0 = x0.to(device, dtype)
    frames = x0.shape[0]
    source_prompt = opts.source_prompt or manifest["source_prompt"]
    encode = lambda ps: encode_prompts(comps.tokenizer, comps.text_encoder, ps)  # noqa: E731
    src_text, uncond = encode([source_prompt]), encode([""])
    src_ids = token_ids(comps.tokenizer, [source_prompt])[0]
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(opts.steps, device=device)
    timings = {"load_s": time.perf_counter() - t0}

    with oom_guard(device, "editing"):
        t1 = time.perf_counter()
        source = prepare_source(unet, scheduler, x0, src_text, uncond, opts, adapter=adapter, run_dir=run_dir,
                                source_prompt=source_prompt, progress=progress)
        timings["inversion_s"] = time.perf_counter() - t1
        timings.update(source.seconds)
        source_pixels = None
        files, outputs, per_prompt = [], [], []
        for prompt, name in zip(opts.prompts, names):
            t2 = time.perf_counter()
            text = encode([prompt])
            control = prompt_control(comps.tokenizer, src_ids, prompt, opts, tuple(x0.shape[-2:]), user_mask)
            negative = src_text if opts.inversion == "negative-prompt" else uncond
            with progress(f"editing: {prompt[:40]}", opts.steps) as advance:
                latents = sample_edit(unet, scheduler, source, text, negative, opts, control, adapter=adapter,
                                      callback=lambda **_: advance())
            pixels = vio.to_frames(decode_latents(comps.vae, latents))
            if opts.side_by_side:
                if source_pixels is None:
                    source_pixels = vio.to_frames(decode_latents(comps.vae, x0))
                pixels = vio.side_by_side(source_pixels, pixels)
            path = vio.write_video(pixels, out_dir / name, manifest["fps"], fmt=opts.format, exclusive=not opts.overwrite)
            per_prompt.append(time.perf_counter() - t2)
            files.append(path)
            outputs.append({"prompt": prompt, "file": name, "seed": opts.seed, "sampling_s": per_prompt[-1],
                            "guidance": control.setting(opts, "guidance"),
                            "control": control.describe(comps.tokenizer, src_ids)})
    timings.update(sampling_s_per_prompt=per_prompt, fusion_store_mib=source.store.nbytes / 2**20,
                   peak_gib=peak_memory_gib(device))
    record_doc = {
        "run": str(run_dir.resolve()), "model": manifest["model"], "source_prompt": source_prompt,
        "settings": {**opts.settings(), "adapter": adapter is not None, "device": str(device),
                     "dtype": str(dtype).replace("torch.", "")},
        "frames": frames, "width": manifest["width"], "height": manifest["height"], "fps": manifest["fps"],
        "outputs": outputs, "timings": timings,
    }
    _merge_record(out_dir / "edits.json", record_doc)
    return EditResult(out_dir=out_dir, files=files, record=record_doc)


def prepare_source(unet, scheduler, x0, src_text, uncond, opts: EditOptions, *, adapter=None, run_dir: Path | None = None,
                   source_prompt: str = "", progress: ProgressFactory = silent) -> SourcePass:
    """Invert the source as ``opts.inversion`` says and record the attention the edits fuse."""
    steps = len(scheduler.timesteps)
    store = FusionStore()
    # Self-attention is kept inside its window only; blend masks read the source's cross-attention
    # at every step, cross-attention fusion inside its window.
    masks = opts.blend or bool(opts.blend_words)
    record = Recording(self_steps=frozenset(range(fused_steps(steps, opts.self_fusion))),
                       cross_steps=frozenset(range(steps if masks else fused_steps(steps, opts.cross_fusion))))
    replayed = opts.inversion in ("direct", "null-text")
    seconds = {}
    with progress("inverting", steps) as advance:
        levels = ddim_inversion(unet, scheduler, x0, src_text, adapter=adapter, store=None if replayed else store,
                                record=record, callback=lambda **_: advance())
    source = SourcePass(levels=levels, store=store, seconds=seconds)
    if opts.inversion == "null-text":
        t = time.perf_counter()
        source.null_text, optimised = _null_text(unet, scheduler, levels, src_text, uncond, opts, adapter, run_dir,
                                                 source_prompt, progress)
        seconds["null_text_s" if optimised else "null_text_cached_s"] = time.perf_counter() - t
    if replayed:
        t = time.perf_counter()
        with progress("source branch", steps) as advance:
            outputs = replay_source(unet, scheduler, levels, src_text, source.null_text or uncond, store=store,
                                    record=record, callback=lambda **_: advance())
        if opts.inversion == "direct":
            source.outputs = outputs
            source.context = context_for(adapter, None, src_text, x0.shape[0], uncond=uncond, scale=opts.context_guidance)
        seconds["replay_s"] = time.perf_counter() - t
    return source


def _null_text(unet, scheduler, levels, src_text, uncond, opts, adapter, run_dir, source_prompt, progress):
    """Null-text embeddings, cached in the run folder: N prompts (and later edits) pay once.
    Returns them and whether they were optimised now (False: read from the cache)."""
    key = hashlib.sha256(json.dumps([source_prompt, opts.steps, opts.guidance, opts.null_text_steps, adapter is not None,
                                     str(levels[0].dtype)]).encode()).hexdigest()[:12]
    cache = run_dir / f"null-text-{key}.safetensors" if run_dir is not None else None
    if cache is not None and cache.is_file():
        stored = load_safetensors(cache)
        return [stored[f"step{i}"].to(uncond.device, uncond.dtype) for i in range(len(stored))], False
    with progress("null-text", opts.steps) as advance:
        null = null_text_optimisation(unet, scheduler, levels, src_text, uncond, opts.guidance, adapter=adapter,
                                      inner_steps=opts.null_text_steps, callback=lambda **_: advance())
    if cache is not None:
        save_safetensors({f"step{i}": n.float().cpu() for i, n in enumerate(null)}, cache)
    return null, True


def sample_edit(unet, scheduler, source: SourcePass, text: torch.Tensor, uncond: torch.Tensor, opts: EditOptions,
                control: PromptControl | None = None, *, adapter=None, callback=None) -> torch.Tensor:
    """Guided contextual DDIM sampling of one target prompt from the inverted source, with the
    source attention fused in (its windows from the noisy end), direct inversion's offsets and
    LocalBlend applied after each step."""
    steps, frames = len(scheduler.timesteps), source.x_T.shape[0]
    n_self, n_cross = fused_steps(steps, opts.self_fusion), fused_steps(steps, opts.cross_fusion)
    control = control or PromptControl()
    guidance, offset_inside = control.setting(opts, "guidance"), control.setting(opts, "offset_inside")
    offsets = source.offsets(scheduler, guidance)
    denoiser = Denoiser(unet, text, uncond, guidance, num_frames=frames)
    max_tokens = parse_fusion_layers(opts.fusion_layers, source.x_T.shape[-1] * source.x_T.shape[-2])

    @contextlib.contextmanager
    def step_context(i: int, t: int):
        if source.null_text is not None:
            denoiser.uncond = source.null_text[i]
        if control.blend is not None:
            control.blend.begin_step()
        plan = FusionPlan(self_attention=i < n_self, cross_attention=i < n_cross, self_half=opts.self_half,
                          max_tokens=max_tokens, edit=control.edit, blend=control.blend, guided=denoiser.guided)
        active = plan.self_attention or plan.cross_attention or control.blend is not None or control.reweights
        with fuse_attention(unet, source.store, step=i, plan=plan) if active else contextlib.nullcontext():
            yield

    local_blend = control.local_blend(opts.local_blend)

    def after_step(i: int, latents: torch.Tensor) -> torch.Tensor:
        mask = control.blend.mask() if control.blend is not None else None  # with this step's maps
        if mask is not None:
            mask = mask.to(latents.device, latents.dtype)
        if offsets is not None:
            offset = offsets[i]
            if mask is not None and offset_inside != 1:  # the edited region gets part of the correction
                offset = offset * (1 - mask * (1 - offset_inside))
            latents = latents + offset
        if local_blend and mask is not None:  # LocalBlend: outside the mask the latents follow the source
            latents = mask * latents + (1 - mask) * source.level_after(i)
        return latents

    return sample(scheduler, denoiser, source.x_T.clone(), context=context_for(adapter, None, text, frames, uncond=uncond, scale=opts.context_guidance),
                  step_context=step_context, after_step=after_step, callback=callback)


def _output_name(prompt: str, seed: int, fmt: str) -> str:
    return output_name(prompt, seed, fmt)


def _merge_record(path: Path, doc: dict) -> None:
    """edits.json keeps earlier outputs in the folder: new entries replace those with the same file."""
    from ..fileio import read_json

    if path.is_file():
        with contextlib.suppress(Exception):
            old = read_json(path)
            kept = [o for o in old.get("outputs", []) if o["file"] not in {n["file"] for n in doc["outputs"]}]
            doc = {**doc, "outputs": kept + doc["outputs"]}
    write_json(path, doc)
