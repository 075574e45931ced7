"""A V2VBench-style table (issue 19): contextedit and its two ablations, scored like the papers.

Arms (each clip tuned once per tuning setting, edited with every prompt of its set):

- ``contextedit``: the defaults (context adapter, the model's own inversion);
- ``no-adapter``: tuned and edited without the context adapter (a Tune-A-Video-like baseline);
- ``ddim-inversion``: contextedit's tuned runs edited with plain DDIM inversion (no direct
  inversion, no null-text), which is what most peers start from.

Every edit is scored by ``contextedit eval`` against the frames it was tuned on (the run folder's
``source.mp4``) with CLIP-T as 100 × cosine (V2VBench, LOVEU-TGVE), CLIP-F (consecutive cosine),
PickScore, DINO consistency, motion alignment (−flow EPE, V2VBench's sign) and warp error. Means
per arm, and per edit kind where the prompt file gives one, go to ``--results`` (JSON) and a
markdown table to stdout (``--table`` writes it to a file).

On a GPU with real weights (the recipe in BENCHMARKS.md; the scorers download once)::

    python bench/video_table.py --prompts prompts/loveu-tgve.json --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --device cuda --out bench/work/table --results bench/results/video-table.json

On the CPU with the embedded models (a smoke run: the figures say nothing about real edits)::

    python bench/video_table.py --prompts prompts/red-circle.json --model tiny --scorers tiny --tune-steps 50 \
        --results bench/results/video-table-tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import update_docs  # noqa: E402
from contextedit.commands.batch import plan_jobs, run_batch  # noqa: E402
from contextedit.commands.edit import EditOptions, edit  # noqa: E402
from contextedit.commands.evaluate import EvalOptions, evaluate  # noqa: E402
from contextedit.fileio import read_json, write_json  # noqa: E402
from contextedit.prompts import load_prompt_sets  # noqa: E402

ARMS = ("contextedit", "no-adapter", "ddim-inversion")
METRICS = "clip,pickscore,dino,flow,warp"
# Table columns: (label, key in eval's means, sign applied)
COLUMNS = (("CLIP-T ×100 ↑", "clip_text_logit", 1), ("CLIP-F ↑", "clip_temporal", 1), ("PickScore ↑", "pickscore", 1),
           ("DINO ↑", "dino_temporal", 1), ("Motion (−EPE) ↑", "flow_epe", -1), ("Warp err ↓", "warp_error", 1))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", default=str(ROOT / "prompts" / "loveu-tgve.json"), help="prompt file (prompts/ schema)")
    p.add_argument("--model", default=None, help="base model (hub id, folder, tiny); default: contextedit's")
    p.add_argument("--device", default="auto")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--tune-steps", type=int, default=500)
    p.add_argument("--edit-steps", type=int, default=None)
    p.add_argument("--frames", default="8")
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scorers", default=None, help="'tiny': every scorer's tiny stand-in (a smoke run)")
    p.add_argument("--clip-model", default="openai/clip-vit-large-patch14")
    p.add_argument("--pickscore-model", default="yuvalkirstain/PickScore_v1")
    p.add_argument("--dino-model", default="facebook/dinov2-base")
    p.add_argument("--flow", default="farneback", help="farneback | raft (with --flow-model FILE.safetensors)")
    p.add_argument("--flow-model", default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "work" / "table"), help="scratch folder: runs, edits, eval JSON")
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "video-table.json"))
    p.add_argument("--table", default=None, help="also write the markdown table here")
    update_docs.add_flag(p)
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not args.arms or set(args.arms) - set(ARMS):
        p.error(f"--arms takes a comma list of {', '.join(ARMS)}")
    if args.scorers == "tiny":
        args.clip_model = args.pickscore_model = args.dino_model = "tiny"
    return args


def tune_and_edit(args, arm: str) -> Path:
    """Batch-run the prompt file for a tuned arm; returns its folder (``<clip-stem>/{run,edits}``)."""
    shared = {"tune_steps": args.tune_steps, "frames": args.frames, "stride": args.stride, "device": args.device,
              "seed": args.seed, "adapter": arm != "no-adapter"}
    shared.update({k: v for k, v in (("model", args.model), ("edit_steps", args.edit_steps)) if v is not None})
    out = Path(args.out) / arm
    result = run_batch(plan_jobs(jobs_file(args), shared), out, workers=1)
    if result.failed:
        raise SystemExit(f"{arm}: jobs failed: {result.failed}")
    return out


def jobs_file(args) -> Path:
    """The prompt file with absolute video paths: a set's ``video`` relative to the working folder
    (as ``edit --prompts-file`` reads it) or else to the prompt file (as ``batch`` reads it)."""
    sets = read_json(args.prompts, "prompt file")
    for entry in sets if isinstance(sets, list) else [sets]:
        video = Path(entry["video"])
        entry["video"] = str((video if video.exists() else Path(args.prompts).parent / video).absolute())
    path = Path(args.out) / "jobs.json"
    write_json(path, sets)
    return path


def ddim_edits(args, tuned: Path) -> Path:
    """contextedit's tuned runs edited again with plain DDIM inversion."""
    out = Path(args.out) / "ddim-inversion"
    for stem, job in read_json(tuned / "batch.json")["jobs"].items():
        edit(EditOptions(prompts=job["prompts"], run=job["run"], out=str(out / stem / "edits"), overwrite=True,
                         inversion="ddim", steps=args.edit_steps, device=args.device))
    return out


