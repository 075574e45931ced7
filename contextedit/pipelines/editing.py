"""Editing in memory (docs/concepts/design.md §5.5–5.6): one source pass (contextual DDIM inversion, made to hold
under guidance as ``inversion`` says), then one guided, fused, contextual sampling per target
prompt with Prompt-to-Prompt control and blend masks. :func:`edit_clip` yields each prompt's
frames as soon as they are decoded; nothing here writes files."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..attention.fusion import FusionPlan, FusionStore, fuse_attention
from ..attention.regions import OUTSIDE, CorePinned, RegionMask, ShrinkingPin, applied
from ..device import oom_guard
from ..fileio import load_safetensors, save_safetensors
from ..progress import ProgressFactory, silent
from ..schedulers import ContextualDDIMScheduler
from ..video import to_frames
from .common import decode_latents, encode_text, placement, token_ids
from .edit_options import EditSettings, parse_fusion_layers
from .inversion_modes import mode
from .inversion import Recording, SourcePass, ddim_inversion, guided_inversion, null_text_optimisation, replay_source
from .loop import Denoiser, context_for, sample
from .source_branch import LiveBranch, LiveDenoiser, choose_source, free_bytes, store_bytes
from .background import RegionalOffsets, kept_only, renoised
from .composite import composite
from .prompt_control import PromptControl, assign_regions, prompt_control
from .windows import WindowBlender, window_plan


@dataclass
class EditedPrompt:
    """One target prompt's edit: the frames (F, H, W, 3) uint8 and what was used to make it."""

    prompt: str
    frames: np.ndarray
    seconds: float
    guidance: float
    control: dict


@dataclass
class NullTextCache:
    """Null-text embeddings by key: in memory, and in ``folder`` (safetensors) when given."""

    memory: dict = field(default_factory=dict)
    folder: Path | None = None

    def _file(self, key: str) -> Path | None:
        return None if self.folder is None else Path(self.folder) / f"null-text-{key}.safetensors"

    def get(self, key: str) -> list[torch.Tensor] | None:
        if key in self.memory:
            return self.memory[key]
        file = self._file(key)
        if file is not None and file.is_file():
            stored = load_safetensors(file)
            self.memory[key] = [stored[f"step{i}"] for i in range(len(stored))]
            return self.memory[key]
        return None

    def put(self, key: str, null: list[torch.Tensor]) -> None:
        self.memory[key] = [n.detach().float().cpu() for n in null]
        file = self._file(key)
        if file is not None:
            save_safetensors({f"step{i}": n for i, n in enumerate(self.memory[key])}, file)


def fused_steps(steps: int, fraction: float) -> int:
    """Sampling steps i < n are fused: the first ``fraction`` of them, the noisy end (t near T)."""
    return int(round(fraction * steps))


