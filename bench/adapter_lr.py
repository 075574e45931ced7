"""The adapter's learning rate in ``tune``, by measurement (issue 16).

Tunes claims.py's held-out shapes clip at tune's defaults (500 steps, UNet lr 1e-5), once per
adapter lr, from the model's base adapter and from a fresh zero-headed one, and records the mean
loss over the last 30 steps and ``adapter_rel_scale``. Writes bench/results/adapter-lr.json.

    python bench/adapter_lr.py [--model tiny] [--lrs 1e-5,1e-4,1e-3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from claims import HELD_OUT  # noqa: E402
from contextedit import video  # noqa: E402
from contextedit.testing import shapes  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402
from contextedit.commands.tune import TuneOptions, tune  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--lrs", default="1e-5,1e-4,1e-3")
    p.add_argument("--inits", default="base,none")
    p.add_argument("--steps", type=int, default=None, help="default: tune's own")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapter-lr.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="adapter-lr-") as tmp:
        os.environ["CONTEXTEDIT_RUNS"] = str(Path(tmp) / "runs")
        frames, caption = shapes.make_clip(**HELD_OUT, start=None, rng=np.random.default_rng(1234))
        clip = Path(tmp) / "held-out.mp4"
        video.write_video(frames, clip, fps=8)
        for init in args.inits.split(","):
            for lr in (float(x) for x in args.lrs.split(",")):
                extra = {"steps": args.steps} if args.steps else {}
                m = tune(TuneOptions(video=str(clip), prompt=caption, out=str(Path(tmp) / f"{init}-{lr:g}"), overwrite=True,
                                     adapter_init=init, adapter_lr=lr, model=args.model, device="cpu", **extra)).manifest
                rows.append({"adapter_init": m["adapter_init"], "adapter_lr": lr, "steps": m["steps"], "lr": m["lr"],
                             "last_30_loss": float(np.mean(m["loss_curve"][-30:])), "adapter_rel_scale": m["adapter_rel_scale"]})
                print(rows[-1], flush=True)
    result = {"command": "python bench/adapter_lr.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "clip": {**HELD_OUT, "caption": caption}, "rows": rows,
              "seconds": time.perf_counter() - start, "torch": torch.__version__}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
