"""The fusion store's size at Stable-Diffusion size (issue 18, item 2), measured and extrapolated.

The store keeps, per recorded sampling step and attention layer, the source's self-attention
queries and keys (steps in the self-fusion window) and cross-attention queries (every step while
blend masks are on, the default), for the conditional half only, in the compute dtype. So its
size is linear in frames and in recorded steps. This measures it on the SD-1.5-shaped random
UNet at 256² on the CPU (direct inversion, 2 DDIM steps) at 2 and 4 frames — checking the
linearity — splits it into bytes per frame per self step and per cross step, and extrapolates
to 8/16/24 frames and 120 frames at 256² and 512² (4× the tokens), T = 20, fp16, with and
without windows of 16 frames (a window at a time holds the store).

Writes bench/results/fusion-memory.json; ``--update-docs`` also writes BENCHMARKS.md's block.

    python bench/fusion_memory.py --update-docs      # ~5 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import update_docs  # noqa: E402
from contextedit.fileio import read_json, write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fusion-memory.json"
MIB = 2**20


def store_bytes(comps, unet, frames: int, size: int, steps: int, **settings) -> int:
    from contextedit.pipelines.common import encode_prompts
    from contextedit.pipelines.edit_options import EditSettings
    from contextedit.pipelines.editing import prepare_source
    from contextedit.schedulers import ContextualDDIMScheduler

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(frames, 4, size // 8, size // 8, generator=g)
    text = encode_prompts(comps.tokenizer, comps.text_encoder, ["a red circle"])
    uncond = encode_prompts(comps.tokenizer, comps.text_encoder, [""])
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(steps)
    opts = EditSettings(steps=steps, **settings).resolve()
    return prepare_source(unet, scheduler, x0, text, uncond, opts).store.nbytes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--peaks-only", action="store_true",
                        help="only (re)extrapolate the edit peaks from --out's store figures and perf-cpu-{live,stored}.json")
    update_docs.add_flag(parser)
    args = parser.parse_args(argv)
    update_docs.check(args, args.out)
    if args.peaks_only:
        doc = read_json(args.out)
        doc["edit_peak"] = edit_peaks(doc)
        doc.setdefault("commands", []).append("python bench/fusion_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        write_json(args.out, doc)
        print(doc["edit_peak"])
        if args.update_docs:
            write_benchmarks(doc)
        return
    from perf import build_components

    from contextedit.models.inflate import inflate_unet

    t0 = time.perf_counter()
    comps = build_components("sd15-random", torch.device("cpu"), torch.float32)
    unet = inflate_unet(comps.unet)
    steps = 2
    self_only = dict(self_fusion=1.0, cross_fusion=0.0, blend=False)   # 2 self steps, no cross
    cross_only = dict(self_fusion=0.0, cross_fusion=1.0, blend=False)  # 2 cross steps, no self
    measured = {f: {"self": store_bytes(comps, unet, f, args.size, steps, **self_only),
                    "cross": store_bytes(comps, unet, f, args.size, steps, **cross_only)} for f in (2, 4)}
    # fp32 bytes per frame per step, from the difference: the store also holds the source prompt's
    # text states once (77 × 768 × 4 bytes), whatever the frame count
    per_frame = {k: (measured[4][k] - measured[2][k]) / (2 * steps) for k in ("self", "cross")}
    constant = {k: measured[2][k] - 2 * steps * per_frame[k] for k in ("self", "cross")}
    linear = all(abs(c - 77 * 768 * 4) < 1024 for c in constant.values())

    def extrapolate(frames: int, size: int, window: int | None, t: int = 20, self_fusion: float = 0.5) -> float:
        held = min(frames, window) if window else frames
        tokens = (size / args.size) ** 2
        fp16 = 0.5
        return held * tokens * fp16 * (per_frame["self"] * round(self_fusion * t) + per_frame["cross"] * t) / MIB

    table = {str(size): {str(f): {"whole_clip_mib": extrapolate(f, size, None), "window_16_mib": extrapolate(f, size, 16)}
                         for f in (8, 16, 24, 120)} for size in (256, 512)}
    doc = {"command": "python bench/fusion_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": "sd15-random (SD-1.5 UNet shape, random weights)", "measured_size": args.size, "measured_steps": steps,
           "measured_bytes_fp32": {str(f): v for f, v in measured.items()}, "linear_in_frames": linear,
           "constant_bytes": constant,
           "bytes_per_frame_per_step_fp32": per_frame,
           "extrapolated": {"T": 20, "self_fusion": 0.5, "cross_steps": "all 20 (blend masks on)", "dtype": "fp16",
                            "table": table},
           "seconds": time.perf_counter() - t0}
    write_json(args.out, doc)
    print(doc)
    if args.update_docs:
        write_benchmarks(doc)


# Parameters of SD-1.5's UNet, VAE and CLIP text encoder, plus the temporal layers inflation adds
# (bench/results/perf-cpu.json: unet_parameters; the rest from the models' configs).
SD15_PARAMETERS = 859_520_964 + 83_653_863 + 123_060_480 + 49_574_080
CUDA_CONTEXT_GIB = 0.5  # what the CUDA runtime itself holds on a GPU, roughly


def edit_peaks(doc: dict, size: int = 512, frames: int = 24, window: int = 16) -> dict:
    """The peak of one edit (SD-1.5 size, T = 20, fp16, windows of ``window`` frames) for each
    source branch, extrapolated from the CPU probes of bench/perf.py (``--memory-frames 8,16
    --memory-kinds edit --source live|stored``: peak RSS of fresh processes at 256², fp32, T = 2):
    activations per frame from the 8 → 16 difference less the store's own growth, scaled by the
    tokens ((size/256)², linear: a GPU's SDPA kernels hold no score matrix) and by fp16 (½); the
    store from the measured bytes per frame per step at T = 20; the weights in fp16."""
    per = doc["bytes_per_frame_per_step_fp32"]
    store_cpu = per["self"] * 1 + per["cross"] * 2  # the probes' T = 2: one self step (½·T), cross at both
    out = {"size": size, "frames": frames, "window": window, "T": 20, "dtype": "fp16",
           "weights_gib": SD15_PARAMETERS * 2 / 2**30, "cuda_context_gib": CUDA_CONTEXT_GIB}
    for mode in ("live", "stored"):
        peaks = read_json(ROOT / "bench" / "results" / f"perf-cpu-{mode}.json")["peak_gib"]["edit"]
        grown = peaks["16"] - peaks["8"]
        store = store_cpu / 2**30 if mode == "stored" else 0.0
        activation = (grown / 8 - store)                                  # GiB per frame, 256², fp32
        held = min(frames, window)
        act = activation * (size / 256) ** 2 * 0.5 * held
        store_gib = doc["extrapolated"]["table"][str(size)][str(frames)]["window_16_mib"] / 1024 if mode == "stored" else 0.0
        out[mode] = {"cpu_peak_gib_256_fp32": peaks, "activation_gib_per_frame_256_fp32": activation,
                     "activations_gib": act, "store_gib": store_gib,
                     "peak_gib": out["weights_gib"] + CUDA_CONTEXT_GIB + act + store_gib}
    return out


def write_benchmarks(doc: dict) -> None:
    from quality import write_block

    t = doc["extrapolated"]["table"]
    per = doc["bytes_per_frame_per_step_fp32"]
    lines = ["<!-- fusion-memory:begin -->", "",
             f"`python bench/fusion_memory.py --update-docs`: the store measured on the SD-1.5-shaped random UNet at "
             f"{doc['measured_size']}² (CPU, fp32, 2 and 4 frames; linear in frames plus the prompt's text states: "
             f"{doc['linear_in_frames']}) is "
             f"{per['self'] / MIB:.2f} MiB per frame per self-fusion step and {per['cross'] / MIB:.2f} MiB per frame per "
             "cross step. Extrapolated to edits at T = 20 (self-fusion over 10 steps, cross-attention queries at all 20 "
             "for the blend masks), fp16:", "",
             "| frames | 256², whole clip | 256², windows of 16 | 512², whole clip | 512², windows of 16 |", "|---|---|---|---|---|"]
    for f in ("8", "16", "24", "120"):
        a, b = t["256"][f], t["512"][f]
        lines.append(f"| {f} | {a['whole_clip_mib'] / 1024:.2f} GiB | {a['window_16_mib'] / 1024:.2f} GiB | "
                     f"{b['whole_clip_mib'] / 1024:.2f} GiB | {b['window_16_mib'] / 1024:.2f} GiB |")
    if "edit_peak" in doc:
        e = doc["edit_peak"]
        lines += ["", f"One whole edit, extrapolated (`--peaks-only`, from the CPU probes `python bench/perf.py --device cpu "
                  "--memory-frames 8,16 --memory-kinds edit --source live|stored`): SD-1.5 size, "
                  f"{e['frames']} frames at {e['size']}² in windows of {e['window']}, T = {e['T']}, {e['dtype']}; weights "
                  f"{e['weights_gib']:.1f} GiB and a CUDA context of {e['cuda_context_gib']} GiB in both:", "",
                  "| source branch | CPU probe 8 / 16 frames (256², fp32, T = 2) | activations | fusion store | peak |",
                  "|---|---|---|---|---|"]
        for mode in ("live", "stored"):
            m = e[mode]
            p = m["cpu_peak_gib_256_fp32"]
            lines.append(f"| `{mode}` | {p['8']:.2f} / {p['16']:.2f} GiB | {m['activations_gib']:.1f} GiB | "
                         f"{m['store_gib']:.1f} GiB | **{m['peak_gib']:.1f} GiB** |")
    lines += ["", "<!-- fusion-memory:end -->"]
    write_block(ROOT / "BENCHMARKS.md", "\n".join(lines), "Fusion memory at SD size (issue 18)")


if __name__ == "__main__":
    main()