def edit_clip(comps, unet, adapter, latents: torch.Tensor, source_prompt: str, prompts: list[str], opts: EditSettings, *,
              mask: torch.Tensor | None = None, cache: NullTextCache | None = None, timings: dict | None = None,
              progress: ProgressFactory = silent, structure=None,
              source_frames: Callable[[], np.ndarray] | None = None) -> Iterator[EditedPrompt]:
    """Invert ``latents`` (F, C, h, w) with ``source_prompt``, then sample each target prompt.

    A clip longer than ``opts.window`` goes window by window (:mod:`.windows`): each window is
    inverted once and sampled for every prompt, its latents blended into the clip's, and the
    clips are decoded at the end; one window at a time holds memory. A clip that fits is one
    window, and each prompt is yielded as soon as it is decoded. ``structure`` (a
    :class:`~.structure.StructureControl`) adds its ControlNet's residuals to every UNet call of
    the inversion and the sampling, window by window. ``source_frames`` gives the clip's own
    frames (F, H, W, 3) uint8, read only when an edit composites: the kept region's pixels are
    pasted from them, not from the VAE round trip of ``latents`` (which rounds a square's corners
    on `tiny`); without them, or at another size, the latents are decoded."""
    device, dtype = placement(comps)
    encode = lambda ps: encode_text(comps, ps)  # noqa: E731
    src_text, uncond = encode([source_prompt]), encode([""])
    texts = {p: encode([p]) for p in prompts}
    src_ids = token_ids(comps.tokenizer, [source_prompt])[0]
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(opts.steps, device=device)
    plan = window_plan(latents.shape[0], opts.window, opts.overlap)
    single = len(plan) == 1
    timings = timings if timings is not None else {}
    timings.update(windows=len(plan), inversion_s=0.0, fusion_store_mib=0.0)
    live = _source_branch(unet, opts, max(len(idx) for idx in plan), tuple(latents.shape[-2:]), dtype, device, timings)
    seconds, controls, blenders, kept = dict.fromkeys(prompts, 0.0), {}, {}, {}
    original = _originals(comps, latents, source_frames)
    with oom_guard(device, "editing"):
        for k, idx in enumerate(plan):
            scope = structure.window(unet, idx) if structure is not None else contextlib.nullcontext()
            with scope:  # the ControlNet's residuals for this window's frames, inversion and sampling alike
                x0 = latents[idx].to(device, dtype)
                t1 = time.perf_counter()
                source = prepare_source(unet, scheduler, x0, src_text, uncond, opts, adapter=adapter, cache=cache,
                                        source_prompt=source_prompt, progress=progress,
                                        tag="" if single else f"window {idx[1]}+{len(idx)}", live=live)
                timings["inversion_s"] += time.perf_counter() - t1
                for key, value in source.seconds.items():
                    timings[key] = timings.get(key, 0.0) + value
                label = "" if single else f" [{k + 1}/{len(plan)}]"
                for prompt in prompts:
                    t2 = time.perf_counter()

                    def control_for(text_prompt: str) -> PromptControl:
                        control = prompt_control(comps.tokenizer, src_ids, text_prompt, opts, tuple(x0.shape[-2:]),
                                                 None if mask is None else mask[idx], source_prompt=source_prompt,
                                                 strict=text_prompt == prompt)
                        return assign_regions(control, unet, scheduler, source, src_text, encode, opts, x0.shape[0])

                    def sample_prompt(text_prompt: str, what: str, control: PromptControl | None = None,
                                      mixed: bool = False):
                        control = control if control is not None else control_for(text_prompt)
                        text, negative, sampled = _pass_prompt(control, opts, text_prompt, texts, encode, src_text,
                                                               uncond, mixed=mixed)
                        with progress(f"editing: {what[:40]}{label}", opts.steps) as advance:
                            out = sample_edit(unet, scheduler, source, text, negative, opts, sampled, adapter=adapter,
                                              callback=lambda _: advance())
                        if source.store is not None:
                            timings["fusion_store_mib"] = max(timings["fusion_store_mib"], source.store.nbytes / 2**20)
                        return out, control

                    control = controls[prompt] = control_for(prompt)
                    if single and isinstance(control.blend, RegionMask) and control.blend.mixed:
                        frames = _by_region(control, source_prompt, sample_prompt, comps, original, opts)
                        yield _edited(prompt, frames, time.perf_counter() - t2, control, opts, comps, src_ids)
                        continue
                    out, control = sample_prompt(prompt, prompt, control)
                    if single:
                        frames = to_frames(decode_latents(comps.vae, out))
                        frames = _composited(frames, original, control, opts)
                        yield _edited(prompt, frames, time.perf_counter() - t2, control, opts, comps, src_ids)
                    else:
                        blenders.setdefault(prompt, WindowBlender(plan, opts.overlap, out)).add(k, out)
                        if _composites(control, opts):  # the kept region, window by window like the latents
                            region = control.blend.mask()
                            kept.setdefault(prompt, WindowBlender(plan, opts.overlap, region)).add(k, region)
                        seconds[prompt] += time.perf_counter() - t2
                source = None  # its fusion store: one window's at a time
        for prompt, blender in blenders.items():
            t3 = time.perf_counter()
            frames = to_frames(decode_latents(comps.vae, blender.result()))
            if prompt in kept:
                frames = composite(frames, original(), 1 - (kept[prompt].result() > 0.5).float(), opts.composite_seam)
            yield _edited(prompt, frames, seconds[prompt] + time.perf_counter() - t3, controls[prompt], opts, comps, src_ids)


def _source_branch(unet, opts: EditSettings, frames: int, latent_hw, dtype, device, timings: dict) -> bool:
    """Whether the source branch runs live (``opts.source``; auto decides by the store's size, as
    estimated for the largest window, against the free memory); ``timings`` records the choice."""
    record = recording_for(opts, opts.steps)
    needed = store_bytes(unet, frames, latent_hw, len(record.self_steps), len(record.cross_steps), dtype)
    chosen = choose_source(opts.source, needed, free_bytes(device) if opts.source == "auto" else 0)
    timings.update(source=chosen, fusion_store_estimate_mib=needed / 2**20)
    return chosen == "live"


