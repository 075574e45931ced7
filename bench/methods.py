"""Method table: the peers' recipes re-expressed as contextedit settings, run on the same clips,
tunes and seeds as ``bench/quality.py`` and scored by the same pixel oracle (issue 28).

These are **recipes re-expressed on this project's code, not the peers' own code**: each row keeps
what defines the method (its inversion, its attention fusion, its masks, whether an adapter is
tuned) and runs it through contextedit's pipeline. All rows share the tune (100 steps, the same
seed: a recipe without an adapter edits the ``--no-adapter`` run, Tune-A-Video's own tuning), the
model's guidance, the mask reading of the blend (which region a changed word edits), T and seeds.
What contextedit adds and no peer has — guidance, noise and negative prompt of their own for a
background region, the background's words as its prompt and only the object's core pinned, the
pixel composite — is switched off in every recipe row.

The fusion windows are the peers' published example settings, as fractions of T:
FateZero (self 0.6, cross 0.8, self-attention of the conditional half, blend masks),
Video-P2P (self 0.7, cross 0.2, null-text inversion, LocalBlend), PnP-Inversion's P2P +
direct inversion (self 0.6, cross 0.4, no masks).

The contextedit rows are ``bench/results/quality.json``'s arms (same clips, tunes and seeds), read
with ``--defaults``. Writes ``bench/results/methods.json``; with ``--update-docs`` the table in
BENCHMARKS.md. ``--shard i/n`` and ``--merge`` as in quality.py.

    python bench/methods.py --shard 0/2 --work bench/work/q --reuse --out bench/work/m0.json   # and 1/2
    python bench/methods.py --merge bench/work/m0.json bench/work/m1.json --update-docs
    python bench/methods.py --clips 1 --tune-steps 2 --edit-steps 2 --recipes Tune-A-Video   # smoke
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bootstrap as stats  # noqa: E402
import quality  # noqa: E402
import update_docs  # noqa: E402

from contextedit.fileio import read_json, write_json  # noqa: E402
from contextedit.models.loading import load_components  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- methods:begin -->", "<!-- methods:end -->"
# What every peer lacks: contextedit's own treatment of a background region and the pixel composite.
WITHOUT_OURS = {"background_noise": 0.0, "background_negative": "empty", "composite": "off",
                "background_prompt": "full", "background_noise_area": "region", "background_pin": "object",
                "background_bias": "frame"}
RECIPES = {
    "Tune-A-Video": {"variant": "no-adapter", "edit": {"inversion": "ddim", "fusion": False, "blend": False,
                                                       "local_blend": "off"}},
    "FateZero": {"variant": "no-adapter", "edit": {"inversion": "ddim", "self_fusion": 0.6, "cross_fusion": 0.8,
                                                   "self_half": "cond", "blend": True, "local_blend": "on"}},
    "Video-P2P": {"variant": "no-adapter", "edit": {"inversion": "null-text", "self_fusion": 0.7, "cross_fusion": 0.2,
                                                    "blend": True, "local_blend": "on"}},
    "PnP-Inversion": {"variant": "no-adapter", "edit": {"inversion": "direct", "offset_inside": 1.0, "self_fusion": 0.6,
                                                        "cross_fusion": 0.4, "blend": False, "local_blend": "off"}},
}
# quality.json's arms, by the names the table gives them
OURS = {"adapter": "contextedit (defaults)", "no-adapter": "contextedit, no adapter"}


def recipe_settings(name: str, model: str) -> dict:
    """The recipe's EditOptions: its own settings over the peers' common ones, with the model's
    guidance everywhere (a background region gets no guidance of its own)."""
    guidance = _recommended(model).get("guidance")
    same = {"guidance": guidance, "background_guidance": guidance} if guidance is not None else {}
    edit = RECIPES[name]["edit"]
    return {**WITHOUT_OURS, **same, "background_offset_inside": edit.get("offset_inside", 1.0), **edit}


def run(args) -> dict:
    entries = json.loads(quality.PROMPTS.read_text())[: args.clips]
    picked = list(range(len(entries)))
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        picked = picked[i::n]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    for k, index in enumerate(picked):
        for name in args.recipes.split(","):
            q = argparse.Namespace(**{**vars(args), "tag": _slug(name), "guidance": None,
                                      "edit_options": json.dumps(recipe_settings(name, args.model))})
            rows += [{**r, "variant": name} for r in quality.run_clip(entries[index], work, q, RECIPES[name]["variant"])]
        print(f"[{time.perf_counter() - start:7.1f}s] clip {k + 1}/{len(picked)} done", flush=True)
    return {"command": "python bench/methods.py " + " ".join(sys.argv[1:]), "clips": len(picked),
            "seconds": time.perf_counter() - start, "recipes": {n: recipe_settings(n, args.model) for n in args.recipes.split(",")},
            "rows": rows}


def table(result: dict, defaults: dict | None) -> dict:
    """Per row: success by kind and mean, and the other measures, with 95 % intervals over clips;
    and contextedit's default minus the best recipe on mean success (clips paired)."""
    rows = list(result["rows"])
    if defaults:
        clips = {r["clip"] for r in rows}
        rows += [{**r, "variant": OURS[r["variant"]]} for r in defaults["rows"] if r["variant"] in OURS and r["clip"] in clips]
    arms = stats.arm_intervals(rows, quality.EDIT_KINDS)
    recipes = [v for v in arms if v in RECIPES]
    out = {"arms": arms}
    if recipes and OURS["adapter"] in arms:
        best = max(recipes, key=lambda v: arms[v]["success_mean"]["mean"])
        clips = sorted({r["clip"] for r in rows})
        lead = {ours: stats.paired(stats.per_clip(rows, clips, ours, "success_mean", quality.EDIT_KINDS),
                                   stats.per_clip(rows, clips, best, "success_mean", quality.EDIT_KINDS))
                for ours in OURS.values() if ours in arms}
        out["best_recipe"], out["lead_over_best_recipe"] = best, lead
    return out