def score_arm(args, folder: Path, kinds: dict[str, str | None]) -> dict:
    """eval on every clip's edits against its tuned frames; means over all edits and per kind."""
    rows = []
    for edits in sorted(folder.glob("*/edits")):
        tuned = "no-adapter" if folder.name == "no-adapter" else "contextedit"  # ddim-inversion edits contextedit's runs
        source = Path(args.out) / tuned / edits.parent.name / "run" / "source.mp4"
        result = evaluate(EvalOptions(paths=[str(edits)], metrics=METRICS, source=str(source), clip_model=args.clip_model,
                                      pickscore_model=args.pickscore_model, dino_model=args.dino_model, flow=args.flow,
                                      flow_model=args.flow_model, device=args.device,
                                      json_out=str(edits.parent / "eval.json")))
        rows += [{**r, "path": os.path.relpath(r["path"], args.out), "clip": edits.parent.name, "kind": kinds.get(r["prompt"])}
                 for r in result["results"]]
        models = result["models"]
    means = {"all": _means(rows)}
    for kind in sorted({r["kind"] for r in rows if r["kind"]}):
        means[kind] = _means([r for r in rows if r["kind"] == kind])
    return {"edits": len(rows), "means": means, "models": models,
            "rows": [{k: v for k, v in r.items() if k != "per_frame"} for r in rows]}


def _means(rows: list[dict]) -> dict:
    out = {}
    for _, key, _ in COLUMNS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def markdown(result: dict, group: str = "all") -> str:
    lines = ["| arm | edits | " + " | ".join(label for label, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for arm, scored in result["arms"].items():
        means = scored["means"].get(group, {})
        cells = ["—" if means.get(key) is None else f"{sign * means[key]:.4g}" for _, key, sign in COLUMNS]
        lines.append(f"| {arm} | {scored['edits']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    update_docs.check(args, args.results, args.table)
    kinds = {p: t for s in load_prompt_sets(args.prompts) for p, t in zip(s.prompts, s.types)}
    t0 = time.time()
    folders = {}
    if "contextedit" in args.arms or "ddim-inversion" in args.arms:
        folders["contextedit"] = tune_and_edit(args, "contextedit")
    if "no-adapter" in args.arms:
        folders["no-adapter"] = tune_and_edit(args, "no-adapter")
    if "ddim-inversion" in args.arms:
        folders["ddim-inversion"] = ddim_edits(args, folders["contextedit"])
    arms = {arm: score_arm(args, folders[arm], kinds) for arm in ARMS if arm in args.arms}
    result = {"prompts": Path(args.prompts).name, "model": args.model or "default", "device": args.device,
              "tune_steps": args.tune_steps, "edit_steps": args.edit_steps, "frames": args.frames, "stride": args.stride,
              "seed": args.seed, "machine": platform.processor() or platform.machine(), "minutes": (time.time() - t0) / 60,
              "arms": arms}
    write_json(args.results, result)
    table = markdown(result)
    if args.table:
        Path(args.table).write_text(table + "\n")
    print(json.dumps(next(iter(arms.values()))["models"]))
    print(table)
    return result


if __name__ == "__main__":
    main()
