"""Performance benchmark at Stable-Diffusion size (issue 10): contextedit against its floor.

Builds SD-1.5-shaped components with random weights from their configs (nothing is downloaded)
and measures, in one run on one device:

1. the floor — the bare 2-D UNet forward at batch = frames and 2 × frames (guidance), a bare
   training step of the parameters tune trains (attn1/attn2 ``to_q``; no inflation, no adapter,
   the same loss, optimiser and checkpointing setting), VAE encode and decode of the clip;
2. contextedit's tune step (inflated UNet + adapter + the real loss and Trainer), with the temporal
   layers where tune places them for the model (``--temporal-layers``; SDXL: one per transformer),
   the placement and the trained parameter count recorded;
3. contextedit's inversion and guided, fused sampling (``invert_source`` / ``sample_edit``);
4. peak memory of tune and edit at several frame counts, each in a fresh subprocess;
5. the adapter's share of the tune step (its forward + backward, timed alone).

    python bench/perf.py --device cpu       # 256×256, 4 frames, T = 2: the ratios anywhere
    python bench/perf.py --device cuda      # 512×512, 8 frames, T = 20, bf16

The ratios are what the targets are stated in (tune ≤ 1.3 × floor step, inversion + sampling
≤ 1.4 × their floor, adapter ≤ 10 % of the tune step); ``bench/results/perf-<device>.json``
holds the figures, its ``ratios`` all of them in one place (with the inversion and source modes
that ran), and BENCHMARKS.md the table. ``bench/gpu.sh`` runs the CUDA presets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch

from contextedit.attention.processors import TemporalAttention
from contextedit.defaults import TEMPORAL_LAYERS
from contextedit.models.inflate import mark_trainable, trainable_parameters
from contextedit.models.loading import Components, load_components
from contextedit.pipelines.common import decode_latents, encode_latents, encode_text, token_ids
from contextedit.pipelines.edit_options import EditSettings
from contextedit.pipelines.editing import fused_steps, prepare_source, sample_edit
from contextedit.pipelines.inversion import INVERSIONS
from contextedit.pipelines.prompt_control import prompt_control
from contextedit.pipelines.training import Batch, Trainer, contextual_loss
from contextedit.pipelines.tuning import autocast_for
from contextedit.pipelines.tuning import TuneSettings, build_video_model
from contextedit.schedulers import ContextualDDIMScheduler, ContextualDDPMScheduler

RESULTS = Path(__file__).parent / "results"
SOURCE = "a jeep driving on a road"
TARGETS = ["a porsche driving on a road", "a red car driving on a snowy road"]

# SD-1.5's configs (unet: 859.5 M parameters; vae: SD's; text: CLIP ViT-L/14's text tower).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512, scaling_factor=0.18215,
)
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
# SDXL-base-1.0's configs (unet: 2.57 B parameters, transformer depth 2 and 10; its second text
# encoder is OpenCLIP bigG's text tower with a projection: the pooled embedding).
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
CLIP_BIGG_TEXT = dict(vocab_size=49408, hidden_size=1280, num_hidden_layers=32, num_attention_heads=20,
                      intermediate_size=5120, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)


@dataclass(frozen=True)
class Preset:
    """What one run measures: clip size, timing repeats and the frame counts of the memory probes."""

    model: str
    dtype: str
    size: int
    frames: int
    steps: int
    repeats: int
    warmup: int
    memory_frames: tuple[int, ...]
    memory_steps: int       # edit probes run this many DDIM steps (the fusion store grows with them)
    prompts: int = 2        # the second prompt measures 'per extra prompt'
    step_repeats: int = 3   # training steps: the median of 3, as one step is what the tune ratio compares
    checkpointing: bool = True  # TuneOptions' default
    inversion: str | None = None  # edit's --inversion (None: its default)
    source: str | None = None     # edit's --source live|stored|auto, where EditSettings has it (None: its default)
    temporal_layers: str | None = None  # tune's --temporal-layers (None: the model family's, as tune resolves it)


PRESETS = {
    "cuda": Preset("sd15-random", "bf16", 512, 8, 20, 5, 2, (8, 16, 24), 20),
    # 2 cores: a 4-frame SD forward takes ~10 s, so T and the repeats are cut; the ratios still
    # compare like with like (the floor uses the same T), and only 8 frames are probed for memory.
    "cpu": Preset("sd15-random", "fp32", 256, 4, 2, 1, 1, (8,), 2),
    "tiny": Preset("tiny-random", "fp32", 64, 2, 2, 1, 1, (2,), 2),
    # SDXL size on 2 cores: a 2-frame forward at 256² takes ~20 s, so one timed step each and one prompt
    "sdxl-cpu": Preset("sdxl-random", "fp32", 256, 2, 2, 1, 0, (2,), 2, prompts=1, step_repeats=1),
    "sdxl-cuda": Preset("sdxl-random", "bf16", 1024, 8, 20, 3, 1, (8, 16), 20),
    "tiny-xl": Preset("tiny-xl-random", "fp32", 64, 2, 2, 1, 1, (2,), 2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SOURCE_MODES = ("live", "stored", "auto")
SDPA_BACKENDS = {"auto": None, "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "cudnn": "CUDNN_ATTENTION", "math": "MATH"}


# -------------------------------------------------------------------------------------------------
# Components and timing
# -------------------------------------------------------------------------------------------------
def build_components(model: str, device: torch.device, dtype: torch.dtype) -> Components:
    """SD-1.5- or SDXL-shaped components with random weights (``sd15-random``, ``sdxl-random``), or
    an embedded tiny model."""
    if model == "sdxl-random":
        return _sdxl_components(device, dtype)
    if model != "sd15-random":
        return load_components(model, device, dtype)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from contextedit.testing.tiny import tiny_scheduler_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()  # its ids fit CLIP-L's vocabulary; no download
    torch.manual_seed(0)
    with torch.device(device):  # initialise in place: 1 B parameters, not through the CPU
        parts = dict(
            unet=UNet2DConditionModel(**SD15_UNET), vae=AutoencoderKL(**SD_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, bos_token_id=tokenizer.bos_token_id,
                                                      eos_token_id=tokenizer.eos_token_id,
                                                      pad_token_id=tokenizer.pad_token_id)),
        )
    for module in parts.values():
        module.requires_grad_(False).eval()
    comps = Components(tokenizer=tokenizer, scheduler_config=tiny_scheduler_config(), model_id=model, **parts)
    return comps.to(device, dtype)


def _sdxl_components(device: torch.device, dtype: torch.dtype) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from contextedit.models.sdxl import add_xl_conditioning
    from contextedit.testing.tiny import sdxl_scheduler_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        parts = dict(unet=UNet2DConditionModel(**SDXL_UNET), vae=AutoencoderKL(**SDXL_VAE),
                     text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, **ids)),
                     text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG_TEXT, **ids)))
    for module in parts.values():
        module.requires_grad_(False).eval()
    comps = Components(tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler_config=sdxl_scheduler_config(),
                       model_id="sdxl-random", **parts)
    add_xl_conditioning(comps.unet, comps.vae_scale_factor)
    return comps.to(device, dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1, warmup: int = 0) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Setup:
    comps: Components
    device: torch.device
    dtype: torch.dtype
    preset: Preset
    x0: torch.Tensor        # (F, 4, h, w) scaled source latents
    pixels: torch.Tensor    # (F, 3, H, W) in [-1, 1]
    text: torch.Tensor      # (1, 77, D) source prompt states
    uncond: torch.Tensor    # (1, 77, D)


def setup(preset: Preset, device: torch.device, frames: int | None = None) -> Setup:
    dtype = DTYPES[preset.dtype]
    comps = build_components(preset.model, device, dtype)
    frames = frames or preset.frames
    pixels = torch.rand(frames, 3, preset.size, preset.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    encode = lambda ps: encode_text(comps, ps)  # noqa: E731
    return Setup(comps, device, dtype, preset, encode_latents(comps.vae, pixels), pixels, encode([SOURCE]), encode([""]))


def _train_step(trainer: Trainer, loss_fn: Callable[[int], torch.Tensor], autocast) -> None:
    """One optimiser step through the real Trainer (loss, backward, AdamW, loss.item())."""
    trainer.run(trainer.step + 1, loss_fn, seed=0, autocast=autocast)


# -------------------------------------------------------------------------------------------------
# 1. The floor: the bare 2-D model
# -------------------------------------------------------------------------------------------------
@torch.no_grad()
def _unet_forward(unet, x: torch.Tensor, text: torch.Tensor, t: int = 500) -> torch.Tensor:
    return unet(x, t, encoder_hidden_states=text.expand(x.shape[0], -1, -1), return_dict=False)[0]


def measure_floor(s: Setup) -> dict:
    """Bare UNet forwards, VAE codec, and the bare training step (which leaves to_q trainable in fp32)."""
    p, unet, x0 = s.preset, s.comps.unet, s.x0
    fwd = {str(b): 1e3 * timed(lambda b=b: _unet_forward(unet, torch.cat([x0] * b), s.text), s.device, p.repeats, p.warmup)
           for b in (1, 2)}
    out = {
        "floor_unet_fwd_ms": {str(len(x0) * int(k)): v for k, v in fwd.items()},
        "floor_vae_encode_ms": 1e3 * timed(lambda: encode_latents(s.comps.vae, s.pixels), s.device, p.repeats),
        "floor_vae_decode_ms": 1e3 * timed(lambda: decode_latents(s.comps.vae, x0), s.device, p.repeats),
    }
    step, out["floor_trained_parameters"] = floor_step(s)
    out["floor_train_step_ms"] = 1e3 * timed(step, s.device, max(p.repeats, p.step_repeats), p.warmup)
    unet.eval()
    return out


def floor_step(s: Setup) -> tuple[Callable[[], None], int]:
    """The bare training step (the 2-D UNet in train mode) and the number of parameters it trains:
    the same parameter set tune trains, minus the temporal layers that only inflation adds."""
    unet, x0 = s.comps.unet, s.x0
    if s.preset.checkpointing:
        unet.enable_gradient_checkpointing()
    params = mark_trainable(unet)
    for param in params.values():
        param.data = param.data.float()
    trainer = Trainer(params, lr=1e-5)
    scheduler = ContextualDDPMScheduler.from_config(s.comps.scheduler_config)
    batch = Batch(x0=x0, text=s.text.expand(len(x0), -1, -1), num_frames=None)
    unet.train()
    loss_fn = lambda seed: contextual_loss(unet, None, scheduler, batch, seed)  # noqa: E731
    step = lambda: _train_step(trainer, loss_fn, autocast_for(s.device, s.dtype))  # noqa: E731
    return step, sum(param.numel() for param in params.values())


# -------------------------------------------------------------------------------------------------
# 2. contextedit's tune step, 5. the adapter's share of it
# -------------------------------------------------------------------------------------------------
def temporal_layers(s: Setup) -> str:
    """The preset's temporal-layer placement, else the one tune resolves for the model (SDXL: per-transformer)."""
    return s.preset.temporal_layers or TuneSettings().resolve(s.comps.recommended).temporal_layers


