"""``contextedit generate``: images from the contextual samplers (:func:`generate_images`), each
written as a PNG as soon as it is made, with ``generate.json`` and an optional grid."""

from __future__ import annotations

from dataclasses import fields

import time
from datetime import datetime
from pathlib import Path

import numpy as np

from . import OutputResult
from ..errors import UsageError
from ..fileio import atomic_path, write_json
from ..models.loading import Components
from ..options import GenerateOptions
from ..models.lora import lora_specs
from ..pipeline import ContextEditPipeline
from ..pipelines.generation import GenerateSettings, generate_images, make_grid
from ..progress import ProgressFactory, silent
from ..runs import check_new_output, output_name

__all__ = ["GenerateOptions", "GenerateResult", "generate", "make_grid"]


GenerateResult = OutputResult


def generate(opts: GenerateOptions, progress: ProgressFactory = silent, comps: Components | None = None) -> GenerateResult:
    opts.validate()
    out_dir = Path(opts.out) if opts.out else Path("outputs/generate") / datetime.now().strftime("%Y%m%d-%H%M%S")
    names = [output_name(p, opts.seed + k, "png") for p in opts.prompts for k in range(opts.n)]
    if len(set(names)) < len(names):
        raise UsageError("two prompts give the same file name; remove the duplicate `prompt`")
    for name in names + (["grid.png"] if opts.grid else []):
        check_new_output(out_dir / name, opts.overwrite)
    t0 = time.perf_counter()
    pipe = ContextEditPipeline(comps) if comps is not None else \
        ContextEditPipeline.from_pretrained(opts.model, device=opts.device, dtype=opts.dtype,
                                            model_config=opts.model_config, loras=lora_specs(opts.lora))
    opts.resolve(pipe.components.recommended)
    settings = GenerateSettings(**{f.name: getattr(opts, f.name) for f in fields(GenerateSettings)})
    info: dict = {}
    images, entries = [], []
    t1 = None
    for made in generate_images(pipe.components, opts.prompts, opts.n, opts.seed, settings, progress=progress, info=info):
        t1 = t1 or time.perf_counter() - made.seconds
        name = output_name(made.prompt, made.seed, "png")
        _write_png(made.image, out_dir / name, exclusive=not opts.overwrite)
        images.append(made.image)
        entries.append({"prompt": made.prompt, "seed": made.seed, "file": name, "seconds": made.seconds})
    files = [out_dir / e["file"] for e in entries]
    if opts.grid:
        files.append(_write_png(make_grid(images, rows=len(opts.prompts)), out_dir / "grid.png", exclusive=not opts.overwrite))
    from ..device import peak_memory_gib

    record = {
        "model": pipe.components.model_id, **pipe.sources, "images": entries,
        "settings": {"sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance,
                     "negative_prompt": opts.negative_prompt, "width": info["width"], "height": info["height"], "n": opts.n,
                     "adapter": info["adapter"], "seed": opts.seed,
                     "device": str(pipe.device), "dtype": str(pipe.dtype).replace("torch.", "")},
        "timings": {"load_s": (t1 - t0) if t1 else None,
                    "seconds_per_image": sum(e["seconds"] for e in entries) / max(len(entries), 1),
                    "peak_gib": peak_memory_gib(pipe.device)},
    }
    write_json(out_dir / "generate.json", record)
    return GenerateResult(out_dir=out_dir, files=files, record=record)


def _write_png(image: np.ndarray, path: Path, exclusive: bool = False) -> Path:
    from PIL import Image

    with atomic_path(path, exclusive=exclusive) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path
