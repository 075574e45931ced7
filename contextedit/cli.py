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
from .cli_eval import _evaluate, eval_params
from .cli_options import command, given, option_parameters
from .cli_ui import ui_params
from .cli_setup import Debug, Quiet, say as _say, setup as _setup
from .options import CaptionOptions, EditOptions, GenerateOptions, TrainAdapterOptions, TuneOptions
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


def _tune(values: dict) -> None:
    """Tune the adapter and the video UNet on one clip; writes a run folder for `edit`."""
    quiet = values.pop("quiet")
    progress = _setup(quiet, values.pop("debug"))
    from .commands.tune import TuneOptions, tune as run_tune

    result = run_tune(TuneOptions(**given(values, TuneOptions)), progress=progress)
    m = result.manifest
    _say(quiet, f"source prompt: {m['source_prompt']}")
    _say(quiet, f"tuned {m['frames']} frames at {m['width']}x{m['height']} for {m['steps']} steps "
                f"in {m['timings']['train_s']:.1f} s (final loss {m['final_loss']:.4f})")
    if m["adapter"]:
        share = m["adapter_flop_share"]
        _say(quiet, f"adapter: {m['adapter_parameters']:,} parameters"
                    + (f", {100 * share:.1f}% of the UNet's FLOPs per call" if share is not None else ""))
    print(result.run_dir)


def _common_flags() -> list[inspect.Parameter]:
    return [inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Debug),
            inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Quiet)]


command(app, "tune", _tune.__doc__,
        [*option_parameters(TuneOptions, argument_types={"frames": str, "video": Path}), *_common_flags()], _tune)


def _edit(values: dict) -> None:
    """Edit the latest (or --run) tuned clip with one or more target prompts (deterministic: no seed)."""
    quiet = values.pop("quiet")
    progress = _setup(quiet, values.pop("debug"))
    from .commands.edit import edit as run_edit
    from .prompts import prompts_for_run

    prompts_file = values.pop("prompts_file")
    prompts = list(values.pop("prompts") or [])
    source_prompt = values.get("source_prompt")
    if prompts_file is not None:
        file_source, file_prompts = prompts_for_run(prompts_file, values.get("run"))
        prompts += file_prompts
        values["source_prompt"] = source_prompt or file_source
    result = run_edit(EditOptions(prompts=prompts, **given(values, EditOptions)), progress=progress)
    t = result.record.get("timings", {})
    if "inversion_s" in t:  # absent when every output was already made by this command
        _say(quiet, f"inversion {t['inversion_s']:.1f} s, sampling {sum(t['sampling_s_per_prompt']):.1f} s for "
                    f"{len(t['sampling_s_per_prompt'])} prompt(s); " + (
                        "live source branch (no fusion store)" if t.get("source") == "live"
                        else f"fusion store {t['fusion_store_mib']:.1f} MiB"))
    for path in result.files:
        print(path)