def tune_setup(s: Setup, with_adapter: bool = True):
    """build_video_model and the Trainer exactly as ``tune`` builds them; returns (unet, adapter, step)."""
    unet, adapter = build_video_model(s.comps, with_adapter, s.preset.checkpointing, temporal_layers=temporal_layers(s))
    return unet, adapter, video_step(s, unet, adapter)


def video_step(s: Setup, unet, adapter) -> Callable[[], None]:
    """Tune's training step on the clip for an inflated UNet (its trainable parameters marked) and
    adapter (or None), with their own Trainer; the UNet is left in train mode."""
    params = trainable_parameters(unet)
    if adapter is not None:
        params.update({f"adapter.{n}": q for n, q in adapter.named_parameters()})
    trainer = Trainer(params, lr=1e-5)
    scheduler = ContextualDDPMScheduler.from_config(s.comps.scheduler_config)
    batch = Batch(x0=s.x0, text=s.text, num_frames=len(s.x0))
    unet.train()
    loss_fn = lambda seed: contextual_loss(unet, adapter, scheduler, batch, seed)  # noqa: E731
    return lambda: _train_step(trainer, loss_fn, autocast_for(s.device, s.dtype))


def measure_tune(s: Setup) -> tuple[dict, torch.nn.Module, torch.nn.Module]:
    p = s.preset
    unet, adapter, step = tune_setup(s)
    trained = trainable_parameters(unet)
    out = {"tune_step_ms": 1e3 * timed(step, s.device, max(p.repeats, p.step_repeats), p.warmup),
           "temporal_layers": temporal_layers(s),
           "temporal_layer_count": sum(isinstance(m, TemporalAttention) for m in unet.modules()),
           "tune_trained_parameters": sum(q.numel() for q in trained.values()),
           "tune_temporal_parameters": sum(q.numel() for n, q in trained.items() if ".temporal." in n),
           "adapter_parameters": sum(q.numel() for q in adapter.parameters())}

    def adapter_fwd_bwd():  # what the step spends on r_φ: forward, and backward from x_t's gradient
        t = torch.tensor([500], device=s.device)
        with autocast_for(s.device, s.dtype) or contextlib.nullcontext():
            r = adapter(s.x0.float(), s.text.float(), t, num_frames=len(s.x0))
        r.backward(torch.ones_like(r))
        adapter.zero_grad(set_to_none=True)

    out["adapter_fwd_bwd_ms"] = 1e3 * timed(adapter_fwd_bwd, s.device, p.repeats, p.warmup)
    out["adapter_share"] = out["adapter_fwd_bwd_ms"] / out["tune_step_ms"]
    return out, *as_edited(unet, adapter, s.dtype)


