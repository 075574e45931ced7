"""Where the tune step's time over its floor goes (issue 31): the same training step, built up.

``bench/perf.py`` compares tune's step with a floor that trains the same ``to_q`` parameters of
the bare 2-D UNet. This script times four steps in one run, on the same clip, interleaved round
by round (so a drift of the machine's speed falls on every arm alike), the median of each:

1. ``floor``: the 2-D UNet (perf.py's floor);
2. ``sparse_causal``: inflated, every ``attn1`` attending to frame 0 and the previous frame, no
   temporal layers (what ``--motion-adapter`` starts from);
3. ``temporal``: with the temporal layers where tune places them, trained too;
4. ``tune``: with the adapter as well: tune's step.

    python bench/tune_step_parts.py --device cpu          # SD-1.5 size, 256², 4 frames
    python bench/tune_step_parts.py --model tiny-random   # seconds: a check that it runs

Writes ``bench/results/tune-step-parts[-MODEL]-DEVICE.json``: each arm's median step in ms, each
over the floor (medians, and the median of each round's ratio), every round's time and the
parameters each arm trains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import perf  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402
from contextedit.models.inflate import inflate_unet, mark_trainable, shared_copy, trainable_parameters  # noqa: E402

ARMS = ("floor", "sparse_causal", "temporal", "tune")


def steps(s: perf.Setup) -> dict:
    """Per arm, its training-step callable (perf.py's floor and tune steps; the weights are shared
    copies) and the number of parameters it trains."""
    def trained(unet, adapter) -> int:
        return sum(q.numel() for q in trainable_parameters(unet).values()) + \
            (sum(q.numel() for q in adapter.parameters()) if adapter is not None else 0)

    arms = {"floor": perf.floor_step(s)}
    sparse = inflate_unet(shared_copy(s.comps.unet), temporal=False)
    if s.preset.checkpointing:
        sparse.enable_gradient_checkpointing()
    for param in mark_trainable(sparse).values():
        param.data = param.data.float()
    arms["sparse_causal"] = perf.video_step(s, sparse, None), trained(sparse, None)
    for arm, with_adapter in (("temporal", False), ("tune", True)):
        unet, adapter, step = perf.tune_setup(s, with_adapter)
        arms[arm] = step, trained(unet, adapter)
    return arms


def measure(s: perf.Setup, rounds: int, warmup: int = 1) -> dict:
    built = steps(s)
    fns = {arm: fn for arm, (fn, _) in built.items()}
    times = {arm: [] for arm in ARMS}
    for r in range(warmup + rounds):
        for arm in ARMS:
            t0 = time.perf_counter()
            fns[arm]()
            perf.synchronize(s.device)
            if r >= warmup:
                times[arm].append(time.perf_counter() - t0)
    ms = {arm: 1e3 * statistics.median(v) for arm, v in times.items()}
    # each round's arm over that round's floor, a minute apart at most: the ratio least moved by drift
    paired = {arm: statistics.median(a / f for a, f in zip(times[arm], times["floor"])) for arm in ARMS}
    return {"step_ms": ms, "over_floor": {arm: ms[arm] / ms["floor"] for arm in ARMS}, "paired_over_floor": paired,
            "trained_parameters": {arm: n for arm, (_, n) in built.items()},
            "rounds_ms": {arm: [1e3 * t for t in v] for arm, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", choices=("sd15-random", "tiny-random"), default="sd15-random")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each arm once a round); the median")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("Error: --device cuda was asked for but CUDA is not available here; run with --device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    preset = perf.make_preset(perf.parse_args(["--device", args.device, "--model", args.model]))
    s = perf.setup(preset, device)
    doc = {"command": "python bench/tune_step_parts.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": preset.model, "device": args.device, "size": preset.size, "frames": preset.frames,
           "dtype": preset.dtype, "checkpointing": preset.checkpointing, "temporal_layers": perf.temporal_layers(s),
           "rounds": args.rounds, "threads": torch.get_num_threads(), "load_average": list(perf._load_average()),
           **measure(s, args.rounds)}
    suffix = "" if preset.model == "sd15-random" else f"-{preset.model}"
    out = args.out or perf.RESULTS / f"tune-step-parts{suffix}-{device.type}.json"
    write_json(out, doc)
    print({arm: round(v, 3) for arm, v in doc["paired_over_floor"].items()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
