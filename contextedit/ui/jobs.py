"""What the web UI's endpoints do, without Gradio: tune an uploaded clip into the runs folder, edit
a run, list the runs. Each calls the library's :func:`~contextedit.commands.tune.tune` and
:func:`~contextedit.commands.edit.edit`, exactly as the CLI does; the names a client sends are
checked so that no path leaves the runs folder."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import video as vio
from ..errors import InputError, UnsafeFileError, UsageError
from ..progress import ProgressFactory, silent
from ..runs import MANIFEST, clip_name, plain_name_under

SAMPLE = "red-circle.mp4"


@dataclass
class Jobs:
    """The endpoints' work against one runs folder, model and device."""

    runs: Path
    model: str | None = None
    device: str = "auto"
    edit_steps: int | None = None  # None: edit's default

    def guidance(self) -> float:
        """The edit guidance the page starts with: the model's recommendation (its ``contextedit.json``;
        3 on ``tiny``), else edit's built-in default. Reads no weights."""
        from ..models.loading import TRAINED, default_model, recommended_defaults
        from ..pipelines.edit_options import EditSettings
        from ..settings import builtin_defaults

        model = self.model or default_model()
        path = TRAINED.get(model) or Path(model).expanduser()
        try:
            recommended = recommended_defaults(path if path.is_dir() else model)
        except Exception:  # a model the page cannot read yet: the tune or edit says why
            recommended = {}
        return float(recommended.get("edit", {}).get("guidance", builtin_defaults(EditSettings)["guidance"]))

    def list_runs(self) -> list[str]:
        """The runs folder's tuned runs (folders with a manifest), newest first."""
        if not self.runs.is_dir():
            return []
        found = [p for p in self.runs.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()]
        return [p.name for p in sorted(found, key=lambda p: ((p / MANIFEST).stat().st_mtime, p.name), reverse=True)]

    def run_folder(self, name: str | None) -> Path:
        """The run folder a client names: a plain folder name that stays inside the runs folder."""
        name = (name or "").strip()
        if not name:
            raise UsageError("choose a run (the runs list, or the /runs endpoint, names them)")
        try:
            path = plain_name_under(self.runs, name)
        except UnsafeFileError:
            raise UsageError(f"run name {name!r} is not a folder name inside the runs folder; "
                             "choose one of the runs listed") from None
        if not (path / MANIFEST).is_file():
            raise InputError(f"there is no tuned run named {name!r} in the runs folder; choose one of the runs listed")
        return path

    def new_run_folder(self, video: str) -> Path:
        """``runs/<clip name>``, or ``<clip name>-2``, ``-3``… when taken: the page never replaces a run."""
        base = clip_name(video)
        for n in range(1, 10_000):
            name = base if n == 1 else f"{base}-{n}"
            if not (self.runs / name).exists():
                return self.runs / name
        raise UsageError(f"too many runs named {base!r} in {self.runs}; remove some")

    def tune(self, video: str | None, prompt: str | None, steps: int, seed: int,
             progress: ProgressFactory = silent) -> str:
        """Check the upload is a readable video, tune it into a new run folder; returns the run's name."""
        from ..commands.tune import TuneOptions, tune

        if not video:
            raise InputError("no clip: upload a video or choose the sample clip")
        info = vio.probe(video)  # refuses what is not a video, before any model is loaded
        if info.frames < 1:
            raise InputError(f"{Path(video).name} holds no frames; upload another clip")
        run_dir = self.new_run_folder(video)
        opts = TuneOptions(video=str(video), prompt=(prompt or "").strip() or None, steps=_int(steps, "steps"),
                           seed=_int(seed, "seed"), model=self.model, device=self.device, out=str(run_dir))
        self.runs.mkdir(parents=True, exist_ok=True)
        with _runs_root(self.runs):
            return tune(opts, progress=progress).run_dir.name

    def edit(self, run: str | None, prompts: str | None, guidance: float, progress: ProgressFactory = silent) -> list[str]:
        """Edit the run toward each prompt (one per line); returns the videos, one per prompt."""
        from ..commands.edit import EditOptions, edit

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
        # one folder per guidance, so that a new guidance never meets another's file of the same prompt
        out = run_dir / "edits" / f"guidance-{guidance:g}"
        opts = EditOptions(prompts=targets, run=str(run_dir), guidance=guidance, steps=self.edit_steps, device=self.device,
                           out=str(out))
        with _runs_root(self.runs):
            return [str(p) for p in edit(opts, progress=progress).files]

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


def sample_frames(size: int = 64, frames: int = 16, diameter: int = 20, step: int = 2) -> np.ndarray:
    """examples/make_sample.py's clip: a red circle moving right on black."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    out = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):
        out[i][(xs - diameter / 2 - step * i) ** 2 + (ys - size / 2) ** 2 <= (diameter / 2) ** 2] = (220, 40, 40)
    return out


def _int(value, name: str) -> int:
    try:
        number = float(value)
        if isinstance(value, bool) or number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"`{name}` must be a whole number, not {value!r}") from None
    return int(number)


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
