"""Long clips window by window (issue 18): memory, seams, prompt-following and motion on a
120-frame shapes-world clip, edited with the embedded ``tiny`` model.

The clip: a red circle on black sweeping right, left and right again (1 px per frame, 120
frames). It is tuned once with ``--frames all --window W`` per window size asked, then edited to
a blue circle (i) as the whole clip and (ii) as its first 16 frames, each edit in a fresh process
so that its peak resident memory (ru_maxrss) is its own. Scored with the shapes-world oracle:

- follows the prompt: the share of frames whose object reads blue and circle;
- motion: mean centroid distance to the source's object, per frame;
- seams: motion-compensated IoU of consecutive edited frames' objects (shifted by the source's
  own move), over pairs inside one window vs pairs that touch an overlap or cross windows.

Writes bench/results/long-clip.json; ``--update-docs`` also writes BENCHMARKS.md's block.

    python bench/long_clip.py --update-docs      # ~20 min on 2 CPU cores (windows of 16 and 8)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import update_docs  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402
from contextedit.pipelines.windows import window_plan  # noqa: E402
from contextedit.testing import shapes  # noqa: E402

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"
RESULTS = ROOT / "bench" / "results" / "long-clip.json"


def sweep_clip(frames: int = 120, lo: int = 12, hi: int = 52) -> np.ndarray:
    """A red circle on black going lo → hi → lo → … at 1 px per frame, at mid height."""
    period = 2 * (hi - lo)
    xs = [lo + (f % period if f % period <= hi - lo else period - f % period) for f in range(frames)]
    return np.stack([shapes.render_frame("circle", "red", "black", (x + 0.5, 32.5)) for x in xs])


EDIT_CHILD = r"""
import json, resource, sys, time
import numpy as np
from contextedit import ContextEditPipeline, TunedClip
run, frames, window, overlap, steps, out = sys.argv[1:7]
tuned = TunedClip.load(run)
pipe = ContextEditPipeline.from_pretrained(tuned.model, device="cpu")
if int(frames) < tuned.num_frames:
    import dataclasses
    tuned = dataclasses.replace(tuned, frames=tuned.source_frames()[:int(frames)], latents=tuned.latents[:int(frames)])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