def _by_region(control: PromptControl, source_prompt: str, sample_prompt, comps, original,
               opts: EditSettings) -> np.ndarray:
    """A prompt whose changes edit objects *and* the rest of the frame ("a blue circle … on a white
    background"), one pass per side, each with its own settings (VideoGrain edits per instance):
    the rest of the frame with the objects kept, then the objects on the old background; the
    objects' region of the second pass is composited over the first (:mod:`.composite`)."""
    outer = applied(source_prompt, [g for g in control.groups if g.side == OUTSIDE])
    inner = applied(source_prompt, [g for g in control.groups if g.side != OUTSIDE])
    out_latents, out_control = sample_prompt(outer, f"{outer} (rest of the frame)", mixed=True)
    frames = _composited(to_frames(decode_latents(comps.vae, out_latents)), original, out_control, opts)
    in_latents, in_control = sample_prompt(inner, f"{inner} (objects)")
    objects = to_frames(decode_latents(comps.vae, in_latents))
    region = in_control.blend.mask() if in_control.blend is not None else None
    return frames if region is None else composite(frames, objects, region, opts.composite_seam)


def _pass_prompt(control: PromptControl, opts: EditSettings, prompt: str, texts: dict, encode, src_text, uncond, *,
                 mixed: bool = False):
    """The text a pass samples with, its negative and the control it samples under. A background
    edit with ``background_prompt`` words samples the background's words alone (``background_negative``
    words: guided from their source counterpart); its word swap and reweighting address the full
    prompt's tokens, so they are left out of that pass. ``mixed``: the background pass of a
    two-change prompt, whose negative is ``mixed_background_negative`` where set."""
    choice = opts.mixed_background_negative if mixed and opts.mixed_background_negative else opts.background_negative
    source_negative = _source_negative(control, opts, choice)
    negative = src_text if mode(opts.inversion).source_negative or source_negative else uncond
    if opts.background_prompt == "words" and control.background_prompt is not None:
        if source_negative and choice == "words" and not mode(opts.inversion).source_negative:
            negative = encode([control.background_source])
        return encode([control.background_prompt]), negative, dataclasses.replace(control, edit=None, aligned=False)
    return (texts[prompt] if prompt in texts else encode([prompt])), negative, control


def _source_negative(control: PromptControl, opts: EditSettings, choice: str) -> bool:
    """Guide OUTSIDE regions away from the source prompt (ε_src + g·(ε_tgt − ε_src)): the difference
    of the prompts is what changes there; with the empty prompt as the negative the tuned model
    redraws its clip's own background (measured: black → white stays dark)."""
    return control.outside is not None and choice in ("source", "words") \
        and mode(opts.inversion).region_negative


def _composites(control: PromptControl, opts: EditSettings) -> bool:
    return opts.composite != "off" and control.blend is not None and (opts.composite == "on" or control.outside is not None) \
        and control.blend.mask() is not None


def _originals(comps, latents: torch.Tensor, source_frames) -> Callable[[], np.ndarray]:
    """The clip's frames the composites paste from, read (or decoded) once, on first use."""

    @functools.cache
    def original() -> np.ndarray:
        frames = source_frames() if source_frames is not None else None
        size = tuple(s * comps.vae_scale_factor for s in latents.shape[-2:])
        if frames is None or len(frames) != latents.shape[0] or tuple(frames.shape[1:3]) != size:
            frames = to_frames(decode_latents(comps.vae, latents))
        return frames
    return original


def _composited(frames: np.ndarray, original, control: PromptControl, opts: EditSettings) -> np.ndarray:
    """The kept region's pixels from the source (:mod:`.composite`), for edits with an OUTSIDE region."""
    if not _composites(control, opts):
        return frames
    return composite(frames, original(), 1 - control.blend.mask(), opts.composite_seam)


def _edited(prompt, frames, seconds, control, opts, comps, src_ids) -> EditedPrompt:
    return EditedPrompt(prompt=prompt, frames=frames, seconds=seconds, guidance=control.setting(opts, "guidance"),
                        control=control.describe(comps.tokenizer, src_ids))


def recording_for(opts: EditSettings, steps: int) -> Recording:
    """The sampling steps whose source attention the edit fuses. Self-attention is kept inside its
    window only; blend masks read the source's cross-attention at every step, cross-attention
    fusion inside its window."""
    masks = opts.blend or bool(opts.blend_words)
    return Recording(self_steps=frozenset(range(fused_steps(steps, opts.self_fusion))),
                     cross_steps=frozenset(range(steps if masks else fused_steps(steps, opts.cross_fusion))))


