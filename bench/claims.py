"""The paper's three claims for the context adapter, measured on the shapes world (issue 16).

  a. Faster convergence (paper Fig. 11/12): the text-to-image training loss of the two `tiny`
     variants (adapter trained jointly vs none, from bench/results/train-tiny.json); the tuning
     loss of the 24 clips of bench/quality.py, adapter vs none, same seeds; and a held-out clip
     tuned for 150 steps with five seeds per arm (tuned here).
  b. Better edits (Table 2's analogue): bench/results/quality.json's rows, adapter vs no adapter,
     with 95 % bootstrap intervals over clips.
  c. Better generation (the FID claim's analogue): the shipped model's oracle agreement on 36
     prompts × 4 seeds with and without its base adapter (sampled here).

Writes bench/results/claims.json and three PNG plots beside it; with ``--update-docs`` also the
BENCHMARKS.md block.

    python bench/claims.py --update-docs            # ~10 min on 2 CPU cores
    python bench/claims.py --no-tune --update-docs  # reuse the held-out tunes in claims.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import bootstrap as stats  # noqa: E402
import quality  # noqa: E402
import tiny_data  # noqa: E402
import update_docs  # noqa: E402
from contextedit import video  # noqa: E402
from contextedit.testing import shapes  # noqa: E402
from contextedit.fileio import read_json, write_json  # noqa: E402
from contextedit.commands.tune import TuneOptions, tune  # noqa: E402

RESULTS = BENCH / "results"
HELD_OUT = {"shape": "triangle", "colour": "green", "background": "gray", "direction": "up"}
LAST = 30
MARK_BEGIN, MARK_END = "<!-- claims:begin -->", "<!-- claims:end -->"


# ---------------------------------------------------------------------------------------------
# a. convergence


def held_out_tunes(args, work: Path) -> dict:
    """Tune one clip outside the 24 with and without the adapter, same seeds: every step's loss."""
    frames, caption = shapes.make_clip(**HELD_OUT, start=None, rng=np.random.default_rng(1234))
    clip = work / "held-out.mp4"
    video.write_video(frames, clip, fps=8)
    curves = {"adapter": [], "no-adapter": []}
    rel = []
    for seed in range(args.seeds):
        for arm in curves:
            result = tune(TuneOptions(video=str(clip), prompt=caption, frames=8, stride=2, steps=args.tune_steps,
                                      lr=args.lr, out=str(work / f"{arm}-{seed}"), overwrite=True, adapter=arm == "adapter",
                                      checkpointing=False, model=args.model, device="cpu", seed=seed))
            curves[arm].append(result.manifest["loss_curve"])
            if arm == "adapter":
                rel.append(result.manifest["adapter_rel_scale"])
    return {"clip": {**HELD_OUT, "caption": caption}, "steps": args.tune_steps, "lr": args.lr, "seeds": args.seeds,
            "curves": curves, "adapter_rel_scale": rel}


def default_tune(args, work: Path) -> dict:
    """``contextedit tune`` at its defaults on the bundled clip: the adapter's bias scale."""
    steps = {"steps": args.default_steps} if args.default_steps else {}  # only tests shorten it
    result = tune(TuneOptions(video=str(ROOT / "examples" / "red-circle.mp4"), prompt="a red circle moving right on a black background",
                              out=str(work / "default"), overwrite=True, model=args.model, device="cpu", **steps))
    m = result.manifest
    return {"command": "contextedit tune examples/red-circle.mp4 --prompt \"a red circle moving right on a black background\"",
            "steps": m["steps"], "lr": m["lr"], "adapter_lr": m["adapter_lr"], "adapter_init": m["adapter_init"],
            "adapter_rel_scale": m["adapter_rel_scale"], "final_loss": m["final_loss"]}