def as_edited(unet, adapter, dtype: torch.dtype):
    """The tuned model as ``edit`` holds it: eval, tuned weights in the model dtype, adapter in fp32."""
    unet.eval()
    unet.disable_gradient_checkpointing()
    unet.requires_grad_(False).to(dtype)
    if adapter is not None:
        adapter.requires_grad_(False).eval()
    return unet, adapter


# -------------------------------------------------------------------------------------------------
# 3. contextedit's inversion and sampling
# -------------------------------------------------------------------------------------------------
def has_source_option() -> bool:
    """Whether edit has ``--source live|stored|auto`` (an ``EditSettings.source`` field); without it
    the source branch is today's stored one."""
    return "source" in {f.name for f in fields(EditSettings)}


def edit_settings(p: Preset) -> EditSettings:
    """The settings ``run_edit`` samples with: edit's defaults, the preset's T, inversion and source."""
    extra = {"source": p.source} if p.source is not None and has_source_option() else {}
    return EditSettings(steps=p.steps, guidance=7.5, inversion=p.inversion, **extra).resolve()


def run_edit(s: Setup, unet, adapter, prompts: list[str]) -> dict:
    """One source pass (inversion, and the source-branch replay for direct inversion), then one
    guided, fused, masked sampling per prompt, each timed; decode the first."""
    p, comps = s.preset, s.comps
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(p.steps, device=s.device)
    opts = edit_settings(p)
    synchronize(s.device)
    t0 = time.perf_counter()
    source = prepare_source(unet, scheduler, s.x0, s.text, s.uncond, opts, adapter=adapter, source_prompt=SOURCE)
    synchronize(s.device)
    store = getattr(source, "store", None)  # a live source branch may keep none
    out = {"inversion_s": time.perf_counter() - t0, "sampling_s": [], "fused_steps": fused_steps(p.steps, opts.self_fusion),
           "fusion_store_mib": store.nbytes / 2**20 if store is not None else 0.0, "inversion": opts.inversion,
           "source": getattr(opts, "source", None) or "stored"}
    src_ids = token_ids(comps.tokenizer, [SOURCE])[0]
    for prompt in prompts:
        t1 = time.perf_counter()
        text = encode_text(comps, [prompt])
        control = prompt_control(comps.tokenizer, src_ids, prompt, opts, tuple(s.x0.shape[-2:]))
        latents = sample_edit(unet, scheduler, source, text, s.uncond, opts, control, adapter=adapter)
        synchronize(s.device)
        out["sampling_s"].append(time.perf_counter() - t1)
    out["decode_s"] = timed(lambda: decode_latents(comps.vae, latents), s.device)
    return out


