"""Batch throughput (issue 18, item 4): jobs per hour of ``contextedit batch`` with 1 and 2 local
workers on this machine, the per-job breakdown, and the expected scaling on N GPUs.

Jobs: shapes-world clips (8 frames, 64², the embedded ``tiny``), each tuned once (50 steps) and
edited with two prompts (T = 20, one inversion), as ``contextedit batch`` runs them: worker
processes, the record rewritten after every job. The per-job figures come from each job's
``batch.json`` entry (tune) and its ``edits.json`` timings (inversion, each prompt). Writes
bench/results/throughput.json; ``--update-docs`` also BENCHMARKS.md's block.

    python bench/throughput.py --update-docs     # about 4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import update_docs  # noqa: E402
from contextedit import video  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402
from contextedit.testing import shapes  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "throughput.json"
GPUS = (1, 2, 4, 8)
ASSUMPTION = ("jobs are independent (no shared state but the read-only model), so N workers, one per GPU, finish N "
              "jobs in one job's time while at least N jobs remain: jobs/h ≈ N × 3600 / (one job's seconds on one "
              "worker); a batch of J jobs takes about ceil(J / N) job times, plus each worker's start (once)")


def write_jobs(folder: Path, jobs: int, frames: int) -> Path:
    """``jobs`` clips of different colours and shapes, each with a shape and a background edit."""
    colours, kinds = sorted(shapes.COLOURS), ("circle", "square", "triangle")
    sets = []
    for i in range(jobs):
        shape = kinds[i % len(kinds)]
        clip, caption = shapes.make_clip(shape, colours[i % len(colours)], "black", "right", start=(16, 30), frames=frames)
        video.write_video(clip, folder / f"clip{i}.mp4", 8.0)
        other = kinds[(i + 1) % len(kinds)]
        edits = [caption.replace(shape, other), caption.replace("black background", "gray background")]
        sets.append({"video": f"clip{i}.mp4", "source_prompt": caption, "edits": [{"prompt": p} for p in edits]})
    path = folder / "jobs.json"
    path.write_text(json.dumps(sets))
    return path


def measure(jobs_file: Path, out: Path, shared: dict, workers: int) -> dict:
    from contextedit.commands.batch import plan_jobs, run_batch

    t = time.perf_counter()
    result = run_batch(plan_jobs(jobs_file, shared), out, workers=workers)
    wall = time.perf_counter() - t
    done = [r for r in result.record["jobs"].values() if r["status"] == "done"]
    per = [r["timings"] for r in done]
    edits = [json.loads(Path(r["edits_json"]).read_text())["timings"] for r in done]
    mean = statistics.mean
    return {"workers": workers, "jobs": len(done), "failed": sorted(result.failed), "wall_s": wall,
            "jobs_per_hour": 3600 * len(done) / wall,
            "per_job_s": {"tune": mean(p["tune_s"] for p in per),
                          "invert": mean(e["inversion_s"] for e in edits),
                          "each_prompt": mean(s for e in edits for s in e["sampling_s_per_prompt"]),
                          "edit": mean(p["edit_s"] for p in per),
                          "total": mean(p["total_s"] for p in per)}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--tune-steps", type=int, default=50)
    parser.add_argument("--edit-steps", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts to measure")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default=str(RESULTS))
    update_docs.add_flag(parser)
    args = parser.parse_args(argv)
    update_docs.check(args, args.out)

    rows = []
    runs = os.environ.get("CONTEXTEDIT_RUNS")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CONTEXTEDIT_RUNS"] = str(Path(tmp) / "runs")  # tune points runs/latest here, not at the repo's
        try:
            jobs_file = write_jobs(Path(tmp), args.jobs, args.frames)
            shared = {"model": args.model, "tune_steps": args.tune_steps, "edit_steps": args.edit_steps,
                      "frames": args.frames, "stride": 1, "device": "cpu", "format": "gif"}
            for workers in (int(w) for w in args.workers.split(",")):
                rows.append(measure(jobs_file, Path(tmp) / f"out-{workers}", shared, workers))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            os.environ.pop("CONTEXTEDIT_RUNS") if runs is None else os.environ.update(CONTEXTEDIT_RUNS=runs)
    one = rows[0]["per_job_s"]["total"]
    doc = {"command": "python bench/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": args.model, "jobs": args.jobs, "frames": args.frames, "tune_steps": args.tune_steps,
           "edit_steps": args.edit_steps, "prompts_per_job": 2, "cpu_cores": os.cpu_count(), "rows": rows,
           "scaling": {"assumption": ASSUMPTION, "single_worker_job_s": one,
                       "per_n": {str(n): n * 3600 / one for n in GPUS}}}
    write_json(args.out, doc)
    print(json.dumps(doc["scaling"]), flush=True)
    if args.update_docs:
        write_benchmarks(doc)


def write_benchmarks(doc: dict, path: Path = ROOT / "BENCHMARKS.md") -> None:
    from quality import write_block

    s = doc["scaling"]
    lines = ["<!-- throughput:begin -->", "",
             f"`python bench/throughput.py --update-docs`: {doc['jobs']} jobs, each an {doc['frames']}-frame shapes clip "
             f"(64², `{doc['model']}`) tuned for {doc['tune_steps']} steps and edited with 2 prompts at "
             f"T = {doc['edit_steps']} (one inversion), as `contextedit batch` runs them, on this machine's "
             f"{doc['cpu_cores']} CPU cores. Per job, means (each prompt is its sampling; a worker loads the model once, "
             "before its first job: in the whole job, not in tune; wall includes starting the workers):", "",
             "| workers | wall | jobs/h | tune | invert | each prompt | whole edit | whole job |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        p = r["per_job_s"]
        lines.append(f"| {r['workers']} | {r['wall_s']:.0f} s | {r['jobs_per_hour']:.0f} | {p['tune']:.1f} s | "
                     f"{p['invert']:.1f} s | {p['each_prompt']:.1f} s | {p['edit']:.1f} s | {p['total']:.1f} s |")
    lines += ["", "Two workers on two CPU cores share those cores (one thread each instead of two), so each job takes "
              "longer and the gain is only what one process leaves idle; on GPUs every worker has its own device.", "",
              f"Scaling on N GPUs, worked out from the one-worker job time ({s['single_worker_job_s']:.1f} s here): "
              f"{s['assumption']}. Here that is " + ", ".join(f"{v:.0f} jobs/h on {n}" for n, v in s["per_n"].items())
              + ". With SD-size jobs on GPUs the same rule applies to that GPU's job time.", "", "<!-- throughput:end -->"]
    write_block(path, "\n".join(lines), "Batch throughput (issue 18)")


if __name__ == "__main__":
    main()
