"""What the web UI's buttons and endpoints do, without Gradio: tune an uploaded clip into the runs
folder (with the CLI's frame selection, a Cancel that leaves a checkpoint and a Resume that ends on
the CLI's ``--resume`` weights), edit a run, list the runs. Each calls the library's
:func:`~contextedit.commands.tune.tune` and :func:`~contextedit.commands.edit.edit`, exactly as the
CLI does; the names a client sends are checked so that no path leaves the runs folder. The clip's
preview and caption are :mod:`.clip`, the edits' downloads and scores :mod:`.outputs`."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import video as vio
from ..defaults import DEFAULT_CAPTION_MODEL
from ..errors import InputError, Interrupted, UnsafeFileError, UsageError
from ..progress import ProgressFactory, silent
from ..runs import MANIFEST, clip_name, plain_name_under, slugify

SAMPLE = "red-circle.mp4"
SAMPLE_START = (10, 32)  # the circle (diameter 20) touching the left edge of 64 px, centred
# The page's edit settings beyond guidance, by their EditOptions names (the /edit endpoint leaves
# them to edit's defaults).
EDIT_SETTINGS = ("inversion", "self_fusion", "cross_fusion", "blend")


@dataclass
class Selection:
    """The frames a tune takes: ``frames`` (a count or ``all``) every ``stride``-th from ``start``,
    at ``size`` (``WIDTHxHEIGHT``; None: the model's). None: tune's default."""

    frames: int | str | None = None
    stride: int | None = None
    start: int | None = None
    size: str | None = None

    def options(self) -> dict:
        """The TuneOptions fields given (a page's empty box is not given)."""
        given = {"frames": _text(self.frames), "stride": _whole(self.stride, "stride"), "start": _whole(self.start, "start"),
                 "size": _text(self.size)}
        return {k: v for k, v in given.items() if v is not None}


class Cancelled(Interrupted):
    """A tune stopped by :meth:`Jobs.cancel`; ``run`` names the folder its checkpoint is in."""

    def __init__(self, message: str, run: str):
        super().__init__(message)
        self.run = run


@dataclass
class Jobs:
    """The endpoints' work against one runs folder, model and device."""

    runs: Path
    model: str | None = None
    device: str = "auto"
    edit_steps: int | None = None  # None: edit's default
    caption_model: str = DEFAULT_CAPTION_MODEL
    eval_models: dict = field(default_factory=dict)  # clip_model, pickscore_model, dino_model for Score
    pending: dict = field(default_factory=dict, repr=False)  # run name -> TuneOptions of a tune not finished
    _comps: object = field(default=None, init=False, repr=False)
    _load: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def components(self):
        """The page's model, loaded once (``--model`` on ``--device``) for its tunes, previews and
        captions; an edit loads the model its run records, as ``contextedit edit`` does."""
        with self._load:
            if self._comps is None:
                from ..pipeline import ContextEditPipeline

                self._comps = ContextEditPipeline.from_pretrained(self.model, device=self.device).components
            return self._comps

    def edit_default(self, name: str):
        """The value the page shows for edit setting ``name``: the model's recommendation (its
        ``contextedit.json``; guidance 3 on ``tiny``), else edit's built-in default. Reads no weights."""
        from ..models.loading import TRAINED, default_model, recommended_defaults
        from ..pipelines.edit_options import EditSettings
        from ..settings import builtin_defaults

        model = self.model or default_model()
        path = TRAINED.get(model) or Path(model).expanduser()
        try:
            recommended = recommended_defaults(path if path.is_dir() else model)
        except Exception:  # a model the page cannot read yet: the tune or edit says why
            recommended = {}
        return recommended.get("edit", {}).get(name, builtin_defaults(EditSettings)[name])

    def guidance(self) -> float:
        return float(self.edit_default("guidance"))

    def list_runs(self) -> list[str]:
        """The runs folder's tuned runs (folders with a manifest), newest first."""
        if not self.runs.is_dir():
            return []
        found = [p for p in self.runs.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()]
        return [p.name for p in sorted(found, key=lambda p: ((p / MANIFEST).stat().st_mtime, p.name), reverse=True)]

    def run_folder(self, name: str | None, tuned: bool = True) -> Path:
        """The run folder a client names: a plain folder name that stays inside the runs folder
        (``tuned``: and holds a finished tune)."""
        name = (name or "").strip()
        if not name:
            raise UsageError("choose a run (the runs list, or the /runs endpoint, names them)")
        try:
            path = plain_name_under(self.runs, name)
        except UnsafeFileError:
            raise UsageError(f"run name {name!r} is not a folder name inside the runs folder; "
                             "choose one of the runs listed") from None
        if tuned and not (path / MANIFEST).is_file():
            raise InputError(f"there is no tuned run named {name!r} in the runs folder; choose one of the runs listed")
        return path

    def new_run_folder(self, video: str) -> Path:
        """``runs/<clip name>``, or ``<clip name>-2``, ``-3``… when taken: the page never replaces a run."""
        base = clip_name(video)
        for n in range(1, 10_000):
            name = base if n == 1 else f"{base}-{n}"
            if not (self.runs / name).exists() and name not in self.pending:
                return self.runs / name
        raise UsageError(f"too many runs named {base!r} in {self.runs}; remove some")

    # -- tune -------------------------------------------------------------------------------------
    def tune(self, video: str | None, prompt: str | None, steps: int, seed: int, selection: Selection | None = None,
             progress: ProgressFactory = silent) -> str:
        """Check the upload is a readable video, tune it into a new run folder; returns the run's name.
        Raises :class:`Cancelled` when :meth:`cancel` stops it (its checkpoint stays for :meth:`resume`)."""
        from ..options import TuneOptions

        opts = TuneOptions(video=check_video(video), prompt=(prompt or "").strip() or None, steps=_int(steps, "steps"),
                           seed=_int(seed, "seed"), model=self.model, device=self.device,
                           caption_model=self.caption_model, **(selection or Selection()).options())
        opts.validate()  # before a run folder is named for it
        opts.out = str(self.new_run_folder(opts.video))
        return self._tune(opts, progress)

    def cancel(self) -> None:
        """Stop the running tune after its current step, checkpointed (nothing when none runs)."""
        self._stop.set()

    def resume(self, run: str | None, progress: ProgressFactory = silent) -> str:
        """Continue a tune this page cancelled (or that failed after a checkpoint) to the end, as
        ``contextedit tune --resume`` does: the same weights as a tune never stopped."""
        from ..commands.tune import CHECKPOINT

        path = self.run_folder(run, tuned=False)
        opts = self.pending.get(path.name)
        if opts is None or not (path / CHECKPOINT).is_file():
            raise InputError(f"there is no cancelled tune named {path.name!r} to resume on this page; a tune stopped "
                             f"elsewhere resumes with `contextedit tune VIDEO --out {path} --resume` and its settings")
        return self._tune(replace(opts, resume=True), progress)

    def _tune(self, opts, progress: ProgressFactory) -> str:
        from ..commands.tune import CHECKPOINT, tune
        from ..fileio import safetensors_metadata

        name = Path(opts.out).name
        self.runs.mkdir(parents=True, exist_ok=True)
        self.pending[name] = opts
        self._stop.clear()
        try:
            with _runs_root(self.runs):
                tune(opts, progress=progress, comps=self.components(), stop=self._stop.is_set)
        except Interrupted:
            checkpoint = Path(opts.out) / CHECKPOINT
            step = safetensors_metadata(checkpoint).get("step", "?") if checkpoint.is_file() else "?"
            raise Cancelled(f"the tune of {name} was cancelled after step {step} of {opts.steps}; its checkpoint is kept: "
                            "Resume continues it", name) from None
        except BaseException:
            if not (Path(opts.out) / CHECKPOINT).is_file():  # nothing to resume
                self.pending.pop(name, None)
            raise
        self.pending.pop(name, None)
        return name

    # -- edit -------------------------------------------------------------------------------------
    def edit(self, run: str | None, prompts: str | None, guidance: float, progress: ProgressFactory = silent) -> list[str]:
        """Edit the run toward each prompt (one per line); returns the videos, one per prompt."""
        return [str(files["mp4"]) for files in self.edit_outputs(run, prompts, guidance, progress)]

    def edit_outputs(self, run: str | None, prompts: str | None, guidance: float, progress: ProgressFactory = silent,
                     settings: dict | None = None, mask: str | None = None) -> list[dict[str, Path]]:
        """Edit the run toward each prompt (one per line); returns each prompt's outputs by kind
        (``frames`` and :data:`.outputs.KINDS`). :meth:`iter_edit_outputs` says more."""
        for made in self.iter_edit_outputs(run, prompts, guidance, progress, settings, mask):
            pass
        return made

    def iter_edit_outputs(self, run: str | None, prompts: str | None, guidance: float, progress: ProgressFactory = silent,
                          settings: dict | None = None, mask: str | None = None) -> Iterator[list[dict[str, Path]]]:
        """Edit the run toward each prompt (one per line), yielding the outputs made so far each time
        a prompt is done (``edit``'s :func:`~contextedit.commands.edit.iter_edit`): each prompt's
        outputs by kind (``frames`` and :data:`.outputs.KINDS`), in the prompts' order.

        ``settings``: edit settings beyond guidance (:data:`EDIT_SETTINGS`; None: edit's default),
        ``mask``: a user mask image (white: may change; :mod:`.masks` makes one from a drawing).
        Each set of settings gets its own folder, ``<run>/edits/guidance-<g>[_<setting>-<value>…]``;
        every output is there as a frame folder, ``.mp4``, ``.gif``, ``.zip`` of the frames and
        ``.source-edit.mp4`` (:mod:`.outputs`)."""
        from ..commands.edit import EditOptions, iter_edit
        from .outputs import downloads

        run_dir = self.run_folder(run)
        targets = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
        if not targets:
            raise UsageError("give at least one target prompt, one per line")
        try:
            guidance = float(guidance)
        except (TypeError, ValueError):
            raise UsageError(f"`guidance` must be a number, not {guidance!r}") from None
        if not np.isfinite(guidance):
            raise UsageError(f"`guidance` must be a finite number, not {guidance}")
        given = {k: v for k, v in (settings or {}).items() if v is not None}
        unknown = set(given) - set(EDIT_SETTINGS)
        if unknown:
            raise UsageError(f"the page sets no edit setting {', '.join(sorted(unknown))}")
        mask = check_mask(mask)
        opts = EditOptions(prompts=targets, run=str(run_dir), guidance=guidance, steps=self.edit_steps, device=self.device,
                           format="frames", mask=mask, out=str(run_dir / "edits" / edit_folder(guidance, given, mask)),
                           **given)
        with _runs_root(self.runs):
            for result in iter_edit(opts, progress=progress):
                yield [{"frames": Path(folder), **files} for folder, files in zip(result.files, downloads(result.files, run_dir))]

    def sample(self) -> Path:
        """The bundled sample clip: the repository's ``examples/red-circle.mp4`` where it is there,
        else the same clip made once into ``<runs>/.sample/`` (an installed package has no examples/)."""
        repo = Path(__file__).resolve().parents[2] / "examples" / SAMPLE
        if repo.is_file():
            return repo
        made = self.runs / ".sample" / SAMPLE
        if not made.is_file():
            vio.write_video(sample_frames(), made, 8.0)
        return made


def check_video(video: str | None) -> str:
    """An upload read as a video (frame count, size) before any model is loaded."""
    if not video:
        raise InputError("no clip: upload a video or choose the sample clip")
    info = vio.probe(video)  # refuses what is not a video
    if info.frames < 1:
        raise InputError(f"{Path(video).name} holds no frames; upload another clip")
    return str(video)


def check_mask(mask: str | None) -> str | None:
    """A user mask upload: an image file (read by the edit), or None."""
    if not mask:
        return None
    if not Path(mask).is_file():
        raise InputError(f"the mask {Path(mask).name} is not a file; upload a PNG (white: may change)")
    return str(mask)


def edit_folder(guidance: float, settings: dict, mask: str | None) -> str:
    """``guidance-<g>``, then each given setting as ``_<name>-<value>`` and a mask as ``_mask-<sha256[:8]>``:
    one folder per request, so that other settings never meet a file of the same prompt."""
    from ..runs import sha256_file

    parts = [f"guidance-{guidance:g}"]
    parts += [f"{slugify(name)}-{_value_text(settings[name])}" for name in EDIT_SETTINGS if name in settings]
    if mask is not None:
        parts.append(f"mask-{sha256_file(mask)[:8]}")
    return "_".join(parts)


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else slugify(str(value))


def sample_frames() -> np.ndarray:
    """examples/red-circle.mp4's clip: the shapes world's red circle moving right on black, 16 frames
    from the left edge (:func:`~contextedit.worlds.shapes.make_clip`)."""
    from ..worlds import shapes

    return shapes.make_clip("circle", "red", "black", "right", start=SAMPLE_START, frames=16)[0]


def _int(value, name: str) -> int:
    try:
        number = float(value)
        if isinstance(value, bool) or number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"`{name}` must be a whole number, not {value!r}") from None
    return int(number)


def _whole(value, name: str) -> int | None:
    return None if value is None or (isinstance(value, str) and not value.strip()) else _int(value, name)


def _text(value) -> str | None:
    """A page's text or number box: None when empty."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() or None


@contextlib.contextmanager
def _runs_root(runs: Path):
    """``runs/latest`` is written under the page's runs folder, as the CLI does under $CONTEXTEDIT_RUNS."""
    old = os.environ.get("CONTEXTEDIT_RUNS")
    os.environ["CONTEXTEDIT_RUNS"] = str(runs)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CONTEXTEDIT_RUNS", None)
        else:
            os.environ["CONTEXTEDIT_RUNS"] = old