timings = {}
t = time.perf_counter()
(edit,) = pipe.edit(tuned, sys.argv[7], steps=int(steps), window=int(window), overlap=int(overlap), timings=timings)
seconds = time.perf_counter() - t
np.save(out, edit)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mib": peak / 1024, "loaded_rss_mib": base / 1024, "seconds": seconds, "timings": timings}))
"""


def edit_in_child(run: Path, frames: int, window: int, overlap: int, steps: int, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", EDIT_CHILD, str(run), str(frames), str(window), str(overlap), str(steps),
                           str(out), TARGET], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(source: np.ndarray, edited: np.ndarray, window: int, overlap: int) -> dict:
    src, out = shapes.oracle_clip(source), shapes.oracle_clip(edited)
    hits = [o["colour"] == "blue" and o["shape"] == "circle" for o in out]
    errors = [np.hypot(o["centroid"][0] - s["centroid"][0], o["centroid"][1] - s["centroid"][1])
              for o, s in zip(out, src) if o["centroid"] and s["centroid"]]
    owners = np.zeros(len(source), dtype=int)
    first = np.full(len(source), -1)
    for k, idx in enumerate(window_plan(len(source), window, overlap)):
        for f in (idx if k == 0 else idx[1:]):
            owners[f] += 1
            first[f] = k if first[f] < 0 else first[f]
    inside, seams = [], []
    for f in range(len(source) - 1):
        a, b, sa, sb = out[f], out[f + 1], src[f], src[f + 1]
        if not (a["centroid"] and b["centroid"] and sa["centroid"] and sb["centroid"]):
            continue
        dx = int(round(sb["centroid"][0] - sa["centroid"][0]))
        dy = int(round(sb["centroid"][1] - sa["centroid"][1]))
        union = (np.roll(a["mask"], (dy, dx), axis=(0, 1)) | b["mask"]).sum()
        iou = float((np.roll(a["mask"], (dy, dx), axis=(0, 1)) & b["mask"]).sum() / union) if union else 1.0
        one_window = owners[f] == 1 and owners[f + 1] == 1 and first[f] == first[f + 1]
        (inside if one_window else seams).append(iou)
    return {"follows_prompt": float(np.mean(hits)), "motion_error_px": float(np.mean(errors)) if errors else None,
            "temporal_iou_inside": float(np.mean(inside)) if inside else None,
            "temporal_iou_seams": float(np.mean(seams)) if seams else None, "seam_pairs": len(seams)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--windows", default="16,8", help="comma list of window sizes to tune and edit with")
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--tune-steps", type=int, default=200)
    parser.add_argument("--edit-steps", type=int, default=20)
    parser.add_argument("--short", type=int, default=16, help="frames of the short edit the memory is compared with")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--work", default=str(ROOT / "bench" / "work" / "long-clip"))
    parser.add_argument("--out", default=str(RESULTS))
    update_docs.add_flag(parser)
    args = parser.parse_args(argv)
    update_docs.check(args, args.out)
    from contextedit import ContextEditPipeline

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    source = sweep_clip(args.frames)
    pipe = ContextEditPipeline.from_pretrained(args.model, device="cpu")
    rows = []
    for window in (int(w) for w in args.windows.split(",")):
        overlap = min(args.overlap, window - 2)
        t = time.perf_counter()
        tuned = pipe.tune(source, SOURCE, steps=args.tune_steps, window=window, seed=0)
        tune_s = time.perf_counter() - t
        run = tuned.save(work / f"run-w{window}", overwrite=True)
        full = edit_in_child(run, args.frames, window, overlap, args.edit_steps, work / f"edit-w{window}.npy")
        short = edit_in_child(run, args.short, window, overlap, args.edit_steps, work / f"edit-w{window}-short.npy")
        edited = np.load(work / f"edit-w{window}.npy")
        rows.append({"window": window, "overlap": overlap, "tune_s": tune_s, "windows": full["timings"]["windows"],
                     "full": full, "short": short, "peak_rss_ratio": full["peak_rss_mib"] / short["peak_rss_mib"],
                     "fusion_store_mib": {"full": full["timings"]["fusion_store_mib"], "short": short["timings"]["fusion_store_mib"]},
                     **score(source, edited, window, overlap)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("full", "short")}), flush=True)
    doc = {"command": "python bench/long_clip.py " + " ".join(argv or sys.argv[1:]), "frames": args.frames,
           "short_frames": args.short, "tune_steps": args.tune_steps, "edit_steps": args.edit_steps, "model": args.model,
           "targets": {"peak_rss_ratio": "≤ 1.3", "follows_prompt": "≥ 0.9", "motion_error_px": "≤ 2",
                       "seams": "temporal IoU at seams within 0.05 of inside windows"},
           "rows": rows}
    write_json(args.out, doc)
    if args.update_docs:
        write_benchmarks(doc)


def write_benchmarks(doc: dict) -> None:
    lines = ["<!-- long-clip:begin -->", "",
             f"`{doc['command'].strip()} --update-docs` — {doc['frames']} frames of the shapes world, `tiny`, "
             f"{doc['tune_steps']} tune steps, T = {doc['edit_steps']}, CPU:", "",
             "| window / overlap | windows | peak RSS full / 16 frames | fusion store / window | follows prompt "
             "| motion error | temporal IoU inside / seams | tune |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['window']} / {r['overlap']} | {r['windows']} | {r['full']['peak_rss_mib']:.0f} / "
                     f"{r['short']['peak_rss_mib']:.0f} MiB ({r['peak_rss_ratio']:.2f}×) | {r['fusion_store_mib']['full']:.1f} MiB | "
                     f"{100 * r['follows_prompt']:.0f} % | {r['motion_error_px']:.2f} px | "
                     f"{r['temporal_iou_inside']:.3f} / {r['temporal_iou_seams']:.3f} | {r['tune_s'] / 60:.1f} min |")
    from quality import write_block

    write_block(ROOT / "BENCHMARKS.md", "\n".join(lines + ["", "<!-- long-clip:end -->"]), "Long clips (issue 18)")


if __name__ == "__main__":
    main()
