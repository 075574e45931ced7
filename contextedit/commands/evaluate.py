"""``contextedit eval``: score clips, then write the JSON and the HTML report beside nothing else.

Every output path is checked before any model loads, so a typo costs nothing; the JSON and the
report are each written whole or not at all."""

from __future__ import annotations

from pathlib import Path

from ..options import EvalOptions  # noqa: F401 — declared there
from ..progress import ProgressFactory


def evaluate(opts: EvalOptions, progress: ProgressFactory | None = None) -> dict:
    """Score ``opts.paths``; write ``--json`` and ``--report`` when asked. Returns eval's result dict."""
    from ..device import resolve_device
    from ..fileio import check_writable_dir, write_json
    from ..metrics.collect import collect_items, load_frames
    from ..metrics.evaluate import evaluate as score

    if opts.report is not None:
        from ..metrics.report import check_report

        check_report(opts.report, new_folder_ok=True)  # before scoring, not after
    if opts.json_out is not None:
        check_writable_dir(Path(opts.json_out).parent)
    items = collect_items(opts.paths, opts.prompt)
    source = load_frames(opts.source) if opts.source else None
    result = score(opts.paths, metrics=opts.metrics, prompt=opts.prompt, clip_model=opts.clip_model, temporal=opts.temporal,
                   source=opts.source, device=str(resolve_device(opts.device)), progress=progress,
                   pickscore_model=opts.pickscore_model, dino_model=opts.dino_model, flow=opts.flow,
                   flow_model=opts.flow_model, mask=opts.mask, items=items, source_frames=source)
    if opts.report is not None:  # the page first: if it fails, no JSON claims a finished run
        from ..metrics.report import write_report

        Path(opts.report).parent.mkdir(parents=True, exist_ok=True)  # as --json's folder is made
        write_report(result, opts.report, {str(item.path): item.frames for item in items}, source)
    if opts.json_out is not None:
        write_json(opts.json_out, result)
    return result
