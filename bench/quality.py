"""Quality benchmark on the shapes world: edits scored by the pixel oracle, adapter vs no adapter.

For every clip of ``prompts/shapes.json`` it tunes twice on the same clip with the same steps and
seed — with the context adapter and without it (``--no-adapter``, the Tune-A-Video baseline) —
edits each run with the clip's colour, shape and background prompts at ``edit``'s defaults (or
``--edit-options``), plus the source prompt itself (a reconstruction), and reads every edited
frame with ``contextedit.testing.shapes.oracle``:

- edit success: the majority of frames show the target colour / shape / background;
- background kept (colour and shape edits): share of pixels outside the object's path in both the
  source and the target (the target rendered on the same path) that keep the source background;
- motion fidelity: mean distance between the edited and the source centroids (px);
- temporal consistency: mask IoU between consecutive edited frames after shifting by the motion;
- reconstruction: PSNR of the source-prompt edit against the run's ``source.mp4`` frames, and
  the gap to the VAE round trip decode(encode(x)) of the same frames (dB; 0 is perfect).

It also samples ``generate`` on image captions and reports how often the oracle agrees with the
prompt. Writes ``bench/results/quality.json`` (``--out``); with ``--update-docs`` also the table
in BENCHMARKS.md (between the quality markers), and ``--gif`` a side-by-side gif of one edit
(into ``examples/`` only with ``--update-docs``). ``--shard i/n`` runs every n-th clip from the
i-th (no table, no gif); ``--merge a.json b.json …`` joins shard files into the full result.
``--background-seeds 0,1,2`` makes the edits that redraw the background (from fresh noise) once per
seed and scores each as the mean over its draws (the recorded run's setting).
``prompts/shapes.json`` is rewritten only by ``--write-prompts --update-docs``.

    python bench/quality.py --background-seeds 0,1,2 --update-docs   # the recorded run (tiny, 24 clips) + BENCHMARKS.md
    python bench/quality.py --clips 2 --tune-steps 2 --edit-steps 2 --generate-seeds 1   # smoke
"""

from __future__ import annotations

import argparse
import functools
import os
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bootstrap as stats  # noqa: E402
import update_docs  # noqa: E402

from contextedit import video  # noqa: E402
from contextedit.testing import shapes  # noqa: E402
from contextedit.fileio import read_json  # noqa: E402
from contextedit.models.loading import load_components  # noqa: E402
from contextedit.pipelines.common import decode_latents, encode_latents  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402
from contextedit.commands.edit import EditOptions, edit  # noqa: E402
from contextedit.commands.generate import GenerateOptions, generate  # noqa: E402
from contextedit.pipelines.tune_options import ADAPTER_LR  # noqa: E402
from contextedit.commands.tune import TuneOptions, tune  # noqa: E402
from contextedit.prompts import load_prompt_sets  # noqa: E402

PROMPTS = ROOT / "prompts" / "shapes.json"
MARK_BEGIN, MARK_END = "<!-- quality:begin -->", "<!-- quality:end -->"
EDIT_KINDS = ("colour", "shape", "background", "multiple")
# The two-change edits, clip i takes MULTIPLE[i % 3]: each change as the clip's single edit of that kind.
MULTIPLE = (("colour", "background"), ("shape", "background"), ("colour", "shape"))


# --------------------------------------------------------------------------------------------
# The prompt set: clips of the shapes world and one edit of each kind per clip


