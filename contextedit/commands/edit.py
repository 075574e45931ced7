"""``contextedit edit``: load a run folder, edit it in memory (:meth:`ContextEditPipeline.iter_edit`),
write each prompt's video as soon as it is made, and record the settings in ``edits.json``.

Edits are deterministic (DDIM with η = 0 from the inverted source): there is no seed, and output
names are ``<prompt slug>.<format>``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from .. import video as vio
from . import OutputResult
from ..errors import UsageError
from ..fileio import write_json
from ..models.loading import Components
from ..pipeline import ContextEditPipeline
from ..pipelines.common import RuntimeOptions, check_prompt, check_prompts
from ..pipelines.edit_options import EditSettings
from ..pipelines.editing import fused_steps
from ..pipelines.prompt_control import read_mask
from ..pipelines.tuned import TunedClip
from ..progress import ProgressFactory, silent
from ..runs import check_new_output, latest_run, load_manifest, output_name

__all__ = ["FORMATS", "EditOptions", "EditResult", "edit", "fused_steps"]

FORMATS = ("mp4", "gif", "frames")


@dataclass
class EditOptions(EditSettings, RuntimeOptions):
    prompts: list[str]
    run: str | None = None
    source_prompt: str | None = None
    mask: str | None = None
    adapter: bool = True
    out: str | None = None
    format: str = "mp4"
    side_by_side: bool = False

    def validate(self) -> None:
        self.prompts = check_prompts(self.prompts, "pass `prompt` TEXT (repeatable) or `prompts_file` FILE")
        if self.source_prompt is not None:
            self.source_prompt = check_prompt(self.source_prompt, "`source_prompt`")
        if self.format not in FORMATS:
            raise UsageError(f"`format` must be one of {', '.join(FORMATS)} (got {self.format!r})")
        EditSettings.validate(self)

    def settings(self) -> dict:
        return {**EditSettings.settings(self), "mask": self.mask, "format": self.format, "side_by_side": self.side_by_side}


EditResult = OutputResult


def edit(opts: EditOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> EditResult:
    opts.validate()
    run_dir = Path(opts.run) if opts.run else latest_run()
    manifest = load_manifest(run_dir)
    if opts.model and opts.model != manifest["model"]:
        raise UsageError(f"run {run_dir} was tuned on {manifest['model']!r}, not `model` {opts.model!r}; "
                         "drop `model` or tune again on that model")
    out_dir = Path(opts.out) if opts.out else run_dir / "edits"
    names = [output_name(p, None, opts.format) for p in opts.prompts]
    if len(set(names)) < len(names):
        raise UsageError("two target prompts give the same output name; remove the duplicate `prompt`")
    for name in names:
        check_new_output(out_dir / name, opts.overwrite)
    for key in ("control", "controlnet", "depth_model"):  # the run's structure control unless given (edits.json records it)
        if getattr(opts, key) is None and manifest.get(key):
            setattr(opts, key, manifest[key])
    mask = read_mask(opts.mask, manifest["frames"]) if opts.mask else None
    tuned = TunedClip.load(run_dir)

    t0 = time.perf_counter()
    pipe = ContextEditPipeline(comps) if comps is not None else \
        ContextEditPipeline.from_pretrained(manifest["model"], device=opts.device, dtype=opts.dtype)
    control_off = opts.control == "none"
    opts.resolve(pipe.components.extra.get("defaults"))
    timings = {"load_s": time.perf_counter() - t0}
    settings = {k: getattr(opts, k) for k in EditSettings.__dataclass_fields__}
    if control_off:  # resolved to None above; the pipeline must not take the run's again
        settings["control"] = "none"
    source_pixels = None
    files, outputs = [], []
    for edited, name in zip(pipe.iter_edit(tuned, opts.prompts, source_prompt=opts.source_prompt, adapter=opts.adapter,
                                           mask=mask, progress=progress, cache_dir=run_dir, timings=timings, **settings),
                            names):
        pixels = edited.frames
        if opts.side_by_side:
            if source_pixels is None:
                source_pixels = pipe.decode(tuned.latents)
            pixels = vio.side_by_side(source_pixels, pixels)
        files.append(vio.write_video(pixels, out_dir / name, tuned.fps, fmt=opts.format, exclusive=not opts.overwrite))
        outputs.append({"prompt": edited.prompt, "file": name, "sampling_s": edited.seconds,
                        "guidance": edited.guidance, "control": edited.control})
    from ..device import peak_memory_gib

    timings.update(sampling_s_per_prompt=[o["sampling_s"] for o in outputs], peak_gib=peak_memory_gib(pipe.device))
    use_adapter = opts.adapter and tuned.adapter is not None
    record_doc = {
        "run": str(run_dir.resolve()), "model": manifest["model"], "source_prompt": opts.source_prompt or tuned.prompt,
        "settings": {**opts.settings(), "adapter": use_adapter, "device": str(pipe.device),
                     "dtype": str(pipe.dtype).replace("torch.", "")},
        "frames": tuned.num_frames, "width": manifest["width"], "height": manifest["height"], "fps": tuned.fps,
        "outputs": outputs, "timings": timings,
    }
    _merge_record(out_dir / "edits.json", record_doc)
    return EditResult(out_dir=out_dir, files=files, record=record_doc)


def _merge_record(path: Path, doc: dict) -> None:
    """edits.json keeps earlier outputs in the folder: new entries replace those with the same file."""
    from ..fileio import read_json

    if path.is_file():
        with contextlib.suppress(Exception):
            old = read_json(path)
            kept = [o for o in old.get("outputs", []) if o["file"] not in {n["file"] for n in doc["outputs"]}]
            doc = {**doc, "outputs": kept + doc["outputs"]}
    write_json(path, doc)