def _edit_params():
    prompts_file = inspect.Parameter("prompts_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                                     annotation=Annotated[Optional[Path], typer.Option(help="JSON prompt set (see prompts/).")])
    return [*option_parameters(EditOptions, exclude={"seed"}), prompts_file, *_common_flags()]


command(app, "edit", _edit.__doc__, _edit_params(), _edit)


def _generate(values: dict) -> None:
    """Text-to-image with the contextual DDIM/DDPM samplers."""
    progress = _setup(values.pop("quiet"), values.pop("debug"))
    from .commands.generate import generate as run_generate

    result = run_generate(GenerateOptions(prompts=values.pop("prompts") or [], **given(values, GenerateOptions)),
                          progress=progress)
    for path in result.files:
        print(path)


command(app, "generate", _generate.__doc__, [*option_parameters(GenerateOptions), *_common_flags()], _generate)


def _train_adapter(values: dict) -> None:
    """Train the image context adapter on image–caption pairs."""
    progress = _setup(values.pop("quiet"), values.pop("debug"))
    from .commands.train_adapter import train_adapter as run_train

    print(run_train(TrainAdapterOptions(**given(values, TrainAdapterOptions)), progress=progress))


command(app, "train-adapter", _train_adapter.__doc__,
        [*option_parameters(TrainAdapterOptions, argument_types={"data": Path, "out": Path}), *_common_flags()],
        _train_adapter)
command(app, "eval", _evaluate.__doc__, eval_params(), _evaluate)


def _caption(values: dict) -> None:
    """Print a BLIP-2 caption of the clip (what `tune` uses when --prompt is omitted)."""
    _setup(values.pop("quiet"), values.pop("debug"))
    from .captioning import caption_frames
    from .device import resolve_device
    from .video import read_video

    opts = CaptionOptions(**given(values, CaptionOptions))
    clip = read_video(opts.video, frames=opts.frames, stride=opts.stride, start=opts.start)
    print(caption_frames(clip.frames, model_id=opts.caption_model, device=str(resolve_device(opts.device))))


command(app, "caption", _caption.__doc__,
        [*option_parameters(CaptionOptions, argument_types={"video": Path}), *_common_flags()], _caption)


BATCH_TUNE = ("frames", "stride", "start", "size", "window", "lr", "adapter", "caption_model", "model", "device", "dtype",
              "seed")
BATCH_EDIT = ("guidance", "inversion", "format", "side_by_side")


def _batch(values: dict) -> None:
    """Tune and edit many clips (a job per prompt set) on local workers or Ray; resumable, failures isolated."""
    quiet = values.pop("quiet")
    progress = _setup(quiet, values.pop("debug"))
    from .commands.batch import plan_jobs, run_batch

    jobs, out, workers, ray, ray_address = (values.pop(k) for k in ("jobs", "out", "workers", "ray", "ray_address"))
    shared = {k: v for k, v in values.items() if v is not None}
    planned = plan_jobs(jobs, shared)
    result = run_batch(planned, out, workers=workers, use_ray=ray or ray_address is not None, ray_address=ray_address,
                       progress=progress)
    done = sum(1 for job in planned if result.record["jobs"].get(job.stem, {}).get("status") == "done")
    _say(quiet, f"{done} of {len(planned)} jobs done ({len(result.ran)} run now, {len(planned) - len(result.ran)} done before)")
    print(out / "batch.json")
    names = {p.name for p in _batch_params()}
    for stem, reason in result.failed.items():  # one Error line per failed job; the others are done
        print(f"Error: job {stem}: {cli_message(reason, names)}", file=sys.stderr)
    if result.failed:
        raise typer.Exit(1)


def _batch_params() -> list[inspect.Parameter]:
    from .pipelines.edit_options import EditSettings
    from .settings import effective_default

    def own(name, annotation, default=None, kind=inspect.Parameter.KEYWORD_ONLY):
        return inspect.Parameter(name, kind, default=default, annotation=annotation)

    return [
        own("jobs", Annotated[Path, typer.Argument(metavar="JOBS.json", help="Prompt sets (prompts/ schema), one job per "
            "set: its video (relative to the file) tuned once, edited with all its prompts. A set's \"options\" "
            "(Python names) override the flags.")], kind=inspect.Parameter.POSITIONAL_OR_KEYWORD, default=inspect.Parameter.empty),
        own("out", Annotated[Path, typer.Option(help="Output folder: <clip name>/run, <clip name>/edits and batch.json.")],
            default=inspect.Parameter.empty),
        own("workers", Annotated[Optional[int], typer.Option(help="Local worker processes. Default: one per GPU (each on "
            "its cuda:i), else one.")]),
        own("ray", Annotated[bool, typer.Option("--ray", help="Run the jobs as Ray tasks (a GPU each where there are "
            "GPUs), on $RAY_ADDRESS or a local Ray started for the batch. Needs pip install -e \".[cluster]\".")], False),
        own("ray_address", Annotated[Optional[str], typer.Option(help="Run the jobs on this Ray cluster (implies --ray): "
            "its address, or auto for the one started on this machine with ray start.")]),
        own("tune_steps", Annotated[Optional[int], typer.Option(help="Tuning steps per clip. [default: 500]")]),
        own("edit_steps", Annotated[Optional[int], typer.Option(help="DDIM steps T of the edits. "
            + effective_default(EditSettings, "steps"))]),
        *option_parameters(TuneOptions, only=BATCH_TUNE, argument_types={"frames": str}),
        *option_parameters(EditOptions, only=BATCH_EDIT),
        *_common_flags(),
    ]


command(app, "batch", _batch.__doc__, _batch_params(), _batch)


def _ui(values: dict) -> None:
    """Serve the web UI (Gradio, the ui extra): tune and edit in the browser or through its API."""
    _setup(values.pop("quiet"), values.pop("debug"))
    from .cli_ui import serve

    names = {p.name for p in [*_edit_params(), *option_parameters(TuneOptions), *eval_params()]}
    serve(values, lambda message: cli_message(message, names))


command(app, "ui", _ui.__doc__, [*ui_params(), *_common_flags()], _ui)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
