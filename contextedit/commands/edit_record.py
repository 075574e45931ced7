"""``edits.json``, the record beside an edit's outputs: one entry per output, merged in as each
output is written (under a lock: edits finishing at once keep every entry), and the proof a rerun
reads to skip the prompts an interrupted edit already finished."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..fileio import file_lock, read_json, write_json
from ..runs import sha256_file

RECORD = "edits.json"


def request_key(run_identity: str | None, settings: dict, prompt: str, mask: str | None) -> str:
    """What makes an output what it is, before any default is resolved: the run (its manifest's
    sha256), the settings as asked, the prompt and the mask's bytes. Equal keys, equal outputs."""
    mask_hash = sha256_file(mask) if mask and Path(mask).is_file() else mask
    doc = {"run": run_identity, "settings": settings, "prompt": prompt, "mask": mask_hash}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def read_record(out_dir: Path) -> dict:
    path = out_dir / RECORD
    try:
        doc = read_json(path, "edit record") if path.is_file() else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def done_outputs(out_dir: Path, keys: dict[str, str]) -> set[str]:
    """The output names (of ``keys``: name → request key) that exist and that the record proves
    were made by the same request."""
    recorded = {o.get("file"): o.get("request") for o in read_record(out_dir).get("outputs", []) if isinstance(o, dict)}
    return {name for name, key in keys.items() if recorded.get(name) == key and (out_dir / name).exists()}


def merge_output(out_dir: Path, header: dict, output: dict | None = None, drop: str | None = None) -> dict:
    """Add ``output`` to the record (replacing the entry with its file name), or ``drop`` one;
    ``header`` (run, settings, …) replaces the record's own fields. Returns the record."""
    with file_lock(out_dir / f".{RECORD}.lock"):
        doc = read_record(out_dir)
        outputs = [o for o in doc.get("outputs", []) if isinstance(o, dict)
                   and o.get("file") not in {drop, output and output["file"]}]
        if output is not None:
            outputs.append(output)
        doc = {**doc, **header, "outputs": outputs}
        write_json(out_dir / RECORD, doc)
    return doc
