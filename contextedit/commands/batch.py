"""``contextedit batch``: clips × prompts, each clip tuned once and inverted once, spread over
local worker processes (one per GPU, or one on the CPU) or a Ray cluster (:mod:`.workers`).

A job is one prompt set of a JOBS file (the ``prompts/`` schema; video paths relative to the
file). Its run folder and edits land in ``OUT/<clip name>/`` (:func:`~contextedit.runs.clip_name`:
the slug of the clip's stem, which cannot leave OUT); ``OUT/batch.json`` (rewritten
atomically after every job) records each job's status, timings and outputs. A rerun skips the
jobs that are done and whose outputs exist; a failed job does not stop the others.
"""

from __future__ import annotations

import functools
import os
import typing
from dataclasses import dataclass
from pathlib import Path

from ..errors import ContextEditError, UsageError
from ..fileio import ensure_writable_dir, read_json, write_json
from ..progress import ProgressFactory, silent
from ..runs import clip_name, folder_under, output_name
from ..settings import describe_type, suits
from .jobs import OWN, STEP_KEYS, Job, option_names, run_job  # noqa: F401 — batch's API

RECORD = "batch.json"
def plan_jobs(jobs_file: str | os.PathLike, shared: dict) -> list[Job]:
    """The jobs of a JOBS file, each with the shared options under its set's own ``options``.
    Every problem that needs no model (a set without a video, two clips with one stem, an unknown
    or invalid option) is refused here, before any work; a missing video fails its job alone."""
    from ..prompts import load_prompt_sets

    jobs_file = Path(jobs_file)
    sets = load_prompt_sets(jobs_file)
    raw = read_json(jobs_file, "jobs file")
    raw = raw if isinstance(raw, list) else [raw]
    tune_names, edit_names = option_names()
    known = sorted(tune_names | edit_names | set(STEP_KEYS))
    unknown = sorted(set(shared) - set(known))
    if unknown:
        raise UsageError(f"batch does not take {', '.join(unknown)}")
    jobs: list[Job] = []
    for i, (entry, prompt_set) in enumerate(zip(raw, sets)):
        where = f"jobs file {jobs_file}, set {i}"
        if not prompt_set.video:
            raise UsageError(f"{where} names no 'video'; every batch job needs its clip")
        where += f" (clip {prompt_set.video})"
        overrides = entry.get("options", {})
        if not isinstance(overrides, dict):
            raise UsageError(f"{where}: 'options' must be an object of option names (as in Python) to values")
        bad = sorted(set(overrides) - set(known))
        if bad:
            raise UsageError(f"{where}: unknown options {', '.join(bad)}; known: {', '.join(known)}")
        video = jobs_file.parent / prompt_set.video
        # "frames/.." is the folder the system reaches (through any link), not a lexical cut
        video = video.resolve() if ".." in Path(prompt_set.video).parts else Path(os.path.abspath(video))
        name = clip_name(video)
        clash = next((j for j in jobs if j.stem == name), None)
        if clash is not None:
            raise UsageError(f"{where}: clip {video} gets the output folder {name!r}, as {clash.video} does; their "
                             "outputs would collide in one folder — rename one clip")
        job = Job(name, str(video), prompt_set.source_prompt, list(prompt_set.prompts), {**shared, **overrides})
        _check(job, where)
        jobs.append(job)
    return jobs


def _check(job: Job, where: str) -> None:
    """Validate the job's options as tune and edit would, on copies, before any work: each value's
    type (by the option's annotation), then tune's and edit's own checks, then the prompts' output
    names (two prompts of one name would fail only after the tune)."""
    try:
        for steps in STEP_KEYS:
            value = job.options.get(steps)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UsageError(f"`{steps}` must be at least 1 (got {value!r})")
        for name, value in job.options.items():
            _check_type(name, value)
        job.tune_options("-").validate()
        edit = job.edit_options("-", "-")
        edit.validate()
    except ContextEditError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a wrong type the annotations let through: find whose
        raise UsageError(f"{where}: {_culprit(job)} has a value of the wrong type ({exc})") from None
    seen: dict[str, str] = {}
    for prompt in edit.prompts:
        name = output_name(prompt, None, edit.format)
        if name in seen:
            raise UsageError(f"{where}: the prompts {seen[name]!r} and {prompt!r} give the same output name {name}; "
                             "remove the duplicate")
        seen[name] = prompt


@functools.lru_cache(maxsize=1)
def _field_types() -> dict[str, list]:
    """Each option's annotations (one per options class that has it; a value must suit all)."""
    from .edit import EditOptions
    from .tune import TuneOptions

    hints: dict[str, list] = {}
    for cls in (TuneOptions, EditOptions):
        for name, hint in typing.get_type_hints(cls).items():
            hints.setdefault(name, []).append(hint)
    hints["tune_steps"], hints["edit_steps"] = [int], [int | None]
    return hints


def _check_type(name: str, value) -> None:
    for hint in _field_types().get(name, []):
        if not suits(value, hint):
            raise UsageError(f'option "{name}" must be {describe_type(hint)} (got {value!r})')


def _culprit(job: Job) -> str:
    """The option whose value alone makes tune's or edit's checks fail with a TypeError."""
    for name, value in job.options.items():
        alone = Job(job.stem, job.video, job.source_prompt, job.prompts, {name: value})
        try:
            alone.tune_options("-").validate()
            alone.edit_options("-", "-").validate()
        except (TypeError, ValueError) as exc:
            if not isinstance(exc, ContextEditError):
                return f'option "{name}" ({value!r})'
        except ContextEditError:
            pass
    return "an option"


def is_done(record: dict | None) -> bool:
    """Done means both: batch.json says so, and every output it lists is still there."""
    outputs = (record or {}).get("outputs") or []
    return bool(record) and record.get("status") == "done" and bool(outputs) and all(Path(p).exists() for p in outputs)


@dataclass
class BatchResult:
    record: dict
    ran: list[str]                 # stems run now (skipped ones are done already)
    failed: dict[str, str]         # stem → reason, of the jobs run now


def run_batch(jobs: list[Job], out: str | os.PathLike, *, workers: int | None = None, use_ray: bool = False,
              ray_address: str | None = None, progress: ProgressFactory = silent) -> BatchResult:
    """Run the jobs that are not done yet; ``OUT/batch.json`` is rewritten after each one finishes,
    so it only ever lists finished jobs (an interrupted one is simply not there, or as before)."""
    from .workers import local_runner, ray_runner

    out = Path(os.path.abspath(out))
    for job in jobs:  # before anything is written: every job's folder stays under OUT
        folder_under(out, job.stem, job.video)
    out = ensure_writable_dir(out)
    path = out / RECORD
    record = read_json(path, "batch record") if path.is_file() else {}
    record.setdefault("jobs", {})
    todo = [j for j in jobs if not is_done(record["jobs"].get(j.stem))]
    ran, failed = [], {}
    if not todo:
        return BatchResult(record=record, ran=ran, failed=failed)
    results = ray_runner(todo, str(out), ray_address) if use_ray else local_runner(todo, str(out), workers)
    with progress("batch: jobs", len(todo)) as advance:
        for job, result in results:
            record["jobs"][job.stem] = {"video": job.video, "prompts": job.prompts, "options": job.options, **result}
            write_json(path, record)  # atomic: readers see the previous version or this one, never half
            ran.append(job.stem)
            if result["status"] == "failed":
                failed[job.stem] = result["reason"]
            advance(last=f"{job.stem} {result['status']}")
    return BatchResult(record=record, ran=ran, failed=failed)