def write_table(result: dict, path: Path) -> None:
    arms, measures = result["table"]["arms"], [f"success_{k}" for k in quality.EDIT_KINDS] + ["success_mean"]
    lines = [MARK_BEGIN, "", f"Command: `{result['command']}`, {result['clips']} clips of the shapes world, the same tunes "
             "and seeds as the quality table. Recipes re-expressed on contextedit's code, not the peers' own code. "
             "Success per kind with its 95 % bootstrap interval over clips.", "",
             "| method | " + " | ".join(m.removeprefix("success_") for m in measures) + " | object kept | motion (px) |",
             "|---" * (len(measures) + 3) + "|"]
    for name in [*RECIPES, *OURS.values()]:
        if name in arms:
            a = arms[name]
            lines.append(f"| {name} | " + " | ".join(stats.fmt(a[m], 2) for m in measures)
                         + f" | {stats.fmt(a['object_kept'], 2)} | {stats.fmt(a['motion_error_px'], 2)} |")
    t = result["table"]
    if t.get("lead_over_best_recipe"):
        lines += [""] + [f"- {ours} − {t['best_recipe']} (the best recipe) on mean success: {stats.fmt(lead, 3)}"
                         f"{' (excludes 0)' if lead and lead['excludes_0'] else ' (includes 0)'}."
                         for ours, lead in t["lead_over_best_recipe"].items()]
    lines += ["", MARK_END]
    quality.write_block(path, "\n".join(lines), "Method table (shapes world)")


@functools.cache
def _recommended(model: str) -> dict:
    return load_components(model, "cpu", "fp32").recommended.get("edit", {})


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default in (("--clips", 24), ("--frames", 8), ("--stride", 2), ("--tune-steps", 100), ("--edit-steps", 20),
                          ("--seed", 0)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, of: " + ", ".join(RECIPES))
    p.add_argument("--work", default=str(ROOT / "bench" / "work" / "q"), help="the clips and tuned runs (quality.py's --work)")
    p.add_argument("--reuse", action="store_true", help="keep tuned runs found in --work with the same settings")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--shard", default=None)
    p.add_argument("--merge", nargs="+", default=None)
    p.add_argument("--defaults", default=str(ROOT / "bench" / "results" / "quality.json"),
                   help="quality.py's result: contextedit's own rows ('' for none)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "methods.json"))
    p.add_argument("--benchmarks", default=None)
    update_docs.add_flag(p)
    args = p.parse_args(argv)
    unknown = set(args.recipes.split(",")) - set(RECIPES)
    if unknown:
        p.error(f"unknown recipe(s) {sorted(unknown)}; pick from {', '.join(RECIPES)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    update_docs.check(args, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        parts = [read_json(p) for p in args.merge]
        result = {**parts[0], "command": parts[0]["command"] + f"  (merged from {len(parts)} shards)",
                  "clips": sum(p["clips"] for p in parts), "seconds": sum(p["seconds"] for p in parts),
                  "rows": [r for p in parts for r in p["rows"]]}
    else:
        result = run(args)
    defaults = read_json(args.defaults) if args.defaults and not args.shard else None
    result["table"] = table(result, defaults)
    write_json(args.out, result)
    benchmarks = update_docs.benchmarks_file(args) if not args.shard else None
    if benchmarks:
        write_table(result, benchmarks)
    print(json.dumps({v: {m: round(s["mean"], 3) for m, s in a.items() if s and m.startswith("success")}
                      for v, a in result["table"]["arms"].items()}, indent=1))
    return result


if __name__ == "__main__":
    main()