def measure_edit(s: Setup, unet, adapter) -> dict:
    e = run_edit(s, unet, adapter, TARGETS[: s.preset.prompts])
    return {
        "inversion_s": e["inversion_s"],
        "sampling_s_first_prompt": e["sampling_s"][0],
        "sampling_s_per_prompt": e["sampling_s"][-1],  # the last prompt: warm, what each extra prompt costs
        "edit_s": e["inversion_s"] + e["sampling_s"][0] + e["decode_s"],
        "fused_steps": e["fused_steps"], "fusion_store_mib": e["fusion_store_mib"],
        "prompts": len(e["sampling_s"]), "inversion": e["inversion"], "source": e["source"],
    }


# -------------------------------------------------------------------------------------------------
# 4. Peak memory, one fresh process per (kind, frames)
# -------------------------------------------------------------------------------------------------
def memory_probe(kind: str, preset: Preset, device: torch.device, frames: int) -> float:
    """Peak GiB of one tune step or one edit (``preset.memory_steps`` DDIM steps), from model build on."""
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.settings import builtin_defaults

    EDIT_DEFAULTS = builtin_defaults(EditSettings)
    from contextedit.pipelines.windows import window_plan

    s = setup(preset, device, frames)
    plan = window_plan(frames, EDIT_DEFAULTS["window"], EDIT_DEFAULTS["overlap"])  # as tune and edit run it
    if kind == "tune":
        _, _, step = tune_setup(replace(s, x0=s.x0[plan[0]], pixels=s.pixels[plan[0]]))  # one window per step
        step()
    else:
        unet, adapter = as_edited(*build_video_model(s.comps, True, temporal_layers=temporal_layers(s)), s.dtype)
        s = replace(s, preset=replace(preset, steps=preset.memory_steps))
        for idx in plan:  # one window at a time, as edit does
            run_edit(replace(s, x0=s.x0[idx], pixels=s.pixels[idx]), unet, adapter, TARGETS[:1])
    synchronize(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure_memory(preset: Preset, device: torch.device, frames_list: tuple[int, ...], sdpa: str = "auto",
                   jobs: int = 2, kinds: tuple[str, ...] = ("tune", "edit")) -> dict:
    """Peak GiB per kind and frame count; frame counts not probed stay null (the probes run ``jobs``
    at a time: each is its own process, so their peaks do not mix)."""
    out: dict = {"tune": {}, "edit": {}}
    for kind in out:
        out[kind] = {str(f): None for f in (8, 16, 24)} if preset.model == "sd15-random" else {}
    pending = [(kind, frames) for kind in kinds for frames in frames_list]
    while pending:
        batch, pending = pending[:jobs], pending[jobs:]
        procs = {job: subprocess.Popen(_probe_command(*job, preset, device, sdpa), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True) for job in batch}
        for (kind, frames), proc in procs.items():
            stdout, stderr = proc.communicate()
            if proc.returncode == 0:
                out[kind][str(frames)] = json.loads(stdout.strip().splitlines()[-1])["peak_gib"]
            else:
                tail = (stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
                out.setdefault("errors", []).append(f"{kind} at {frames} frames: {tail}")
    return out


def _probe_command(kind: str, frames: int, preset: Preset, device: torch.device, sdpa: str) -> list[str]:
    return [sys.executable, __file__, "--probe", kind, "--probe-frames", str(frames), "--device", device.type,
            "--sdpa", sdpa, "--preset-json", json.dumps(asdict(preset))]


# -------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------
def benchmark(preset: Preset, device: torch.device, memory: bool = True, sdpa: str = "auto") -> dict:
    import diffusers

    t_start = time.perf_counter()
    s = setup(preset, device)
    doc: dict = {
        "device": device.type, "device_name": _device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
        "model": preset.model, "dtype": preset.dtype, "frames": preset.frames, "size": preset.size,
        "steps": preset.steps, "repeats": preset.repeats, "checkpointing": preset.checkpointing,
        "unet_parameters": sum(q.numel() for q in s.comps.unet.parameters()),
    }
    _log(t_start, "components built")
    doc.update(measure_floor(s))
    _log(t_start, "floor measured")
    tune_doc, unet, adapter = measure_tune(s)
    doc.update(tune_doc)
    _log(t_start, "tune step measured")
    doc.update(measure_edit(s, unet, adapter))
    _log(t_start, "inversion and sampling measured")
    del unet, adapter, s
    if memory:
        doc["peak_gib"] = measure_memory(preset, device, preset.memory_frames, sdpa)
        _log(t_start, "peak memory measured")
        doc["memory_steps"] = preset.memory_steps
    doc["ratios"] = ratios(doc)
    doc["wall_s"] = time.perf_counter() - t_start
    return doc


def ratios(doc: dict) -> dict:
    """Every ratio of one run, from the run's own fields, and the modes they were measured in.

    The floors: the inversion's is T bare forwards at batch F, a prompt's sampling T at batch 2F
    (guidance), the default edit of one prompt their sum.

    - ``tune_over_floor_step``: tune step / bare training step of ``to_q``;
    - ``edit_over_floor``: (inversion + the first prompt's sampling) / (the inversion's + one
      prompt's floor) — the default edit of one prompt;
    - ``edit_extra_prompt_over_floor``: what each further prompt adds (the last prompt's sampling,
      warm) / one prompt's floor (with ``prompts`` = 1 it is the first prompt's: cold);
    - ``inversion_over_floor``, ``sampling_over_floor``: the two halves (``sampling_over_floor`` is
      the extra prompt's ratio under its older name);
    - ``adapter_share``: the adapter's forward + backward / tune step;
    - ``inversion``, ``source``: edit's ``--inversion`` and ``--source`` that ran.
    """
    fwd = doc["floor_unet_fwd_ms"]
    f = doc["frames"]
    floor_inversion_s = doc["steps"] * fwd[str(f)] / 1e3
    floor_prompt_s = doc["steps"] * fwd[str(2 * f)] / 1e3
    extra_prompt = doc["sampling_s_per_prompt"] / floor_prompt_s
    return {
        "tune_over_floor_step": doc["tune_step_ms"] / doc["floor_train_step_ms"],
        "edit_over_floor": (doc["inversion_s"] + doc["sampling_s_first_prompt"]) / (floor_inversion_s + floor_prompt_s),
        "edit_extra_prompt_over_floor": extra_prompt,
        "inversion_over_floor": doc["inversion_s"] / floor_inversion_s,
        "sampling_over_floor": extra_prompt,
        "adapter_share": doc["adapter_share"],
        "inversion": doc["inversion"],
        "source": doc["source"],
        "targets": {"tune_over_floor_step": 1.3, "edit_over_floor": 1.4, "adapter_share": 0.10},
    }


def sdpa_backend(name: str):
    """Restrict F.scaled_dot_product_attention to one backend (``auto``: PyTorch's own choice)."""
    if SDPA_BACKENDS[name] is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[name]))


