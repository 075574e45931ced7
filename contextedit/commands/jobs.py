"""One batch job: a clip and its prompts, the options it runs with, and running it in this
process (tune once, then one edit of all its prompts). :mod:`.batch` plans jobs and keeps the
record; :mod:`.workers` runs them in worker processes or on Ray."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields

from ..errors import ContextEditError, Interrupted
from ..runs import folder_under

STEP_KEYS = ("tune_steps", "edit_steps")
# What batch sets itself for every job; a set's "options" cannot.
OWN = frozenset({"video", "prompt", "prompts", "source_prompt", "run", "out", "overwrite", "resume", "steps"})


def option_names() -> tuple[frozenset, frozenset]:
    """The names a job's options may use: TuneOptions' and EditOptions' fields (``steps`` as
    ``tune_steps`` / ``edit_steps``), less those that batch sets itself."""
    from .edit import EditOptions
    from .tune import TuneOptions

    return (frozenset(f.name for f in fields(TuneOptions)) - OWN, frozenset(f.name for f in fields(EditOptions)) - OWN)


@dataclass
class Job:
    stem: str                      # its folder under OUT and its key in batch.json: runs.clip_name(video)
    video: str                     # absolute: workers (and Ray nodes) may run elsewhere
    source_prompt: str | None
    prompts: list[str]
    options: dict = field(default_factory=dict)

    def tune_options(self, out: str | os.PathLike):
        from .tune import TuneOptions

        names, _ = option_names()
        kw = {k: v for k, v in self.options.items() if k in names}
        return TuneOptions(video=self.video, prompt=self.source_prompt, out=str(out), overwrite=True,
                           steps=self.options.get("tune_steps", 500), **kw)

    def edit_options(self, run: str | os.PathLike, out: str | os.PathLike):
        from .edit import EditOptions

        _, names = option_names()
        kw = {k: v for k, v in self.options.items() if k in names}
        return EditOptions(prompts=list(self.prompts), run=str(run), out=str(out), overwrite=True,
                           steps=self.options.get("edit_steps"), **kw)


def run_job(job: Job, out: str | os.PathLike) -> dict:
    """Tune the job's clip once, then edit it with all its prompts in one call (one inversion).
    Returns its record: ``done`` with timings and outputs, or ``failed`` with a one-line reason.
    Ctrl-C (KeyboardInterrupt, Interrupted) is not a failure: it propagates."""
    from .edit import edit
    from .tune import tune

    t0 = time.perf_counter()
    try:
        folder = folder_under(out, job.stem, job.video)
        comps, load_s = components(job.options)
        t1 = time.perf_counter()
        tuned = tune(job.tune_options(folder / "run"), comps=comps)
        tune_s = time.perf_counter() - t1
        result = edit(job.edit_options(tuned.run_dir, folder / "edits"), comps=comps)
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 — any failure fails this job only
        reason = str(exc) if isinstance(exc, ContextEditError) else f"unexpected {type(exc).__name__}: {exc}"
        return {"status": "failed", "reason": " ".join(reason.split()) or type(exc).__name__,
                "total_s": time.perf_counter() - t0}
    timings = result.record["timings"]
    return {"status": "done", "run": str(tuned.run_dir), "outputs": [str(p) for p in result.files],
            "edits_json": str(result.out_dir / "edits.json"), "device": result.record["settings"]["device"],
            "timings": {"load_s": load_s, "tune_s": tune_s, "inversion_s": timings.get("inversion_s"),
                        "sampling_s_per_prompt": timings.get("sampling_s_per_prompt"),
                        "edit_s": time.perf_counter() - t1 - tune_s, "total_s": time.perf_counter() - t0}}


_LOADED: dict = {}  # (model, device, dtype) → Components: a worker loads its model once for all its jobs


def components(options: dict):
    """The job's model, loaded once per process (tune and edit leave it as it was); a job on
    another model replaces it. Returns it and the seconds its loading took (0 when reused)."""
    from ..device import resolve_device, resolve_dtype
    from ..models.loading import load_components

    device = resolve_device(options.get("device", "auto"))
    dtype = resolve_dtype(options.get("dtype", "auto"), device)
    key = (options.get("model"), str(device), str(dtype), options.get("model_config"), tuple(options.get("lora") or ()))
    t = time.perf_counter()
    if key not in _LOADED:
        _LOADED.clear()  # one model per worker: its memory goes before the next loads
        from ..models.lora import lora_specs

        _LOADED[key] = load_components(key[0], device, dtype, model_config=key[3], loras=lora_specs(key[4]))
    return _LOADED[key], time.perf_counter() - t