def convergence(held: dict, quality_rows: list[dict], train: dict) -> dict:
    """Mean loss over the last 30 steps, per arm, with intervals; the paired difference."""
    out = {}
    last = {arm: [float(np.mean(c[-LAST:])) for c in curves] for arm, curves in held["curves"].items()}
    out["held_out"] = {"adapter": stats.interval(last["adapter"]), "no-adapter": stats.interval(last["no-adapter"]),
                       "adapter_minus_no_adapter": stats.paired(last["adapter"], last["no-adapter"]),
                       "steps": held["steps"], "seeds": held["seeds"]}
    tunes = _quality_tunes(quality_rows)
    if tunes:
        clips = sorted(set(tunes["adapter"]) & set(tunes["no-adapter"]))
        per = {arm: [float(np.mean(tunes[arm][c][-LAST:])) for c in clips] for arm in tunes}
        out["quality_clips"] = {"adapter": stats.interval(per["adapter"]), "no-adapter": stats.interval(per["no-adapter"]),
                                "adapter_minus_no_adapter": stats.paired(per["adapter"], per["no-adapter"]),
                                "clips": len(clips), "steps": len(next(iter(tunes["adapter"].values())))}
    variants = train.get("variants", {})
    if {"joint", "none"} <= set(variants):
        joint, none = (variants[v]["denoiser"]["losses"] for v in ("joint", "none"))
        n = min(len(joint), len(none))
        windows = [(a, a + 100) for a in range(n - 500, n, 100)]  # last 500 steps in windows of 100
        out["text_to_image"] = {
            "steps": {"joint": len(joint), "none": len(none)},
            "last_500": {"joint": stats.interval(joint[n - 500:n]), "none": stats.interval(none[n - 500:n])},
            "last_500_windows_minus": stats.paired([np.mean(joint[a:b]) for a, b in windows], [np.mean(none[a:b]) for a, b in windows]),
        }
    return out


def _quality_tunes(rows: list[dict]) -> dict:
    tunes = {"adapter": {}, "no-adapter": {}}
    for r in rows:
        if r["kind"] == "tune" and r.get("tune_losses"):
            tunes[r["variant"]][r["clip"]] = r["tune_losses"]
    return tunes if tunes["adapter"] and tunes["no-adapter"] else {}


# ---------------------------------------------------------------------------------------------
# c. generation


def generation(model_folder: Path, seeds: int, steps: int = 50) -> dict:
    """Oracle agreement with and without the base adapter, per image, with a paired interval."""
    arms = {}
    for arm, use in (("with_adapter", True), ("without_adapter", False)):
        arms[arm], _ = tiny_data.evaluate(model_folder, steps=steps, seeds=tuple(range(seeds)), adapter=use)
    hits = {arm: arms[arm]["hits"] for arm in arms}
    return {"arms": {arm: {k: v for k, v in s.items() if k != "hits"} | {"all": stats.interval(hits[arm])} for arm, s in arms.items()},
            "with_minus_without": stats.paired(hits["with_adapter"], hits["without_adapter"]), "hits": hits}


# ---------------------------------------------------------------------------------------------
# Plots and the BENCHMARKS.md block