def prepare_source(unet, scheduler, x0, src_text, uncond, opts: EditSettings, *, adapter=None, cache=None,
                   source_prompt: str = "", progress: ProgressFactory = silent, tag: str = "",
                   live: bool | None = None) -> SourcePass:
    """Invert the source as ``opts.inversion`` says and record the attention the edits fuse
    (``live``: record nothing; sampling runs the source branch in its own batch, :mod:`.source_branch`).
    ``tag`` tells one window's null-text cache entries from another's. ``live`` None: as
    ``opts.source`` says (auto is decided by :func:`edit_clip`, which knows the window)."""
    live = opts.source == "live" if live is None else live
    steps = len(scheduler.timesteps)
    store = FusionStore()
    record = recording_for(opts, steps)
    how = mode(opts.inversion)
    replayed = how.replay
    seconds = {}
    one_pass = how.one_pass and not how.null_text
    with progress("inverting" + (" (guided)" if one_pass else ""), steps) as advance:
        if one_pass:
            levels, outputs = guided_inversion(unet, scheduler, x0, src_text, uncond, adapter=adapter,
                                               store=None if live else store, record=record, callback=lambda _: advance())
        else:
            levels = ddim_inversion(unet, scheduler, x0, src_text, adapter=adapter,
                                    store=None if replayed or live else store, record=record, callback=lambda _: advance())
    source = SourcePass(levels=levels, store=None if live else store, seconds=seconds)
    if how.null_text:
        t = time.perf_counter()
        source.null_text, optimised = _null_text(unet, scheduler, levels, src_text, uncond, opts, adapter, cache,
                                                 source_prompt, progress, tag)
        seconds["null_text_s" if optimised else "null_text_cached_s"] = time.perf_counter() - t
    if live:
        source.branch = LiveBranch(levels, src_text, (source.null_text or uncond) if replayed else None, record,
                                   scheduler.timesteps, x0.shape[0])
        if how.offsets:  # one pass: filled already; else by each sampling step's source part, no replay
            source.outputs = dict(enumerate(outputs)) if one_pass else {}
            source.context = context_for(adapter, None, src_text, x0.shape[0], uncond=uncond, scale=opts.context_guidance)
    elif replayed:
        if not one_pass:  # one pass has the source branch's outputs already
            t = time.perf_counter()
            with progress("source branch", steps) as advance:
                outputs = replay_source(unet, scheduler, levels, src_text, source.null_text or uncond, store=store,
                                        record=record, callback=lambda _: advance())
            seconds["replay_s"] = time.perf_counter() - t
        if how.offsets:
            source.outputs = outputs
            source.context = context_for(adapter, None, src_text, x0.shape[0], uncond=uncond, scale=opts.context_guidance)
    return source


def _null_text(unet, scheduler, levels, src_text, uncond, opts, adapter, cache, source_prompt, progress, tag=""):
    """Null-text embeddings, cached (:class:`NullTextCache`): N prompts (and later edits) pay once.
    Returns them and whether they were optimised now (False: read from the cache)."""
    parts = [source_prompt, opts.steps, opts.guidance, opts.null_text_steps, adapter is not None, str(levels[0].dtype)]
    if opts.controlnet is not None:  # the ControlNet's residuals change every level the embeddings are fitted to
        parts += [opts.control, opts.controlnet, opts.control_scale, opts.depth_model]
    key = hashlib.sha256(json.dumps(parts + ([tag] if tag else [])).encode()).hexdigest()[:12]
    stored = cache.get(key) if cache is not None else None
    if stored is not None:
        return [n.to(uncond.device, uncond.dtype) for n in stored], False
    with progress("null-text", opts.steps) as advance:
        null = null_text_optimisation(unet, scheduler, levels, src_text, uncond, opts.guidance, adapter=adapter,
                                      inner_steps=opts.null_text_steps, callback=lambda _: advance())
    if cache is not None:
        cache.put(key, null)
    return null, True