def _log(t_start: float, what: str) -> None:
    print(f"[{time.perf_counter() - t_start:7.1f} s] {what}", file=sys.stderr, flush=True)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", choices=("sd15-random", "sdxl-random", "tiny-random", "tiny-xl-random"), default="sd15-random",
                    help="sdxl-random: SDXL-base-1.0's shapes; tiny-random / tiny-xl-random: the tiny models at tiny sizes (smoke runs)")
    ap.add_argument("--tiny", action="store_true", help="same as --model tiny-random")
    ap.add_argument("--frames", type=int, help="clip length (default: 8 on CUDA, 4 on CPU)")
    ap.add_argument("--size", type=int, help="square frame size in pixels (default: 512 on CUDA, 256 on CPU)")
    ap.add_argument("--steps", type=int, help="DDIM steps T of inversion and sampling (default: 20 on CUDA, 2 on CPU)")
    ap.add_argument("--repeats", type=int, help="timed repeats per measurement (median)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--no-checkpointing", action="store_true", help="tune and floor steps without gradient checkpointing")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-frames", help="comma list: run only these memory probes and merge them into --out")
    ap.add_argument("--memory-kinds", default="tune,edit", help="with --memory-frames: which probes (tune, edit or both)")
    ap.add_argument("--sdpa", choices=tuple(SDPA_BACKENDS), default="auto",
                    help="restrict attention to one SDPA backend (CUDA: compare flash / efficient / cudnn / math)")
    ap.add_argument("--inversion", choices=INVERSIONS, help="edit's --inversion (default: edit's default)")
    ap.add_argument("--source", choices=SOURCE_MODES,
                    help="edit's --source (default: edit's default); only 'stored' where edit has no --source yet")
    ap.add_argument("--temporal-layers", choices=TEMPORAL_LAYERS,
                    help="tune's --temporal-layers (default: the model family's; SDXL: per-transformer)")
    ap.add_argument("--warmup", type=int, help="untimed calls before each timed measurement (default: the preset's)")
    ap.add_argument("--step-repeats", type=int, help="timed training steps, at least --repeats (default: 3)")
    ap.add_argument("--out", type=Path, help="JSON file (default: bench/results/perf-<device>.json)")
    ap.add_argument("--probe", choices=("tune", "edit"), help=argparse.SUPPRESS)
    ap.add_argument("--probe-frames", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--preset-json", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def make_preset(args: argparse.Namespace) -> Preset:
    if args.preset_json:
        raw = json.loads(args.preset_json)
        return Preset(**{**raw, "memory_frames": tuple(raw["memory_frames"])})
    tiny = args.tiny or args.model == "tiny-random"
    name = {"sdxl-random": f"sdxl-{args.device}", "tiny-xl-random": "tiny-xl"}.get(args.model, "tiny" if tiny else args.device)
    preset = PRESETS[name]
    overrides = {k: v for k, v in dict(frames=args.frames, size=args.size, steps=args.steps, repeats=args.repeats,
                                       dtype=args.dtype, inversion=args.inversion, source=args.source,
                                       temporal_layers=args.temporal_layers,
                                       warmup=args.warmup, step_repeats=args.step_repeats).items() if v is not None}
    if args.no_checkpointing:
        overrides["checkpointing"] = False
    return replace(preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("Error: --device cuda was asked for but CUDA is not available here; run with --device cpu", file=sys.stderr)
        return 2
    if args.source not in (None, "stored") and not has_source_option():
        print(f"Error: --source {args.source} needs edit's --source option, which this checkout lacks "
              "(its source branch is the stored one: --source stored)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    preset = make_preset(args)
    with sdpa_backend(args.sdpa):
        if args.probe:
            print(json.dumps({"peak_gib": memory_probe(args.probe, preset, device, args.probe_frames)}))
            return 0
        if args.memory_frames:  # fill probes into an existing result, e.g. 16 and 24 frames on the CPU
            return _merge_memory(args, preset, device, tuple(int(f) for f in args.memory_frames.split(",")))
        doc = benchmark(preset, device, memory=not args.no_memory, sdpa=args.sdpa)
    doc["sdpa"] = args.sdpa
    doc["command"] = "python bench/perf.py " + " ".join(argv if argv is not None else sys.argv[1:])
    doc["load_average"] = list(_load_average())
    out = args.out or RESULTS / (f"perf-{device.type}.json" if preset.model == "sd15-random" else f"perf-{preset.model}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from contextedit.fileio import write_json

    write_json(out, doc)
    print(json.dumps(doc["ratios"], indent=2))
    print(f"wrote {out}")
    return 0


def _merge_memory(args, preset: Preset, device: torch.device, frames: tuple[int, ...]) -> int:
    from contextedit.fileio import read_json, write_json

    out = args.out or RESULTS / (f"perf-{device.type}.json" if preset.model == "sd15-random" else f"perf-{preset.model}-{device.type}.json")
    doc = read_json(out)
    probed = measure_memory(preset, device, frames, args.sdpa, jobs=1, kinds=tuple(args.memory_kinds.split(",")))
    peaks = doc.setdefault("peak_gib", {})  # a --no-memory run has none yet
    for kind in ("tune", "edit"):
        peaks.setdefault(kind, {}).update({k: v for k, v in probed[kind].items() if v is not None})
    if probed.get("errors"):
        peaks.setdefault("errors", []).extend(probed["errors"])
    doc["memory_steps"] = preset.memory_steps
    doc["memory_windows"] = "probes above 16 frames run as tune and edit do: one window of 16 (tune), windows of 16 (edit)"
    doc.setdefault("memory_commands", []).append("python bench/perf.py " + " ".join(sys.argv[1:]))
    write_json(out, doc)
    print(json.dumps(doc["peak_gib"], indent=2))
    return 0


def _load_average() -> tuple[float, ...]:
    try:
        import os

        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


if __name__ == "__main__":
    sys.exit(main())
