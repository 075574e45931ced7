"""Convert LOVEU-TGVE-2023's caption CSV into a contextedit prompt file (``prompts/`` schema).

The dataset (76 clips; DAVIS, YouTube and Videvo) ships a CSV per source with the columns
``Video name, Original Caption, Style Change Caption, Object Change Caption, Background Change
Caption, Multiple Changes Caption`` (matched here by keyword, case-insensitively). Each row
becomes one prompt set whose four edits carry the kinds style, object, background, multiple,
with ``video`` = ``--videos``/<name> (a frame folder or a file with ``--suffix``)::

    python bench/loveu_prompts.py LOVEU-TGVE-2023_Dataset.csv --videos data/loveu/480p_frames \
        --out bench/work/loveu-tgve-2023.json
    python bench/video_table.py --prompts bench/work/loveu-tgve-2023.json ...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

KINDS = ("style", "object", "background", "multiple")
KEYWORDS = {"video": "video", "source": "original", **{kind: kind for kind in KINDS}}


def convert(csv_path: str | os.PathLike, videos: str, suffix: str = "", relative_to: Path | None = None) -> list[dict]:
    """Prompt sets from the CSV; rows without a video name are skipped."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{csv_path} has no rows")
    columns = {}
    for key, word in KEYWORDS.items():
        found = [c for c in rows[0] if c and word in c.lower()]
        if not found:
            raise SystemExit(f"{csv_path} has no column with {word!r} in its name (columns: {', '.join(rows[0])})")
        columns[key] = found[0]
    sets = []
    for row in rows:
        name = (row[columns["video"]] or "").strip()
        if not name:
            continue
        video = Path(videos) / f"{name}{suffix}"
        if relative_to is not None:
            video = Path(os.path.relpath(video.absolute(), relative_to.absolute()))
        edits = [{"prompt": row[columns[k]].strip(), "type": k} for k in KINDS if (row[columns[k]] or "").strip()]
        sets.append({"video": str(video), "source_prompt": row[columns["source"]].strip(), "edits": edits})
    return sets


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--videos", required=True, help="folder holding each clip (frame folder or file) by its name")
    p.add_argument("--suffix", default="", help="file suffix of the clips, e.g. .mp4 (none: frame folders)")
    p.add_argument("--out", required=True, help="prompt file to write; video paths are made relative to it")
    args = p.parse_args(argv)
    out = Path(args.out)
    sets = convert(args.csv, args.videos, args.suffix, relative_to=out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(sets, indent=2, ensure_ascii=False) + "\n")
    print(f"{len(sets)} prompt sets → {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