def plot_convergence(held: dict, quality_rows: list[dict], train: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    variants = train.get("variants", {})
    for name, colour in (("joint", "C0"), ("none", "C1")):
        if name in variants:
            losses = np.asarray(variants[name]["denoiser"]["losses"])
            axes[0].plot(_smooth(losses, 50), colour, label=f"{name} adapter" if name == "joint" else "no adapter")
    axes[0].set(title="text-to-image training of tiny (moving mean of 50)", xlabel="step", ylabel="loss")
    tunes = _quality_tunes(quality_rows)
    for ax, curves, title in ((axes[1], {a: list(t.values()) for a, t in tunes.items()}, f"tuning, {len(tunes.get('adapter', {}))} clips"),
                              (axes[2], held["curves"], f"tuning, held-out clip, {held['seeds']} seeds")):
        for arm, colour in (("adapter", "C0"), ("no-adapter", "C1")):
            if not curves.get(arm):
                continue
            c = np.asarray(curves[arm])
            m, lo, hi = _band(c)
            ax.plot(_smooth(m, 5), colour, label=arm)
            ax.fill_between(np.arange(len(m)), _smooth(lo, 5), _smooth(hi, 5), color=colour, alpha=0.2)
        ax.set(title=title + " (mean, 95 % band)", xlabel="step", ylabel="loss")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_bars(groups: dict[str, dict[str, dict]], title: str, path: Path, ylabel: str) -> None:
    """groups: measure → arm → interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = list(groups)
    arms = sorted({a for g in groups.values() for a in g})
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(measures), 4))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        xs = np.arange(len(measures)) + k * width
        stat = [groups[m].get(arm) for m in measures]
        means = [s["mean"] if s else 0 for s in stat]
        err = np.array([[s["mean"] - s["low"], s["high"] - s["mean"]] if s else [0, 0] for s in stat]).T
        ax.bar(xs, means, width, yerr=err, capsize=3, label=arm)
    ax.set_xticks(np.arange(len(measures)) + width * (len(arms) - 1) / 2, measures, rotation=15)
    ax.set(title=title, ylabel=ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _smooth(x, n: int):
    x = np.asarray(x, dtype=float)
    if len(x) < n:
        return x
    padded = np.pad(x, (n // 2, n - 1 - n // 2), mode="edge")  # no dip towards 0 at the ends
    return np.convolve(padded, np.ones(n) / n, mode="valid")


def _band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step mean and bootstrap band over the curves (rows)."""
    rng = np.random.default_rng(0)
    boot = curves[rng.integers(0, len(curves), size=(1000, len(curves)))].mean(axis=1)
    return curves.mean(axis=0), np.quantile(boot, 0.025, axis=0), np.quantile(boot, 0.975, axis=0)


def write_block(result: dict, path: Path) -> None:
    f, conv, gen = stats.fmt, result["convergence"], result["generation"]
    q = result["edits"]
    lines = [MARK_BEGIN, "", f"Command: `python bench/claims.py --update-docs` ({result['seconds']:.0f} s); intervals are 95 % bootstrap "
             "intervals (clips, seeds or images resampled; differences paired).", "",
             "**a. Convergence** (plot: `bench/results/claims-convergence.png`). Mean loss over the last 30 tuning steps:", "",
             "| | with adapter | no adapter | adapter − none |", "|---|---|---|---|"]
    h = conv["held_out"]
    lines.append(f"| held-out clip, {h['steps']} steps, {h['seeds']} seeds | {f(h['adapter'], 4)} | {f(h['no-adapter'], 4)} "
                 f"| {f(h['adapter_minus_no_adapter'], 4)} |")
    if "quality_clips" in conv:
        c = conv["quality_clips"]
        lines.append(f"| the {c['clips']} quality clips, {c['steps']} steps | {f(c['adapter'], 4)} | {f(c['no-adapter'], 4)} "
                     f"| {f(c['adapter_minus_no_adapter'], 4)} |")
    if "text_to_image" in conv:
        t = conv["text_to_image"]
        lines.append(f"| text-to-image training of tiny, last 500 of {t['steps']['joint']} steps | {f(t['last_500']['joint'], 4)} | "
                     f"{f(t['last_500']['none'], 4)} | {f(t['last_500_windows_minus'], 4)} |")
    lines += ["", "**b. Edits** at the defaults, 3 edits per clip (plot: `bench/results/claims-edits.png`):", "",
              "| measure | with adapter | no adapter | adapter − none |", "|---|---|---|---|"]
    for m in q.get("adapter", {}):
        lines.append(f"| {m} | {f(q['adapter'][m])} | {f(q['no-adapter'][m])} | {f(q.get('adapter_minus_no_adapter', {}).get(m))} |")
    a = gen["arms"]
    lines += ["", f"**c. Generation**: `generate --model tiny`, 36 prompts × {len(a['with_adapter']['seeds'])} seeds, oracle agreement "
              "(plot: `bench/results/claims-generate.png`):", "",
              "| with the base adapter | without (`--adapter none`) | with − without |", "|---|---|---|",
              f"| {f(a['with_adapter']['all'])} | {f(a['without_adapter']['all'])} | {f(gen['with_minus_without'])} |", ""]
    d = result.get("default_tune")
    if d:
        rel = d["adapter_rel_scale"]
        lines += [f"`adapter_rel_scale` after `{d['command']}` (defaults: {d['steps']} steps, lr {d['lr']:g}, adapter lr "
                  f"{d['adapter_lr']:g}, init {d['adapter_init']}): t = 100 {rel['100']:.3f}, t = 500 {rel['500']:.3f}, "
                  f"t = 900 {rel['900']:.3f} (target at t = 500: ≥ 0.05).", ""]
    lines.append(MARK_END)
    quality.write_block(path, "\n".join(lines), "The context adapter's claims (shapes world)")


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--model-folder", default=str(ROOT / "contextedit" / "assets" / "tiny"), help="for claim c")
    p.add_argument("--tune-steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-4, help="the UNet's tuning lr, as bench/quality.py tunes")
    p.add_argument("--seeds", type=int, default=5, help="held-out tunes per arm")
    p.add_argument("--generate-seeds", type=int, default=4)
    p.add_argument("--generate-steps", type=int, default=50, help="DDIM steps of claim c's generations (fewer: tests only)")
    p.add_argument("--default-steps", type=int, default=None, help="shorten the defaults tune (tests only)")
    p.add_argument("--no-tune", action="store_true", help="reuse the tunes and the generation figures in --out (plots and tables only)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS / "claims.json"))
    p.add_argument("--quality", default=str(RESULTS / "quality.json"))
    p.add_argument("--train", default=str(RESULTS / "train-tiny.json"))
    p.add_argument("--benchmarks", default=None,
                   help="Markdown file for the block (default: BENCHMARKS.md with --update-docs, else none; \"\": none)")
    update_docs.add_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    update_docs.check(args, args.out, args.benchmarks)  # the plots go beside --out
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    previous = read_json(args.out) if Path(args.out).is_file() else {}
    with tempfile.TemporaryDirectory(prefix="claims-") as tmp:
        import os

        os.environ["CONTEXTEDIT_RUNS"] = str(Path(tmp) / "runs")  # the user's runs/latest stays theirs
        if args.no_tune and "held_out" in previous:
            held, default = previous["held_out"], previous.get("default_tune")
        else:
            held, default = held_out_tunes(args, Path(tmp)), default_tune(args, Path(tmp))
    q = read_json(args.quality) if Path(args.quality).is_file() else {"rows": []}
    train = read_json(args.train) if Path(args.train).is_file() else {}
    reuse = args.no_tune and "generation" in previous
    gen = previous["generation"] if reuse else generation(Path(args.model_folder), args.generate_seeds, args.generate_steps)
    edits = q.get("intervals") or quality.intervals(q["rows"])
    result = {"held_out": held, "default_tune": default, "convergence": convergence(held, q["rows"], train),
              "edits": edits, "generation": gen,
              "seconds": previous["seconds"] if reuse else time.perf_counter() - start}
    write_json(args.out, result)
    out = Path(args.out).parent
    plot_convergence(held, q["rows"], train, out / "claims-convergence.png")
    measures = ["success_colour", "success_shape", "success_background", "success_mean", "background_kept", "temporal_iou"]
    if edits.get("adapter"):
        plot_bars({m: {a: edits[a][m] for a in ("adapter", "no-adapter") if a in edits} for m in measures},
                  "edits at the defaults (95 % intervals over clips)", out / "claims-edits.png", "rate / score")
    plot_bars({"oracle agreement": {a: gen["arms"][a]["all"] for a in gen["arms"]}}, "generate, 36 prompts × seeds",
              out / "claims-generate.png", "agreement")
    benchmarks = update_docs.benchmarks_file(args)
    if benchmarks:
        write_block(result, benchmarks)
    return result


if __name__ == "__main__":
    main()
