"""The ``contextedit`` command line: parsing and printing only; the work is in the library."""

from __future__ import annotations

import inspect
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .cli_eval import evaluate
from .cli_setup import Debug, Device, Dtype, Model, Overwrite, Quiet, Seed, say as _say, setup as _setup
from .defaults import TUNE_DEFAULTS, describe
from .errors import ContextEditError, Interrupted

ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
log = logging.getLogger("contextedit")


INTERRUPTED = "interrupted; the files already written are complete (none is partial) — run the command again to finish"


class _Group(TyperGroup):
    """Maps every failure to one ``Error: …`` line and an exit code (2 usage/input, 1 running)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # Typer would make it a silent exit 130; its text says how to resume
            raise Interrupted(str(exc) or INTERRUPTED) from exc

    def _option_names(self, args: list[str]) -> set[str] | None:
        command = next((self.commands.get(a) for a in args if not a.startswith("-")), None)
        return {p.name for p in command.params} if command is not None else None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args
        try:
            rv = super().main(args=args, prog_name=prog_name or "contextedit", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except ContextEditError as exc:
            code = _fail(exc, cli_message(str(exc), self._option_names(args)), exc.exit_code, debug)
        except ClickException as exc:
            code = _fail(exc, exc.format_message(), exc.exit_code, debug)
        except (typer.Abort, KeyboardInterrupt) as exc:
            code = _fail(exc, INTERRUPTED, 130, debug)
        except Exception as exc:  # noqa: BLE001 — the last line of defence: one line, no traceback
            code = _fail(exc, f"unexpected {type(exc).__name__}: {exc}; rerun with --debug for the traceback", 1, debug)
        if standalone_mode:
            sys.exit(code)
        return code


# Library errors name parameters as `name` (and `name=True`); here they become the flags.
_FLAGS = {"prompt": "--prompt", "prompts": "--prompt", "adapter=False": "--no-adapter", "fusion=False": "--no-fusion",
          "n": "--n", "json_out": "--json"}
# Where a command names the same thing differently: eval writes its output with --json.
_ALIASES = {"out": ("json_out",)}


def cli_message(message: str, names: set[str] | None = None) -> str:
    """A library message in the CLI's words: `` `adapter_lr` `` → ``--adapter-lr``; with ``names``
    (the running command's parameters) a name the command has no flag for stays as it is."""
    import re

    def flag(match: re.Match) -> str:
        name = match.group(1)
        if name in _FLAGS:
            return _FLAGS[name]
        if name.endswith("=True"):
            name = name[:-len("=True")]
        if names is not None and name not in names:
            name = next((a for a in _ALIASES.get(name, ()) if a in names), None)
            if name is None:
                return match.group(0)
        return _FLAGS.get(name, "--" + name.replace("_", "-"))

    return re.sub(r"`([a-z_]+(?:=True|=False)?)`", flag, message)


def _fail(exc: BaseException, message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    message = " ".join(str(message).split())
    print(f"Error: {message}", file=sys.stderr)
    return code


app = typer.Typer(
    cls=_Group, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="Text-guided video editing and image generation with contextualized diffusion (ContextDiff).",
)

def _version(value: bool) -> None:
    if value:
        print(f"contextedit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Tune on a clip, edit it with new prompts, generate images, evaluate with CLIP, PickScore, DINO and flow."""


@app.command()
def tune(
    video: Annotated[Path, typer.Argument(help="Source clip: mp4/mov/webm/avi/gif or a folder of frames.")],
    prompt: Annotated[Optional[str], typer.Option(help="Source prompt; captioned with BLIP-2 when omitted.")] = None,
    frames: Annotated[str, typer.Option(help="Frames to sample: a count, or all (every --stride-th from --start).")] = "8",
    stride: Annotated[int, typer.Option(help="Take every S-th frame (the paper's sample rate is 2).")] = 2,
    start: Annotated[int, typer.Option(help="First frame index.")] = 0,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT, multiples of 8. Default: source aspect, short side at the model's native size.")] = None,
    steps: Annotated[int, typer.Option(help="Tuning steps.")] = 500,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-5,
    out: Annotated[Optional[Path], typer.Option(help="Run folder. Default: runs/<video-stem>/.")] = None,
    overwrite: Overwrite = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted tune from its checkpoint.")] = False,
    no_adapter: Annotated[bool, typer.Option("--no-adapter", help="Tune without the context adapter (Tune-A-Video baseline).")] = False,
    adapter_init: Annotated[str, typer.Option(help="Start the clip's adapter from: base (the model's own base adapter; a fresh one when it has none), none (fresh, zero output), or an adapter folder (from `train-adapter`, or a run's adapter/).")] = "base",
    adapter_lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate of the adapter (its own group, no weight decay on its head). " + f"[default: {TUNE_DEFAULTS['adapter_lr']:g}]")] = None,
    adapter_input: Annotated[str, typer.Option(help="What the adapter reads in training: clean (x0) or predicted (every other step, the x̂0 the UNet predicts, as in sampling).")] = "clean",
    checkpointing: Annotated[bool, typer.Option("--checkpointing/--no-checkpointing", help="Gradient checkpointing (less memory, a little slower).")] = True,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints.")] = 100,
    window: Annotated[int, typer.Option(help="Frames per tuning step: a longer clip trains on one window (frame 0 + W-1 consecutive frames) per step; edit uses the same windows.")] = 16,
    control: Annotated[Optional[str], typer.Option(help="Structure control that edit applies with --controlnet: canny | depth | pose | a folder of per-frame condition images. Recorded in the run.")] = None,
    controlnet: Annotated[Optional[str], typer.Option(help="ControlNet for --control: hub id, folder, or tiny-random (checked against --model now).")] = None,
    depth_model: Annotated[str, typer.Option(help="Depth estimator for --control depth (transformers' DPT / Depth-Anything): hub id, folder, or tiny.")] = "Intel/dpt-hybrid-midas",
    caption_model: Annotated[str, typer.Option(help="BLIP-2 model for captions: hub id, folder or 'tiny'.")] = "Salesforce/blip2-opt-2.7b",
    model: Model = None, device: Device = "auto", dtype: Dtype = "auto", seed: Seed = 0,
    debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Tune the adapter and the video UNet on one clip; writes a run folder for `edit`."""
    progress = _setup(quiet, debug)
    from .commands.tune import TuneOptions, tune as run_tune

    result = run_tune(TuneOptions(
        video=str(video), prompt=prompt, frames=frames, stride=stride, start=start, size=size, steps=steps, lr=lr,
        out=str(out) if out else None, overwrite=overwrite, resume=resume, adapter=not no_adapter,
        adapter_init=adapter_init, adapter_lr=adapter_lr, adapter_input=adapter_input, checkpointing=checkpointing, checkpoint_every=checkpoint_every, caption_model=caption_model,
        window=window, control=control, controlnet=controlnet, depth_model=depth_model,
        model=model, device=device, dtype=dtype, seed=seed), progress=progress)
    m = result.manifest
    _say(quiet, f"source prompt: {m['source_prompt']}")
    _say(quiet, f"tuned {m['frames']} frames at {m['width']}x{m['height']} for {m['steps']} steps "
                f"in {m['timings']['train_s']:.1f} s (final loss {m['final_loss']:.4f})")
    if m["adapter"]:
        share = m["adapter_flop_share"]
        _say(quiet, f"adapter: {m['adapter_parameters']:,} parameters"
                    + (f", {100 * share:.1f}% of the UNet's FLOPs per call" if share is not None else ""))
    print(result.run_dir)


@app.command()
def edit(
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="Target prompt (repeatable).")] = None,
    prompts_file: Annotated[Optional[Path], typer.Option(help="JSON prompt set (see prompts/).")] = None,
    run: Annotated[Optional[Path], typer.Option(help="Tuned run folder. Default: the latest run.")] = None,
    source_prompt: Annotated[Optional[str], typer.Option(help="Override the run's source prompt.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="DDIM steps T for inversion and sampling. " + describe("edit", "steps"))] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale. " + describe("edit", "guidance"))] = None,
    inversion: Annotated[Optional[str], typer.Option(help="ddim | negative-prompt | null-text | direct: how inversion holds under guidance. " + describe("edit", "inversion"))] = None,
    null_text_steps: Annotated[Optional[int], typer.Option(help="Adam iterations per step for --inversion null-text (cached in the run). " + describe("edit", "null_text_steps"))] = None,
    self_fusion: Annotated[Optional[float], typer.Option(help="Fraction of T, from the noisy end, that fuses the source's self-attention. " + describe("edit", "self_fusion"))] = None,
    cross_fusion: Annotated[Optional[float], typer.Option(help="Fraction of T that fuses the source's cross-attention (word swap / refine). " + describe("edit", "cross_fusion"))] = None,
    fusion_start: Annotated[Optional[float], typer.Option(help="Older spelling: both windows = 1 - this.")] = None,
    self_half: Annotated[Optional[str], typer.Option(help="cond | both: the guided halves whose self-attention is fused. " + describe("edit", "self_half"))] = None,
    fusion_layers: Annotated[Optional[str], typer.Option(help="all | coarse | N: fuse self-attention in layers of at most N tokens per frame (coarse: a quarter of the finest). " + describe("edit", "fusion_layers"))] = None,
    reweight: Annotated[Optional[list[str]], typer.Option("--reweight", help="WORD=SCALE: scale a target word's cross-attention (repeatable).")] = None,
    new_word_weight: Annotated[Optional[float], typer.Option(help="Cross-attention scale of swapped and inserted words. " + describe("edit", "new_word_weight"))] = None,
    blend: Annotated[Optional[bool], typer.Option("--blend/--no-blend", help="Blend mask from the changed words' cross-attention (MaskBlend + LocalBlend). " + describe("edit", "blend"))] = None,
    blend_words: Annotated[Optional[list[str]], typer.Option("--blend-words", help="Words whose attention makes the mask, instead of the changed words (repeatable).")] = None,
    blend_threshold: Annotated[Optional[float], typer.Option(help="Mask threshold on the min-max-normalised attention contrast. " + describe("edit", "blend_threshold"))] = None,
    offset_inside: Annotated[Optional[float], typer.Option(help="Direct inversion: the share of the source branch's offset that the masked (edited) region gets. " + describe("edit", "offset_inside"))] = None,
    background_guidance: Annotated[Optional[float], typer.Option(help="Guidance where a changed word edits the rest of the frame (its cross-attention marks an object, the model responds around it: a background edit). " + describe("edit", "background_guidance"))] = None,
    background_offset_inside: Annotated[Optional[float], typer.Option(help="--offset-inside for those regions. " + describe("edit", "background_offset_inside"))] = None,
    background_noise: Annotated[Optional[float], typer.Option(help="Share of fresh noise mixed into the inverted x_T in those regions. " + describe("edit", "background_noise"))] = None,
    background_negative: Annotated[Optional[str], typer.Option(help="source | empty: the negative prompt of those regions' guidance. " + describe("edit", "background_negative"))] = None,
    local_blend: Annotated[Optional[str], typer.Option(help="auto | on | off: latents outside the mask follow the source (auto: on wherever there is a mask). " + describe("edit", "local_blend"))] = None,
    region_attention: Annotated[Optional[str], typer.Option(help="more | less: the model marks what a word names with more (Stable Diffusion) or less cross-attention; decides whether a changed word edits its object or the rest of the frame. " + describe("edit", "region_attention"))] = None,
    blend_stop: Annotated[Optional[float], typer.Option(help="LocalBlend acts on the first fraction of the steps; the rest heal the seam. " + describe("edit", "blend_stop"))] = None,
    composite: Annotated[Optional[str], typer.Option(help="auto | on | off: the kept region's pixels from the source after decoding, seam inpainted (auto: for background edits). " + describe("edit", "composite"))] = None,
    mask: Annotated[Optional[Path], typer.Option(help="User mask: a PNG for all frames or a folder of one per frame; white = may change.")] = None,
    context_guidance: Annotated[Optional[float], typer.Option(help="Guide the adapter's bias like the noise, r_u + G·(r_c − r_u), in inversion's source branch and in sampling (1: the conditional bias). " + describe("edit", "context_guidance"))] = None,
    window: Annotated[Optional[int], typer.Option(help="Frames per window: a longer clip is inverted and sampled window by window, each starting with frame 0 (the anchor). [default: the run's tune window, else 16]")] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Frames shared by neighbouring windows, blended. " + describe("edit", "overlap"))] = None,
    control: Annotated[Optional[str], typer.Option(help="Structure control: canny | depth | pose | a folder of per-frame condition images | none. [default: the run's]")] = None,
    controlnet: Annotated[Optional[str], typer.Option(help="ControlNet: hub id, folder, or tiny-random; its residuals go into inversion and sampling. [default: the run's]")] = None,
    control_scale: Annotated[float, typer.Option(help="Weight of the ControlNet's residuals.")] = 1.0,
    depth_model: Annotated[Optional[str], typer.Option(help="Depth estimator for --control depth: hub id, folder, or tiny. [default: the run's]")] = None,
    no_fusion: Annotated[bool, typer.Option("--no-fusion", help="Ablation: no attention fusion.")] = False,
    no_adapter: Annotated[bool, typer.Option("--no-adapter", help="Ablation: ignore the tuned adapter.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Output folder. Default: <run>/edits/.")] = None,
    format: Annotated[str, typer.Option("--format", help="mp4 | gif | frames.")] = "mp4",
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Write source | edit side by side.")] = False,
    overwrite: Overwrite = False,
    model: Model = None, device: Device = "auto", dtype: Dtype = "auto",
    seed: Annotated[Optional[int], typer.Option("--seed", hidden=True, help="Ignored: edits are deterministic (kept so older scripts run).")] = None,
    debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Edit the latest (or --run) tuned clip with one or more target prompts (deterministic: no seed)."""
    progress = _setup(quiet, debug)
    if seed is not None:
        log.warning("--seed is ignored: edits are deterministic (DDIM with eta = 0 from the inverted source)")
    from .commands.edit import EditOptions, edit as run_edit
    from .prompts import prompts_for_run

    prompts = list(prompt or [])
    if prompts_file is not None:
        file_source, file_prompts = prompts_for_run(prompts_file, run)
        prompts += file_prompts
        source_prompt = source_prompt or file_source
    result = run_edit(EditOptions(
        prompts=prompts, run=str(run) if run else None, source_prompt=source_prompt, steps=steps, guidance=guidance,
        inversion=inversion, null_text_steps=null_text_steps, self_fusion=self_fusion, cross_fusion=cross_fusion,
        fusion_start=fusion_start, fusion=not no_fusion, self_half=self_half, fusion_layers=fusion_layers,
        reweight=list(reweight or []), new_word_weight=new_word_weight, blend=blend, blend_words=list(blend_words or []),
        blend_threshold=blend_threshold, offset_inside=offset_inside,
        background_guidance=background_guidance, background_offset_inside=background_offset_inside,
        background_noise=background_noise, background_negative=background_negative, local_blend=local_blend,
        region_attention=region_attention, blend_stop=blend_stop, composite=composite, mask=str(mask) if mask else None,
        context_guidance=context_guidance, window=window, overlap=overlap, control=control, controlnet=controlnet,
        control_scale=control_scale, depth_model=depth_model, adapter=not no_adapter, out=str(out) if out else None,
        format=format, side_by_side=side_by_side, overwrite=overwrite, model=model, device=device, dtype=dtype),
        progress=progress)
    t = result.record["timings"]
    _say(quiet, f"inversion {t['inversion_s']:.1f} s, sampling {sum(t['sampling_s_per_prompt']):.1f} s for "
                f"{len(result.files)} prompt(s); fusion store {t['fusion_store_mib']:.1f} MiB")
    for path in result.files:
        print(path)


@app.command()
def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", help="Prompt (repeatable).")],
    n: Annotated[int, typer.Option("--n", help="Images per prompt (seeds seed, seed+1, …).")] = 1,
    sampler: Annotated[str, typer.Option(help="ddim | ddpm.")] = "ddim",
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps. " + describe("generate", "steps"))] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale. " + describe("generate", "guidance"))] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Width (multiple of 8). Default: native.")] = None,
    height: Annotated[Optional[int], typer.Option(help="Height (multiple of 8). Default: native.")] = None,
    adapter: Annotated[Optional[str], typer.Option(help="Context adapter: base (the model's own, when it ships one), none (plain DDIM/DDPM), or an adapter folder (from `train-adapter`). " + describe("generate", "adapter"))] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Also write grid.png.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Output folder. Default: outputs/generate/<timestamp>/.")] = None,
    overwrite: Overwrite = False,
    model: Model = None, device: Device = "auto", dtype: Dtype = "auto", seed: Seed = 0,
    debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Text-to-image with the contextual DDIM/DDPM samplers."""
    progress = _setup(quiet, debug)
    from .commands.generate import GenerateOptions, generate as run_generate

    result = run_generate(GenerateOptions(
        prompts=prompt, n=n, sampler=sampler, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
        width=width, height=height, adapter=adapter, grid=grid,
        out=str(out) if out else None, overwrite=overwrite, model=model, device=device, dtype=dtype, seed=seed),
        progress=progress)
    for path in result.files:
        print(path)


@app.command("train-adapter")
def train_adapter(
    data: Annotated[Path, typer.Argument(help="Image folder with metadata.jsonl or same-stem .txt captions.")],
    out: Annotated[Path, typer.Option(help="Adapter folder to write (config.json + safetensors, diffusers' layout).")],
    steps: Annotated[int, typer.Option(help="Training steps.")] = 1000,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    batch: Annotated[int, typer.Option(help="Images per step.")] = 4,
    size: Annotated[Optional[int], typer.Option(help="Square training size (multiple of 8). Default: native.")] = None,
    tune_unet: Annotated[str, typer.Option(help="none | attn (also tune the UNet's attention queries).")] = "none",
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint beside --out.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints.")] = 100,
    overwrite: Overwrite = False,
    model: Model = None, device: Device = "auto", dtype: Dtype = "auto", seed: Seed = 0,
    debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Train the image context adapter on image–caption pairs."""
    progress = _setup(quiet, debug)
    from .commands.train_adapter import TrainAdapterOptions, train_adapter as run_train

    path = run_train(TrainAdapterOptions(
        data=str(data), out=str(out), steps=steps, lr=lr, batch=batch, size=size, tune_unet=tune_unet,
        resume=resume, overwrite=overwrite, checkpoint_every=checkpoint_every, model=model, device=device,
        dtype=dtype, seed=seed), progress=progress)
    print(path)


app.command("eval")(evaluate)


@app.command()
def caption(
    video: Annotated[Path, typer.Argument(help="Clip to caption.")],
    caption_model: Annotated[str, typer.Option(help="BLIP-2 model: hub id, folder or 'tiny'.")] = "Salesforce/blip2-opt-2.7b",
    frames: Annotated[int, typer.Option(help="Frames to sample.")] = 8,
    stride: Annotated[int, typer.Option(help="Frame stride.")] = 2,
    start: Annotated[int, typer.Option(help="First frame index.")] = 0,
    device: Device = "auto", debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Print a BLIP-2 caption of the clip (what `tune` uses when --prompt is omitted)."""
    _setup(quiet, debug)
    from .captioning import caption_frames
    from .device import resolve_device
    from .video import read_video

    clip = read_video(str(video), frames=frames, stride=stride, start=start)
    print(caption_frames(clip.frames, model_id=caption_model, device=str(resolve_device(device))))



@app.command()
def batch(
    jobs: Annotated[Path, typer.Argument(metavar="JOBS.json", help="Prompt sets (prompts/ schema), one job per set: its video (relative to the file) tuned once, edited with all its prompts. A set's \"options\" (Python names) override the flags.")],
    out: Annotated[Path, typer.Option(help="Output folder: <clip-stem>/run, <clip-stem>/edits and batch.json.")],
    workers: Annotated[Optional[int], typer.Option(help="Local worker processes. Default: one per GPU (each on its cuda:i), else one.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run the jobs as Ray tasks (a GPU each where there are GPUs), on $RAY_ADDRESS or a local Ray started for the batch. Needs pip install -e \".[cluster]\".")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Run the jobs on this Ray cluster (implies --ray): its address, or auto for the one started on this machine with ray start.")] = None,
    tune_steps: Annotated[int, typer.Option(help="Tuning steps per clip.")] = 500,
    edit_steps: Annotated[Optional[int], typer.Option(help="DDIM steps T of the edits. " + describe("edit", "steps"))] = None,
    frames: Annotated[str, typer.Option(help="Frames per clip: a count, or all.")] = "8",
    stride: Annotated[int, typer.Option(help="Take every S-th frame.")] = 2,
    start: Annotated[int, typer.Option(help="First frame index.")] = 0,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT, multiples of 8. Default: source aspect, short side at the model's native size.")] = None,
    window: Annotated[Optional[int], typer.Option(help="Frames per window for long clips (tune and edit). [default: 16]")] = None,
    lr: Annotated[float, typer.Option(help="Tuning learning rate.")] = 1e-5,
    no_adapter: Annotated[bool, typer.Option("--no-adapter", help="Tune and edit without the context adapter.")] = False,
    guidance: Annotated[Optional[float], typer.Option(help="Edit guidance scale. " + describe("edit", "guidance"))] = None,
    inversion: Annotated[Optional[str], typer.Option(help="ddim | negative-prompt | null-text | direct. " + describe("edit", "inversion"))] = None,
    format: Annotated[str, typer.Option("--format", help="mp4 | gif | frames.")] = "mp4",
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Write source | edit side by side.")] = False,
    caption_model: Annotated[str, typer.Option(help="BLIP-2 model for sets without a source_prompt.")] = "Salesforce/blip2-opt-2.7b",
    model: Model = None, device: Device = "auto", dtype: Dtype = "auto", seed: Seed = 0,
    debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Tune and edit many clips (a job per prompt set) on local workers or Ray; resumable, failures isolated."""
    progress = _setup(quiet, debug)
    from .commands.batch import plan_jobs, run_batch

    shared = {"tune_steps": tune_steps, "frames": frames, "stride": stride, "start": start, "lr": lr,
              "adapter": not no_adapter, "format": format, "side_by_side": side_by_side, "caption_model": caption_model,
              "device": device, "dtype": dtype, "seed": seed}
    shared.update({k: v for k, v in (("edit_steps", edit_steps), ("size", size), ("window", window), ("guidance", guidance),
                                      ("inversion", inversion), ("model", model)) if v is not None})
    planned = plan_jobs(jobs, shared)
    result = run_batch(planned, out, workers=workers, use_ray=ray or ray_address is not None, ray_address=ray_address,
                       progress=progress)
    done = sum(1 for job in planned if result.record["jobs"].get(job.stem, {}).get("status") == "done")
    _say(quiet, f"{done} of {len(planned)} jobs done ({len(result.ran)} run now, {len(planned) - len(result.ran)} done before)")
    print(out / "batch.json")
    names = set(inspect.signature(batch).parameters)
    for stem, reason in result.failed.items():  # one Error line per failed job; the others are done
        print(f"Error: job {stem}: {cli_message(reason, names)}", file=sys.stderr)
    if result.failed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