def sample_edit(unet, scheduler, source: SourcePass, text: torch.Tensor, uncond: torch.Tensor, opts: EditSettings,
                control: PromptControl | None = None, *, adapter=None, callback=None) -> torch.Tensor:
    """Guided contextual DDIM sampling of one target prompt from the inverted source, with the
    source attention fused in (its windows from the noisy end), direct inversion's offsets and
    LocalBlend applied after each step."""
    steps, frames = len(scheduler.timesteps), source.x_T.shape[0]
    control = control or PromptControl()
    # a background edit may take its own window (the source records cross-attention at every step
    # wherever there are masks, and only a masked edit has a background side)
    n_self = fused_steps(steps, opts.self_fusion)
    n_cross = fused_steps(steps, control.setting(opts, "cross_fusion")) if control.aligned else 0
    guidance, offset_inside = control.setting(opts, "guidance"), control.setting(opts, "offset_inside")
    outside = control.outside  # fixed before sampling: the OUTSIDE groups' regions take the background settings
    offsets = source.offsets(scheduler, guidance)
    x_T = source.x_T.clone()
    if outside is not None:
        outside = outside.to(x_T.device, x_T.dtype)
        g_out = opts.background_guidance if opts.background_guidance is not None else opts.guidance
        g_in = opts.guidance
        guidance = g_in + (g_out - g_in) * outside          # a guidance scale per latent cell
        regional = RegionalOffsets(source.offsets(scheduler, g_in), source.offsets(scheduler, g_out), outside,
                                    offset_inside, opts.background_offset_inside)
        offsets = regional if regional.inner is not None else None
        x_T = renoised(x_T, torch.ones_like(outside) if opts.background_noise_area == "frame" else outside,
                       opts.background_noise, opts.background_seed)
    blend = control.blend
    if outside is not None and opts.background_pin != "object":
        blend = CorePinned(blend) if opts.background_pin == "core" else ShrinkingPin(blend, steps)
    branch = source.branch
    denoiser = (LiveDenoiser if branch is not None else Denoiser)(unet, text, uncond, guidance, num_frames=frames)
    blend_steps = blend_window(steps, opts.blend_stop)
    max_tokens = parse_fusion_layers(opts.fusion_layers, source.x_T.shape[-1] * source.x_T.shape[-2])

    @contextlib.contextmanager
    def step_context(i: int, t: int):
        if source.null_text is not None:
            denoiser.uncond = source.null_text[i]
        if blend is not None:
            blend.begin_step()
        plan = FusionPlan(self_attention=i < n_self, cross_attention=i < n_cross, self_half=opts.self_half,
                          max_tokens=max_tokens, edit=control.edit, blend=blend, guided=denoiser.guided)
        active = plan.self_attention or plan.cross_attention or blend is not None or control.reweights
        if branch is None:
            with fuse_attention(unet, source.store, step=i, plan=plan) if active else contextlib.nullcontext():
                yield
            return
        # live: the source part rides along when this step fuses it, or direct inversion lacks its outputs
        wanted = i in branch.record.self_steps or i in branch.record.cross_steps
        with_source = (active and wanted) or (isinstance(source.outputs, dict) and i not in source.outputs)
        denoiser.parts = branch.inputs(i) if with_source else None
        with branch.scope(unet, i, plan if active else None, with_source=with_source):
            yield
        if with_source and isinstance(source.outputs, dict):
            source.outputs.setdefault(i, tuple(denoiser.source_out.chunk(2)))
        denoiser.parts = denoiser.source_out = None

    local_blend = control.local_blend(opts.local_blend)

    def after_step(i: int, latents: torch.Tensor) -> torch.Tensor:
        mask = blend.mask() if blend is not None else None  # with this step's maps
        if mask is not None:
            mask = mask.to(latents.device, latents.dtype)
        if offsets is not None:
            if outside is not None:
                offset = offsets.at(i, mask)
            else:
                offset = offsets[i]
                if mask is not None and offset_inside != 1:  # the edited region gets part of the correction
                    offset = offset * (1 - mask * (1 - offset_inside))
            latents = latents + offset
        if local_blend and mask is not None and i in blend_steps:  # LocalBlend: outside the mask the latents follow the source
            latents = mask * latents + (1 - mask) * source.level_after(i)
        return latents

    context = context_for(adapter, None, text, frames, uncond=uncond, scale=opts.context_guidance)
    if outside is not None and opts.background_bias == "object":
        context = kept_only(context, outside)
    return sample(scheduler, denoiser, x_T, context=context,
                  step_context=step_context, after_step=after_step, callback=callback)


def blend_window(steps: int, stop: float) -> range:
    """The sampling steps LocalBlend acts on: i < round(stop·T), so the last steps may heal the seam."""
    return range(int(round(stop * steps)))
