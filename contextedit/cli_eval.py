"""``contextedit eval``'s options: kept apart from cli.py, whose other commands fill it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_setup import Debug, Device, Quiet, say as _say, setup as _setup


def evaluate(
    paths: Annotated[list[Path], typer.Argument(help="Videos, frame folders, images, image folders, or edit/generate output folders.")],
    metrics: Annotated[str, typer.Option(help="Comma list of: clip (clip_text, clip_text_logit, clip_temporal), pickscore, dino (dino_temporal), flow (flow_epe), warp (warp_error), psnr (psnr, bg_psnr with --mask), oracle (shapes world).")] = "clip",
    prompt: Annotated[Optional[str], typer.Option(help="Prompt to score against (else read from edits.json / generate.json).")] = None,
    source: Annotated[Optional[Path], typer.Option(help="Source clip: flow, warp, psnr and the oracle compare with it.")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="Edited region (white), one image or a folder of one per frame: psnr adds bg_psnr outside it.")] = None,
    temporal: Annotated[str, typer.Option(help="consecutive | all (frame pairs for clip_temporal and dino_temporal).")] = "consecutive",
    clip_model: Annotated[str, typer.Option(help="CLIP model: hub id, folder, or 'tiny'.")] = "openai/clip-vit-large-patch14",
    pickscore_model: Annotated[str, typer.Option(help="PickScore model: hub id, folder, or 'tiny'.")] = "yuvalkirstain/PickScore_v1",
    dino_model: Annotated[str, typer.Option(help="DINOv2 model: hub id, folder, or 'tiny'.")] = "facebook/dinov2-base",
    flow: Annotated[str, typer.Option(help="Optical flow for flow and warp: farneback (OpenCV, no weights) | raft (torchvision, needs --flow-model).")] = "farneback",
    flow_model: Annotated[Optional[Path], typer.Option(help="RAFT weights, a .safetensors file (raft_large or raft_small).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write an HTML page: source | edit, metrics, per-frame plot.")] = None,
    device: Device = "auto", debug: Debug = False, quiet: Quiet = False,
) -> None:
    """Score edits: CLIP (cosine and x100), PickScore, DINO, flow and warp error, PSNR, shapes oracle."""
    progress = _setup(quiet, debug)
    from rich.console import Console

    from .commands.evaluate import EvalOptions, evaluate as run_eval
    from .metrics.evaluate import results_table, table_width

    opts = EvalOptions(paths=[str(p) for p in paths], metrics=metrics, prompt=prompt, source=_str(source), mask=_str(mask),
                       temporal=temporal, clip_model=clip_model, pickscore_model=pickscore_model, dino_model=dino_model,
                       flow=flow, flow_model=_str(flow_model), json_out=_str(json_out), report=_str(report), device=device)
    result = run_eval(opts, progress=progress)
    console = Console()
    console.width = max(console.width, table_width(result))  # a fixed table reads better than folded cells
    console.print(results_table(result))
    for written in (json_out, report):
        if written is not None:
            _say(quiet, f"wrote {written}")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
