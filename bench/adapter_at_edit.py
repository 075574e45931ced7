"""Issue 27's open question: does switching the adapter off *at edit time* (``edit --no-adapter``
on a run tuned with it) recover the background and multiple edits the adapter arm loses?

Edits the background and multiple prompts of ``prompts/shapes.json`` on the adapter-tuned runs a
``bench/quality.py --work DIR`` run left (``DIR/<clip>-adapter``), with and without the adapter,
at the defaults otherwise, and scores them with the same oracle. Writes
``bench/results/adapter-at-edit.json``.

    python bench/quality.py --work bench/work/q27 ...   # once: the tuned runs
    python bench/adapter_at_edit.py --work bench/work/q27
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import bootstrap as stats  # noqa: E402
from contextedit import video  # noqa: E402
from contextedit.commands.edit import EditOptions, edit  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402
from contextedit.models.loading import load_components  # noqa: E402
from contextedit.testing import shapes  # noqa: E402

KINDS = ("background", "multiple")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapter-at-edit.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    entries = json.loads((ROOT / "prompts" / "shapes.json").read_text())[: args.clips]
    comps = load_components("tiny", "cpu", torch.float32)
    rows, t0 = [], time.perf_counter()
    for entry in entries:
        run = work / f"{Path(entry['video']).stem}-adapter"
        edits = [e for e in entry["edits"] if e["kind"] in KINDS]
        source = _frames(entry["spec"], entry["start"], args)
        for adapter in (True, False):
            out = work / f"{Path(entry['video']).stem}-adapter-edits-at-edit-{'on' if adapter else 'off'}"
            result = edit(EditOptions(prompts=[e["prompt"] for e in edits], run=str(run), format="frames",
                                      overwrite=True, adapter=adapter, device="cpu", out=str(out)), comps=comps)
            for e, path in zip(edits, result.files):
                edited = video.read_video(path, frames=args.frames, stride=1).frames
                scored = "+".join(e["changes"]) if e["kind"] == "multiple" else e["kind"]
                target = _frames(e["target"], entry["start"], args)
                rows.append({"clip": entry["video"], "adapter_at_edit": adapter, "kind": e["kind"], "prompt": e["prompt"],
                             **shapes.score_edit(source, edited, scored, e["target"], entry["spec"]["direction"], target,
                                                 args.stride)})
    summary = {}
    for kind in KINDS:
        on = [float(r["success"]) for r in rows if r["kind"] == kind and r["adapter_at_edit"]]
        off = [float(r["success"]) for r in rows if r["kind"] == kind and not r["adapter_at_edit"]]
        summary[kind] = {"on": sum(on) / len(on), "off": sum(off) / len(off),
                         "off_minus_on": stats.paired(off, on)}
    write_json(args.out, {"command": "python bench/adapter_at_edit.py " + " ".join(sys.argv[1:]),
                          "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "clips": len(entries), "seconds": time.perf_counter() - t0, "summary": summary, "rows": rows})
    print(json.dumps(summary, indent=2))


def _frames(spec, start, args):
    frames, _ = shapes.make_clip(**spec, start=tuple(start))
    return frames[: (args.frames - 1) * args.stride + 1: args.stride]


if __name__ == "__main__":
    main()
