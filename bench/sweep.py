"""Edit-settings sweep on the shapes world: which inversion, windows, masks and guidance work.

Every setting is one ``bench/quality.py`` run over the same clips and the same tuned runs (tuned
once, with the adapter, in ``--work``), in ``--jobs`` shard processes; the figures go to
``bench/results/sweep/<name>.json`` and a plot of mean edit success against background kept per
setting to ``bench/results/sweep.png``; with ``--update-docs`` also a table into BENCHMARKS.md
(between the sweep markers).

Issue 27's remedies (``REGION_SETTINGS``) are a second table and plot (``sweep-regions.png``, the
sweep-regions markers), run on the shipped model's tuned runs: pass quality.py's ``--work``.

    python bench/sweep.py --update-docs         # the recorded sweep (8 clips, 2 processes)
    python bench/sweep.py --only direct ddim    # some settings
    python bench/sweep.py --regions --work bench/work/q --update-docs   # the remedies, on tiny's defaults
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import update_docs  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sweep"


class Table(NamedTuple):
    """One sweep's block in BENCHMARKS.md and its plot."""

    begin: str
    end: str
    picture: str       # under bench/results/
    heading: str       # the section the block is appended under when BENCHMARKS.md has no markers yet
    x_measure: str     # the plot's x axis
    flags: str         # the command's flags besides --update-docs
    settings: dict     # its rows: name → edit options


# Every setting below ran on top of BASE (edit's built-in defaults with guidance 7.5 for every edit);
# the last one is what `edit --model tiny` does now (the model's contextedit.json, nothing overridden).
BASE = {"guidance": 7.5, "offset_inside": 1.0, "background_guidance": 7.5, "background_offset_inside": 1.0}
SETTINGS: dict[str, dict] = {
    "legacy (ddim, no masks, fuse both halves)": {"inversion": "ddim", "blend": False, "self_half": "both"},
    "ddim": {"inversion": "ddim"},
    "negative-prompt": {"inversion": "negative-prompt"},
    "null-text": {"inversion": "null-text"},
    "direct (built-in defaults)": {},
    "direct, no masks": {"blend": False},
    "direct, LocalBlend on for every edit": {"local_blend": "on"},
    "direct, LocalBlend off": {"local_blend": "off"},
    "direct, no cross-attention fusion": {"cross_fusion": 0.0},
    "direct, self-attention fusion 0.8 T": {"self_fusion": 0.8},
    "direct, self-attention fusion in coarse layers": {"fusion_layers": "coarse"},
    "direct, new words × 2": {"new_word_weight": 2.0},
    "direct, guidance 3": {"guidance": 3.0, "background_guidance": 3.0},
    "direct, guidance 5": {"guidance": 5.0, "background_guidance": 5.0},
    "direct, no offset in the edited region": {"offset_inside": 0.0, "background_offset_inside": 0.0},
    "direct, half the offset in the edited region": {"offset_inside": 0.5, "background_offset_inside": 0.5},
    "direct, no offset in the edited region, guidance 10": {"offset_inside": 0.0, "background_offset_inside": 0.0,
                                                            "guidance": 10.0, "background_guidance": 10.0},
    "direct, half the offset in the edited region, guidance 5": {"offset_inside": 0.5, "background_offset_inside": 0.5,
                                                                 "guidance": 5.0, "background_guidance": 5.0},
    "direct, half the offset in the edited region, guidance 3": {"offset_inside": 0.5, "background_offset_inside": 0.5,
                                                                 "guidance": 3.0, "background_guidance": 3.0},
    "tiny's recommended defaults": None,
}
# Issue 27's remedies for background and multiple edits, each one switched off or changed on top of
# tiny's recommended defaults (which have them all on): regions from attention and the response,
# fresh noise in the edited complement, the source prompt as its negative, LocalBlend on the kept
# object until blend_stop, and the kept object composited in pixel space with the seam inpainted.
REGION_SETTINGS: dict[str, dict] = {
    "tiny's defaults (every remedy on)": {},
    "regions: no pixel composite": {"composite": "off"},
    "regions: no fresh noise outside": {"background_noise": 0.0},
    "regions: fresh noise 1.0 outside": {"background_noise": 1.0},
    "regions: empty negative outside": {"background_negative": "empty"},
    "regions: LocalBlend stops at 0.7 T": {"blend_stop": 0.7},
    "regions: background guidance 3": {"background_guidance": 3.0},
    "regions: background guidance 5": {"background_guidance": 5.0},
    "regions: fresh noise 1.0 and empty negative outside": {"background_noise": 1.0, "background_negative": "empty"},
    "regions: composite seam 2": {"composite_seam": 2},
    "regions: one word-swap window, 0.2 T (no --background-cross-fusion)": {"background_cross_fusion": 0.2},
    "regions: the earlier word-swap window for object edits, 0.5 T": {"cross_fusion": 0.5},
}