def make_prompt_set(clips: int = 24, seed: int = 0) -> list[dict]:
    """Deterministic clips covering every shape, colour, background and direction, with edits."""
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(clips):
        spec = {"shape": shapes.SHAPES[i % 3], "colour": tuple(shapes.COLOURS)[i % 4],
                "background": tuple(shapes.BACKGROUNDS)[(i // 4) % 3], "direction": tuple(shapes.DIRECTIONS)[(i // 2) % 4]}
        xs, ys = shapes.start_range(spec["shape"], spec["direction"])
        start = [int(rng.choice(xs)), int(rng.choice(ys))]
        targets = {
            "colour": {**spec, "colour": _other(tuple(shapes.COLOURS), spec["colour"], rng)},
            "shape": {**spec, "shape": _other(shapes.SHAPES, spec["shape"], rng)},
            "background": {**spec, "background": _other(tuple(shapes.BACKGROUNDS), spec["background"], rng)},
        }
        changes = MULTIPLE[i % len(MULTIPLE)]
        both = {**spec, **{k: targets[k][k] for k in changes}}
        sets.append({
            "video": f"shapes-{i:02d}.mp4", "spec": spec, "start": start,
            "source_prompt": shapes.clip_caption(**spec),
            "edits": [{"prompt": shapes.clip_caption(**t),
                       "type": "attribute" if kind == "colour" else "object" if kind == "shape" else "background",
                       "kind": kind, "target": t} for kind, t in targets.items()]
            + [{"prompt": shapes.clip_caption(**both), "type": "multiple", "kind": "multiple",
                "changes": list(changes), "target": both}],
        })
    return sets


def _other(options, current, rng) -> str:
    return str(rng.choice([o for o in options if o != current]))


# --------------------------------------------------------------------------------------------
# Summaries of the oracle's scores (each edit is scored by contextedit.testing.shapes.score_edit,
# the scorer `contextedit eval --metrics oracle` uses too)


def summarise(rows: list[dict]) -> dict:
    """Means per variant: success by edit kind, and the other measures over all edits."""
    out = {}
    rows = stats.per_edit(rows)  # an edit made at several background seeds counts once
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        summary = {f"success_{kind}": _mean([r["success"] for r in mine if r["kind"] == kind]) for kind in EDIT_KINDS}
        summary["success_mean"] = _mean([summary[f"success_{kind}"] for kind in EDIT_KINDS if summary[f"success_{kind}"] is not None])
        for measure in ("background_kept", "object_kept", "background_flat", "motion_error_px", "temporal_iou",
                        "reconstruction_gap_db"):
            summary[measure] = _mean([r[measure] for r in mine if r.get(measure) is not None])
        for kind in EDIT_KINDS:  # every kind must hold motion and consistency, not only their mean
            for measure in ("motion_error_px", "temporal_iou"):
                summary[f"{measure}_{kind}"] = _mean([r[measure] for r in mine if r["kind"] == kind and r.get(measure) is not None])
        out[variant] = summary
    return out


def intervals(rows: list[dict]) -> dict:
    """95 % bootstrap intervals over clips per arm, and the adapter's paired lead (bench/bootstrap.py)."""
    return stats.arm_intervals(rows, EDIT_KINDS)


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------------------------
# The runs


def run_clip(entry: dict, work: Path, args, variant: str, comps=None) -> list[dict]:
    spec = entry["spec"]
    clip_path = work / entry["video"]
    if not clip_path.exists():
        frames, _ = shapes.make_clip(**spec, start=tuple(entry["start"]))
        video.write_video(frames, clip_path, fps=8)
    run_dir = work / f"{clip_path.stem}-{variant}"
    tune_opts = TuneOptions(
        video=str(clip_path), prompt=entry["source_prompt"], frames=args.frames, stride=args.stride,
        steps=args.tune_steps, lr=args.lr, out=str(run_dir), overwrite=True, adapter=variant == "adapter",
        checkpointing=False, model=args.model, device=args.device, seed=args.seed)
    if not (args.reuse and _tuned_like(run_dir, tune_opts)):
        tune(tune_opts, comps=comps)
    manifest = read_json(run_dir / "manifest.json")
    source = _source_frames(spec, entry["start"], args)
    extra = json.loads(args.edit_options) if args.edit_options else {}
    prompts = [e["prompt"] for e in entry["edits"]] + [entry["source_prompt"]]
    seeds = background_seeds(args)
    settings = {"steps": args.edit_steps, "guidance": args.guidance, **extra,
                **({"background_seed": seeds[0]} if args.background_seeds else {})}
    folder = work / f"{clip_path.stem}-{variant}-edits-{args.tag}"
    edits = edit(EditOptions(prompts=prompts, run=str(run_dir), format="frames", overwrite=True, device=args.device,
                             out=str(folder), seed=args.seed, **settings), comps=comps)
    rows = []

    def score(e: dict, path, **extra_keys) -> None:
        edited = video.read_video(path, frames=args.frames, stride=1).frames
        target = _source_frames(e["target"], entry["start"], args)
        rows.append({"clip": entry["video"], "variant": variant, "kind": e["kind"], "prompt": e["prompt"], **extra_keys,
                     **shapes.score_edit(source, edited, _scored(e), e["target"], spec["direction"], target, args.stride)})

    for e, path in zip(entry["edits"], edits.files):
        score(e, path)
    # a redrawn background comes from fresh noise: its figure is a mean over draws, not one draw's luck
    redrawn = [e for e in entry["edits"] if redraws_background(e)]
    for seed in seeds[1:] if redrawn else []:
        more = edit(EditOptions(prompts=[e["prompt"] for e in redrawn], run=str(run_dir), format="frames", overwrite=True,
                                device=args.device, out=f"{folder}-bs{seed}", seed=args.seed,
                                **{**settings, "background_seed": seed}), comps=comps)
        for e, path in zip(redrawn, more.files):
            score(e, path, background_seed=seed)
    rows.append({"clip": entry["video"], "variant": variant, "kind": "reconstruction", "prompt": entry["source_prompt"],
                 **reconstruction(run_dir, edits.files[-1], args, comps)})
    rows.append({"clip": entry["video"], "variant": variant, "kind": "tune", "prompt": entry["source_prompt"],
                 "tune_losses": manifest.get("loss_curve"), "adapter_rel_scale": manifest.get("adapter_rel_scale")})
    return rows


def rescore(result: dict, work: Path, tag: str, args) -> dict:
    """Score the edits a run left in ``work`` again (after a change to the scores), same rows order."""
    entries = {e["video"]: e for e in json.loads(PROMPTS.read_text())}
    rows = []
    for row in result["rows"]:
        if row["kind"] in ("reconstruction", "tune"):
            rows.append(row)
            continue
        entry = entries[row["clip"]]
        folder = work / f"{Path(row['clip']).stem}-{row['variant']}-edits-{tag}"
        if "background_seed" in row:  # a further draw's edit (--background-seeds)
            folder = folder.with_name(f"{folder.name}-bs{row['background_seed']}")
        files = {o["prompt"]: o["file"] for o in read_json(folder / "edits.json")["outputs"]}
        edited = video.read_video(folder / files[row["prompt"]], frames=args.frames, stride=1).frames
        e = next(e for e in entry["edits"] if e["kind"] == row["kind"])
        source, target = (_source_frames(spec, entry["start"], args) for spec in (entry["spec"], e["target"]))
        rows.append({**row, **shapes.score_edit(source, edited, _scored(e), e["target"], entry["spec"]["direction"], target,
                                         args.stride)})
    return {**result, "summary": summarise(rows), "rows": rows}


def redraws_background(e: dict) -> bool:
    """The edit changes the background, which ``edit`` draws from fresh noise (``--background-seed``)."""
    return e["kind"] == "background" or (e["kind"] == "multiple" and "background" in e["changes"])


def background_seeds(args) -> list[int]:
    """``--background-seeds``: the first is every edit's, the rest redo the edits that redraw the background."""
    return [int(s) for s in args.background_seeds.split(",")] if args.background_seeds else [0]


def _scored(e: dict) -> str:
    """What the oracle judges: the kind, or every change of a multiple edit ("colour+background")."""
    return "+".join(e["changes"]) if e["kind"] == "multiple" else e["kind"]


def _tuned_like(run_dir: Path, opts) -> bool:
    """A finished tune in ``run_dir`` with the same settings (the sweep edits one tune many ways)."""
    try:
        m = read_json(run_dir / "manifest.json")
    except Exception:
        return False
    return (m.get("steps"), m.get("lr"), m.get("seed"), m.get("adapter"), m.get("frames"), m.get("stride")) == \
        (opts.steps, opts.lr, opts.seed, opts.adapter, opts.frames, opts.stride)


def reconstruction(run_dir: Path, edited_path: Path, args, comps=None) -> dict:
    """PSNR of the source-prompt edit and of the VAE round trip against ``source.mp4``'s frames."""
    source = video.read_video(run_dir / "source.mp4", frames=args.frames, stride=1).frames
    edited = video.read_video(edited_path, frames=args.frames, stride=1).frames
    comps = comps or _vae_components(args.model, args.device)
    with torch.no_grad():
        round_trip = video.to_frames(decode_latents(comps.vae, encode_latents(comps.vae, video.to_tensor(source))))
    rec, vae = _psnr(edited, source), _psnr(round_trip, source)
    return {"reconstruction_psnr": rec, "vae_round_trip_psnr": vae, "reconstruction_gap_db": vae - rec}


@functools.lru_cache(maxsize=1)
def _vae_components(model: str, device: str):
    return load_components(model, device, "fp32")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = [np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2) for x, y in zip(a, b)]
    return float(np.mean([min(100.0, 10 * np.log10(255.0**2 / max(m, 1e-10))) for m in mse]))


def _source_frames(spec: dict, start, args) -> np.ndarray:
    """The exact frames of ``spec`` on the clip's path (rendered, not decoded: no codec loss)."""
    frames, _ = shapes.make_clip(**spec, start=tuple(start))
    return frames[: (args.frames - 1) * args.stride + 1: args.stride]


def generate_check(args, work: Path) -> dict:
    """How often ``generate`` draws what an image caption says, by the oracle."""
    rng = np.random.default_rng(args.seed)
    agree = {"colour": [], "shape": [], "background": [], "all": []}
    for i in range(args.generate_prompts):
        spec = shapes.random_spec(rng)
        spec.pop("direction", None)
        prompt = shapes.image_caption(**spec)
        result = generate(GenerateOptions(prompts=[prompt], n=args.generate_seeds, steps=args.edit_steps * 2,
                                          guidance=args.guidance, out=str(work / f"gen-{i:02d}"), overwrite=True,
                                          model=args.model, device=args.device, seed=args.seed))
        from PIL import Image

        for path in result.files:
            reading = shapes.agrees(shapes.oracle(np.asarray(Image.open(path).convert("RGB"))), **spec)
            for key, ok in reading.items():
                agree[key].append(ok)
            agree["all"].append(all(reading.values()))
    return {key: _mean(values) for key, values in agree.items()}


def write_table(result: dict, path: Path) -> None:
    s = result["summary"]
    lines = [MARK_BEGIN, "", f"Command: `{result['command']}` — {result['clips']} clips × {len(EDIT_KINDS)} edits, "
             f"{result['settings']['tune_steps']} tune steps, T = {result['settings']['edit_steps']}, "
             f"{result['seconds']:.0f} s on {result['machine']}.{_seeds_line(result)}", "",
             "| measure | with adapter | no adapter (Tune-A-Video) | target |", "|---|---|---|---|"]
    targets = {"success_colour": "≥ 0.95", "success_shape": "≥ 0.95", "success_background": "≥ 0.90",
               "success_multiple": "≥ 0.85", "success_mean": "adapter ≥ no adapter", "background_kept": "≥ 0.97",
               "object_kept": "≥ 0.95", "background_flat": "— (textures, ghosts)", "reconstruction_gap_db": "≤ 0.5 dB",
               **{f"motion_error_px_{k}": "≤ 1.0 px" for k in EDIT_KINDS}, **{f"temporal_iou_{k}": "≥ 0.85" for k in EDIT_KINDS}}
    for measure, target in targets.items():
        a, b = s.get("adapter", {}).get(measure), s.get("no-adapter", {}).get(measure)
        lines.append(f"| {measure} | {_fmt(a)} | {_fmt(b)} | {target} |")
    g = result.get("generate")
    if g:
        lines += ["", f"`generate --model {result['settings']['model']}` agrees with the prompt (oracle) on "
                      f"{_fmt(g['all'])} of images (colour {_fmt(g['colour'])}, shape {_fmt(g['shape'])}, "
                      f"background {_fmt(g['background'])}); target ≥ 0.90."]
    lines += ["", MARK_END]
    write_block(path, "\n".join(lines), "Quality (shapes world)")


def _seeds_line(result: dict) -> str:
    seeds = result["settings"].get("background_seeds") or [0]
    if len(seeds) < 2:
        return ""
    return (f" Edits that redraw the background (background, and two-change edits with a background change) are "
            f"made at background seeds {', '.join(map(str, seeds))} and scored as the mean over them.")


def write_block(path: Path, block: str, heading: str) -> None:
    """Replace the marked block (its first and last lines are the markers) in ``path``, or append
    it under ``heading``."""
    begin, end = block.splitlines()[0], block.splitlines()[-1]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(text)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--tune-steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--edit-steps", type=int, default=20, help="T for inversion and sampling (the paper's 20)")
    p.add_argument("--guidance", type=float, default=None, help="default: edit's (the model's recommendation)")
    p.add_argument("--edit-options", default=None, help='JSON of further EditOptions, e.g. \'{"inversion": "ddim"}\'')
    p.add_argument("--background-seeds", default=None,
                   help="comma-separated background seeds (edit --background-seed): edits that redraw the background "
                        "are made once per seed and scored as the mean (default: edit's seed alone)")
    p.add_argument("--variants", default="adapter,no-adapter", help="comma-separated: adapter, no-adapter")
    p.add_argument("--shard", default=None, help="i/n: run clips i, i+n, … only (merge the parts with --merge)")
    p.add_argument("--merge", nargs="+", default=None, help="shard JSON files to join into --out")
    p.add_argument("--reuse", action="store_true", help="keep tuned runs found in --work with the same settings")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--tag", default="default", help="names the edit folders in --work (one per setting)")
    p.add_argument("--generate-prompts", type=int, default=10)
    p.add_argument("--generate-seeds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    p.add_argument("--benchmarks", default=None,
                   help="Markdown file for the table (default: BENCHMARKS.md with --update-docs, else none; \"\": none)")
    p.add_argument("--gif", default=None, help="also write source | edit of the first edit as a gif here")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--write-prompts", action="store_true", help="(re)write prompts/shapes.json and exit (needs --update-docs)")
    update_docs.add_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    update_docs.check(args, args.out, args.gif, args.benchmarks, PROMPTS if args.write_prompts else None)
    if args.write_prompts:
        write_json(PROMPTS, make_prompt_set(24, seed=0))
        return {}
    if not PROMPTS.exists():
        raise SystemExit(f"{PROMPTS} is missing: restore it from git, or recreate it with --write-prompts --update-docs")
    if args.merge:
        return finish(args, argv, merge_shards(args.merge))
    entries = json.loads(PROMPTS.read_text())[: args.clips]
    load_prompt_sets(PROMPTS)  # the file must stay readable by `contextedit edit --prompts-file`
    picked = list(range(len(entries)))
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        picked = picked[i::n]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="quality-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CONTEXTEDIT_RUNS"] = str(work / "runs")  # the user's runs/latest stays theirs
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    rows = []
    for k, index in enumerate(picked):
        for variant in args.variants.split(","):
            rows += run_clip(entries[index], work, args, variant)
        print(f"[{time.perf_counter() - start:7.1f}s] clip {k + 1}/{len(picked)} done", flush=True)
    first = not args.shard or args.shard.startswith("0/")  # one shard runs the generate check
    gen = generate_check(args, work) if args.generate_prompts and args.generate_seeds and first else None
    if args.gif and not args.shard:
        _write_gif(work, entries[0], args)
    result = {
        "command": "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads" if args.device == "cpu" else args.device,
        "torch": torch.__version__, "clips": len(picked),
        "settings": {**{k: getattr(args, k) for k in ("model", "frames", "stride", "tune_steps", "lr", "edit_steps", "guidance",
                                                     "edit_options", "seed")},
                     "background_seeds": background_seeds(args),
                     "adapter_lr": ADAPTER_LR, "adapter_init": "base"},
        "edit_settings": _edit_settings(work, args),
        "seconds": time.perf_counter() - start,
        "summary": summarise(rows), "generate": gen, "rows": rows,
    }
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return finish(args, argv, result, table=not args.shard)


def _edit_settings(work: Path, args) -> dict | None:
    """The settings edit really ran with (defaults resolved), from the first edits.json."""
    for path in sorted(work.glob(f"*-edits-{args.tag}/edits.json")):
        return read_json(path).get("settings")
    return None


def merge_shards(paths: list[str]) -> dict:
    parts = [read_json(p) for p in paths]
    rows = [r for part in parts for r in part["rows"]]
    gen = next((p["generate"] for p in parts if p.get("generate")), None)
    return {**parts[0], "command": parts[0]["command"] + f"  (merged from {len(parts)} shards)",
            "clips": sum(p["clips"] for p in parts), "seconds": sum(p["seconds"] for p in parts),
            "summary": summarise(rows), "generate": gen, "rows": rows}


def finish(args, argv, result: dict, table: bool = True) -> dict:
    result["intervals"] = intervals(result["rows"])
    write_json(args.out, result)
    benchmarks = update_docs.benchmarks_file(args) if table else None
    if benchmarks:
        write_table(result, benchmarks)
    print(json.dumps({"summary": result["summary"], "generate": result.get("generate"), "seconds": round(result["seconds"])}, indent=2))
    return result


def _write_gif(work: Path, entry: dict, args) -> None:
    """Source | edit (first edit of the first clip, with the adapter) for the README."""
    if not args.gif:
        return
    variant = args.variants.split(",")[0]
    folder = work / f"{Path(entry['video']).stem}-{variant}-edits-{args.tag}"
    edits = sorted(p for p in folder.iterdir() if p.is_dir())
    source = _source_frames(entry["spec"], entry["start"], args)
    edited = video.read_video(edits[0], frames=args.frames, stride=1).frames
    video.write_video(video.side_by_side(source, edited), args.gif, fps=4)


if __name__ == "__main__":
    main()
