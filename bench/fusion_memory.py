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
from contextedit.fileio import write_json  # noqa: E402

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
    update_docs.add_flag(parser)
    args = parser.parse_args(argv)
    update_docs.check(args, args.out)
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
    lines += ["", "<!-- fusion-memory:end -->"]
    write_block(ROOT / "BENCHMARKS.md", "\n".join(lines), "Fusion memory at SD size (issue 18)")


if __name__ == "__main__":
    main()
