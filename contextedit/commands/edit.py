"""``contextedit edit``: load a run folder, edit it in memory (:meth:`ContextEditPipeline.iter_edit`),
write each prompt's video as soon as it is made, and record the settings in ``edits.json``.

Edits are deterministic (DDIM with η = 0 from the inverted source; a background edit's fresh noise
comes from ``--background-seed``), and output names are ``<prompt slug>.<format>``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

from .. import video as vio
from . import OutputResult
from ..errors import RunReplacedError, UsageError
from ..models.loading import Components
from ..models.lora import check_recorded_loras, describe_loras, lora_specs
from ..models.motion import check_recorded_motion
from ..models.single_file import check_recorded, is_single_file
from ..pipeline import ContextEditPipeline
from ..pipelines.editing import fused_steps
from ..pipelines.prompt_control import read_mask
from ..pipelines.tuned import TunedClip
from ..progress import ProgressFactory, silent
from ..options import FORMATS, EditOptions
from ..runs import check_new_output, latest_run, load_manifest, output_name, run_identity, run_lock
from .edit_record import done_outputs, merge_output, read_record, request_key

__all__ = ["FORMATS", "EditOptions", "EditResult", "edit", "fused_steps", "iter_edit"]

log = logging.getLogger("contextedit")


EditResult = OutputResult


def edit(opts: EditOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> EditResult:
    """Edit the run toward each prompt. A rerun of an interrupted command skips the prompts whose
    outputs the record proves were made by the same request, and finishes the rest."""
    for result in iter_edit(opts, progress, comps):
        pass
    return result


def iter_edit(opts: EditOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> Iterator[EditResult]:
    """:func:`edit`, yielding what is written so far each time a prompt's output is written (the
    web page shows each edit as it comes): an :class:`EditResult` whose ``files`` are the outputs
    made, in the prompts' order. Outputs a rerun skips come first, in one result before any
    model is loaded; the last result is :func:`edit`'s."""
    opts.validate()
    run_dir = Path(opts.run) if opts.run else latest_run()
    manifest = load_manifest(run_dir)
    identity = run_identity(run_dir)
    asked_model = str(Path(opts.model).expanduser().resolve()) if opts.model and is_single_file(opts.model) else opts.model
    if asked_model and asked_model != manifest["model"]:
        raise UsageError(f"run {run_dir} was tuned on {manifest['model']!r}, not `model` {opts.model!r}; "
                         "drop `model` or tune again on that model")
    out_dir = Path(opts.out) if opts.out else run_dir / "edits"
    names = [output_name(p, None, opts.format) for p in opts.prompts]
    if len(set(names)) < len(names):
        raise UsageError("two target prompts give the same output name; remove the duplicate `prompt`")
    loras = run_sources(run_dir, manifest, opts) if comps is None else []
    asked = {**opts.settings(), "adapter": opts.adapter, "source_prompt": opts.source_prompt,
             **({"loras": [[lora["sha256"], lora["scale"]] for lora in loras]} if loras else {})}
    keys = {n: request_key(identity, asked, p, opts.mask) for p, n in zip(opts.prompts, names)}
    done = set() if opts.overwrite else done_outputs(out_dir, keys)
    todo = [(p, n) for p, n in zip(opts.prompts, names) if n not in done]
    for _, name in todo:
        check_new_output(out_dir / name, opts.overwrite)

    def made(record: dict) -> EditResult:
        return EditResult(out_dir=out_dir, files=[out_dir / n for n in names if n in done], record=record)

    if not todo:  # all made already by this very request
        log.info("all %d outputs are already in %s (made by the same command); nothing to do", len(names), out_dir)
        yield made(read_record(out_dir))
        return
    if done:
        log.info("%d of %d outputs are already in %s (made by the same command); making the rest",
                 len(done), len(names), out_dir)
        yield made(read_record(out_dir))
    mask = read_mask(opts.mask, manifest["frames"]) if opts.mask else None
    if mask is not None and tuple(mask.shape[-2:]) != (manifest["height"], manifest["width"]):
        log.warning("`mask` is %dx%d but the clip is %dx%d: it is resized to the clip%s", mask.shape[-1], mask.shape[-2],
                    manifest["width"], manifest["height"],
                    " (the aspect differs, so it is stretched)" if abs(mask.shape[-1] / mask.shape[-2]
                                                                          - manifest["width"] / manifest["height"]) > 0.01 else "")
    tuned = TunedClip.load(run_dir)

    t0 = time.perf_counter()
    pipe = ContextEditPipeline(comps) if comps is not None else \
        ContextEditPipeline.from_pretrained(manifest["model"], device=opts.device, dtype=opts.dtype, loras=loras,
                                            model_config=opts.model_config or manifest.get("model_file", {}).get("config"))
    opts.resolve(pipe.components.recommended, run=tuned.settings)  # the one resolve
    timings = {"load_s": time.perf_counter() - t0}
    use_adapter = opts.adapter and tuned.adapter is not None
    header = {
        "run": str(run_dir.resolve()), "run_manifest_sha256": identity, "model": manifest["model"], **pipe.sources,
        **({"motion_adapter": manifest["motion_adapter"]} if manifest.get("motion_adapter") else {}),
        "source_prompt": opts.source_prompt or tuned.prompt,
        "settings": {**opts.settings(), "adapter": use_adapter, "device": str(pipe.device),
                     "dtype": str(pipe.dtype).replace("torch.", "")},
        "frames": tuned.num_frames, "width": manifest["width"], "height": manifest["height"], "fps": tuned.fps,
        "timings": timings,
    }
    into_run = out_dir.resolve().is_relative_to(run_dir.resolve())
    source_pixels = None
    files, record = [], {}
    for edited, (_, name) in zip(pipe.iter_edit(tuned, [p for p, _ in todo], source_prompt=opts.source_prompt,
                                                adapter=opts.adapter, mask=mask, progress=progress, cache_dir=run_dir,
                                                timings=timings, settings=opts), todo):
        pixels = edited.frames
        if opts.side_by_side:
            if source_pixels is None:
                source_pixels = pipe.decode(tuned.latents)
            pixels = vio.side_by_side(source_pixels, pixels)
        output = {"prompt": edited.prompt, "file": name, "sampling_s": edited.seconds, "guidance": edited.guidance,
                  "control": edited.control, "request": keys[name]}
        with run_lock(run_dir) if into_run else contextlib.nullcontext():
            if into_run and run_identity(run_dir) != identity:
                raise RunReplacedError(f"run {run_dir} was replaced (tuned again) while this edit ran, so its edit of "
                                       "the old weights was not written there; edit again")
            files.append(vio.write_video(pixels, out_dir / name, tuned.fps, fmt=opts.format, exclusive=not opts.overwrite))
            record = merge_output(out_dir, header, output)  # now, so an interrupted edit keeps what it finished
        done.add(name)
        if name != todo[-1][1]:  # the last comes with the timings, below
            yield made(record)
    from ..device import peak_memory_gib

    timings.update(sampling_s_per_prompt=[o["sampling_s"] for o in record["outputs"] if o["file"] in
                                          {n for _, n in todo}], peak_gib=peak_memory_gib(pipe.device))
    yield made(merge_output(out_dir, {**header, "timings": timings}))


def run_sources(run_dir: Path, manifest: dict, opts: EditOptions) -> list[dict]:
    """Check the single file the run was tuned on (same path, same sha256) and return the LoRAs to
    fuse: ``lora`` when given (``none``: none), else the run's own, checked by sha256."""
    if manifest.get("model_file"):
        check_recorded(manifest["model_file"], run_dir)
    if manifest.get("motion_adapter"):
        check_recorded_motion(manifest["motion_adapter"], run_dir)
    asked = lora_specs(opts.lora)
    if asked is None:
        recorded = manifest.get("loras", [])
        check_recorded_loras(recorded, run_dir)
        return [{"file": lora["file"], "sha256": lora["sha256"], "scale": float(lora["scale"])} for lora in recorded]
    return describe_loras(asked)