# The remedies keep the background in every row, so their plot's x axis is how well the kept object survives.
TABLES = {"settings": Table("<!-- sweep:begin -->", "<!-- sweep:end -->", "sweep.png", "Edit settings sweep (shapes world)",
                            "background_kept", "", SETTINGS),
          "regions": Table("<!-- sweep-regions:begin -->", "<!-- sweep-regions:end -->", "sweep-regions.png",
                           "Issue 27's remedies on the shipped model", "object_kept", "--regions --work {work}",
                           REGION_SETTINGS)}


def slug(name: str) -> str:
    return re.sub(r"-+", "-", "".join(c if c.isalnum() else "-" for c in name.lower())).strip("-")


def run_setting(name: str, options: dict, args) -> dict:
    """One quality run of ``options`` over the clips, sharded over ``args.jobs`` processes."""
    out = RESULTS / f"{slug(name)}.json"
    base = [sys.executable, str(ROOT / "bench" / "quality.py"), "--clips", str(args.clips), "--variants", "adapter",
            "--tune-steps", str(args.tune_steps), "--edit-steps", str(args.edit_steps), "--work", args.work, "--reuse",
            "--tag", slug(name), "--edit-options", json.dumps(_options(name, options)),
            "--generate-prompts", "0", "--benchmarks", "", "--threads", "1"]
    parts = [RESULTS / f"{slug(name)}.part{i}.json" for i in range(args.jobs)]
    procs = [subprocess.Popen(base + ["--shard", f"{i}/{args.jobs}", "--out", str(part)], stdout=subprocess.DEVNULL)
             for i, part in enumerate(parts)]
    if any(p.wait() for p in procs):
        raise SystemExit(f"setting {name!r} failed")
    subprocess.run(base + ["--merge", *map(str, parts), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    for part in parts:
        part.unlink()
    return json.loads(out.read_text())


def _options(name: str, options: dict | None) -> dict:
    """What a setting passes to edit: nothing (tiny's defaults), a region remedy on top of them, or BASE + its own."""
    if options is None:
        return {}
    return dict(options) if name in REGION_SETTINGS else {**BASE, **options}


def write_table(results: dict[str, dict], path: Path, args, seconds: float, table: str = "settings") -> None:
    t = TABLES[table]
    command = " ".join(filter(None, ["python bench/sweep.py", t.flags.format(work=args.work), "--update-docs"]))
    lines = [t.begin, "", f"Command: `{command}` — {args.clips} clips × 4 edits + 1 reconstruction, "
             f"adapter arm, {args.tune_steps} tune steps, T = {args.edit_steps}. How the rows were run and what "
             "they show: below the table.", "",
             "| setting | colour | shape | background | multiple | mean success | background kept | object kept | motion px "
             "| temporal IoU | reconstruction gap dB | s / clip |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = r["summary"]["adapter"]
        cells = [s.get(k) for k in ("success_colour", "success_shape", "success_background", "success_multiple", "success_mean",
                                    "background_kept", "object_kept", "motion_error_px", "temporal_iou", "reconstruction_gap_db")]
        lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in cells)
                     + f" | {r['seconds'] / max(r['clips'], 1):.0f} |")
    lines += ["", f"![mean edit success against {t.x_measure.replace('_', ' ')}](bench/results/{t.picture})", "", t.end]
    from quality import write_block  # bench/ is on the path when this script runs

    write_block(path, "\n".join(lines), t.heading)


def plot(results: dict[str, dict], path: Path, x_measure: str = "background_kept") -> None:
    """Mean edit success (y) against ``x_measure`` (x), one labelled point per setting; a label that
    would overlap one already drawn moves down a line."""
    from PIL import Image, ImageDraw

    w, h, pad, right = 1100, 600, 60, 260
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pts = [(r["summary"]["adapter"].get(x_measure) or 0, r["summary"]["adapter"].get("success_mean") or 0, n)
           for n, r in results.items()]
    x0 = min(0.5, min(p[0] for p in pts))
    sx = lambda x: pad + (x - x0) / (1 - x0) * (w - pad - right)  # noqa: E731
    sy = lambda y: h - pad - y * (h - 2 * pad)  # noqa: E731
    d.rectangle([pad, pad, w - right, h - pad], outline="black")
    for v in np.linspace(0, 1, 6):
        d.text((pad - 35, sy(v) - 6), f"{v:.1f}", fill="black")
        d.text((sx(x0 + v * (1 - x0)) - 12, h - pad + 8), f"{x0 + v * (1 - x0):.2f}", fill="black")
    d.text((w // 2 - 60, h - 25), x_measure.replace("_", " "), fill="black")
    d.text((8, 20), "mean edit success (colour, shape, background, multiple where run)", fill="black")
    placed: list[tuple[float, float]] = []
    for i, (x, y, name) in enumerate(pts):
        colour = (200, 30, 30) if i == 0 else (30, 80, 200) if name.startswith("tiny's") else (90, 90, 90)
        d.ellipse([sx(x) - 5, sy(y) - 5, sx(x) + 5, sy(y) + 5], fill=colour)
        ty = sy(y) - 6
        while any(abs(ty - py) < 11 and abs(sx(x) - px) < 250 for px, py in placed):
            ty += 11
        placed.append((sx(x), ty))
        d.text((sx(x) + 8, ty), name[:48], fill=colour)
    img.save(path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--tune-steps", type=int, default=100)
    p.add_argument("--edit-steps", type=int, default=20)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", default=str(ROOT / "bench" / "work" / "sweep"), help="tuned runs and edits (scratch)")
    p.add_argument("--regions", action="store_true", help="issue 27's remedies (REGION_SETTINGS) instead of SETTINGS")
    p.add_argument("--only", nargs="*", default=None, help="slugs or names of settings to run (others are read back)")
    p.add_argument("--rescore", action="store_true", help="score the edits left in --work again, run nothing")
    p.add_argument("--benchmarks", default=None,
                   help="Markdown file for the table (default: BENCHMARKS.md with --update-docs, else none; \"\": none)")
    update_docs.add_flag(p)
    args = p.parse_args(argv)
    update_docs.check(args, args.benchmarks)
    RESULTS.mkdir(parents=True, exist_ok=True)
    start, results = time.perf_counter(), {}
    table = "regions" if args.regions else "settings"
    for name, options in TABLES[table].settings.items():
        out = RESULTS / f"{slug(name)}.json"
        if args.rescore and out.is_file():
            from quality import rescore, write_json

            results[name] = rescore(json.loads(out.read_text()), Path(args.work), slug(name), args)
            write_json(out, results[name])
        elif args.only is None or name in args.only or slug(name) in args.only:
            results[name] = run_setting(name, options, args)
            print(f"[{time.perf_counter() - start:6.0f}s] {name}: {json.dumps(results[name]['summary']['adapter'])}", flush=True)
        elif out.is_file():
            results[name] = json.loads(out.read_text())
    plot(results, ROOT / "bench" / "results" / TABLES[table].picture, TABLES[table].x_measure)
    benchmarks = update_docs.benchmarks_file(args)
    if benchmarks:
        write_table(results, benchmarks, args, time.perf_counter() - start, table)
    return results


if __name__ == "__main__":
    main()
