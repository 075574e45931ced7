"""Which side a changed word edits (issue 27): how well each rule reads it on the shapes world.

Every edit records, per change group, the two readings its side is decided from (``edits.json``:
``attention_inside``, the attention's signed standing-out on the word's segment, and
``response_ratio``, DiffEdit's response outside over inside). They are measured before the side
is decided, so any rule can be scored on them afterwards. On shapes-world captions the truth is
known: a changed background word edits the rest of the frame, a colour or shape word its object.

Reads the ``edits.json`` files of ``bench/quality.py --work DIR`` runs (one set per ``--set
NAME=GLOB``) and writes ``bench/results/region-sides.json``: per set and word kind the range of
each reading and of the score :func:`contextedit.attention.regions.region_side` uses, and how
many groups each rule calls wrong — the summed score (now) and the earlier rule that needed both
readings to agree (OUTSIDE when ratio ≥ 1, or when the attention says "the rest" and ratio ≥ 0.25).

    python bench/region_sides.py --set benchmark='bench/work/q/*-edits-seam/edits.json' \\
        --set held-out='bench/work/hold/*-edits-hold/edits.json'
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contextedit.attention.regions import OUTSIDE_SCORE, RESPONSE_WEIGHT  # noqa: E402
from contextedit.fileio import write_json  # noqa: E402

BACKGROUND_WORD = 7  # "a C S moving D on a B background": the words from here on name the background


def groups(pattern: str) -> list[dict]:
    """Every recorded change group: its kind (object or background word) and its two readings."""
    rows = []
    for path in sorted(glob.glob(pattern)):
        record = json.loads(Path(path).read_text())
        source = record["source_prompt"].split()
        for output in record["outputs"]:
            for group in output["control"].get("regions", []):
                if "response_ratio" not in group:
                    continue
                changed = [i for i, (a, b) in enumerate(zip(source, group["words"].split())) if a != b]
                rows.append({"run": Path(path).parent.name, "kind": "background" if changed[0] >= BACKGROUND_WORD else "object",
                             "attention": group["attention_inside"], "ratio": group["response_ratio"]})
    return rows


def summary(rows: list[dict]) -> dict:
    score = lambda r: r["attention"] + RESPONSE_WEIGHT * r["ratio"]  # noqa: E731  (tiny's polarity: "less")
    earlier = lambda r: r["ratio"] >= 1.0 or (r["attention"] > 0 and r["ratio"] >= 0.25)  # noqa: E731
    out = {"groups": len(rows)}
    for kind in ("object", "background"):
        mine = [r for r in rows if r["kind"] == kind]
        outside = kind == "background"
        out[kind] = {
            "n": len(mine),
            **{f"{name}_range": [min(f(r) for r in mine), max(f(r) for r in mine)] if mine else None
               for name, f in (("attention", lambda r: r["attention"]), ("ratio", lambda r: r["ratio"]), ("score", score))},
            "wrong_now": sum((score(r) >= OUTSIDE_SCORE) != outside for r in mine),
            "wrong_earlier_rule": sum(earlier(r) != outside for r in mine),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", required=True, help="NAME=GLOB of edits.json files")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "region-sides.json"))
    args = p.parse_args()
    sets = dict(s.split("=", 1) for s in args.set)
    result = {"command": "python bench/region_sides.py " + " ".join(f"--set {k}='{v}'" for k, v in sets.items()),
              "outside_score": OUTSIDE_SCORE, "response_weight": RESPONSE_WEIGHT,
              "sets": {name: summary(groups(pattern)) for name, pattern in sets.items()}}
    write_json(args.out, result)
    print(json.dumps(result["sets"], indent=1))


if __name__ == "__main__":
    main()
