"""Run folders: the manifest a tune writes, the ``runs/latest`` pointer, and safe access to run files."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import InputError, OutputExistsError
from .fileio import atomic_path, check_writable_dir, inside, read_json, write_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: the adapter is a diffusers model folder (1: adapter.safetensors + adapter_config)
REQUIRED_KEYS = ("version", "model", "source_prompt", "frames", "width", "height", "fps", "files")


def runs_root() -> Path:
    return Path(os.environ.get("CONTEXTEDIT_RUNS", "runs"))


def slugify(text: str, max_len: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def output_name(prompt: str, seed: int | None, fmt: str) -> str:
    """The file name of one output, ``<slug>-s<seed>.<fmt>`` (``<slug>.<fmt>`` without a seed:
    edits are deterministic; no suffix for a ``frames`` folder).

    Where the slug does not spell the prompt exactly (cut at 48 characters, or case, punctuation
    or non-ASCII letters dropped), 8 hex digits of the prompt's SHA-1 follow it after ``_``, which
    no slug holds: distinct prompts get distinct names, and a prompt always the same one.
    """
    slug = slugify(prompt)
    if slug.replace("-", " ") != prompt:
        slug += "_" + hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]
    stem = slug if seed is None else f"{slug}-s{seed}"
    return stem if fmt == "frames" else f"{stem}.{fmt}"


def default_run_dir(video: str | os.PathLike) -> Path:
    return runs_root() / slugify(Path(video).stem)


def check_new_output(path: Path, overwrite: bool, what: str = "output") -> None:
    """Refuse, before any work, an output that exists (without --overwrite) or could not be written."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{what} {path} already exists; pass `overwrite` to replace it or choose another `out`")
    check_writable_dir(Path(path).parent)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def set_latest(run_dir: Path) -> None:
    """Point ``runs/latest`` (a one-line text file, portable where symlinks are not) at ``run_dir``."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "latest") as tmp:
        tmp.write_text(str(Path(run_dir).resolve()) + "\n")


def latest_run() -> Path:
    pointer = runs_root() / "latest"
    if not pointer.is_file():
        raise InputError(f"no tuned run found ({pointer} is missing); run `contextedit tune VIDEO` first or pass `run` DIR")
    run = Path(pointer.read_text().strip())
    if not run.is_dir():
        raise InputError(f"the latest run {run} no longer exists; tune again or pass `run` DIR")
    return run


def write_manifest(run_dir: Path, manifest: dict) -> Path:
    return write_json(run_dir / MANIFEST, {"version": MANIFEST_VERSION, **manifest})


def load_manifest(run_dir: str | os.PathLike) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} not found; give `run` the folder that `contextedit tune` wrote (its `out`)")
    path = run_dir / MANIFEST
    if not path.is_file():
        raise InputError(f"{run_dir} has no {MANIFEST}, so it is not a tuned run (or its tune did not finish); "
                         "tune again or pass another `run`")
    manifest = read_json(path, "run manifest")
    missing = [k for k in REQUIRED_KEYS if k not in manifest] if isinstance(manifest, dict) else list(REQUIRED_KEYS)
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}; it is not a contextedit run manifest — tune again")
    return manifest


def run_file(run_dir: str | os.PathLike, manifest: dict, key: str) -> Path:
    """A file named by the manifest, refused if it points outside the run folder."""
    name = manifest["files"].get(key)
    if not name:
        raise InputError(f"run manifest in {run_dir} names no {key!r} file; tune again")
    path = inside(run_dir, name)
    if not path.exists():
        raise InputError(f"run file {path} is missing; the run folder is incomplete — tune again")
    return path
