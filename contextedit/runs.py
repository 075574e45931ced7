"""Run folders: the manifest a tune writes, the ``runs/latest`` pointer, and safe access to run files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Iterator

from .defaults import EVERY_BLOCK, TEMPORAL_LAYERS
from .errors import InputError, OutputExistsError, UnsafeFileError, UsageError
from .fileio import atomic_path, check_writable_dir, file_lock, inside, read_json, write_json

MANIFEST = "manifest.json"
# 4: temporal_layers says where the tuned UNet's temporal layers are (older runs: every-block);
# 3: fps is the clip's playback rate (the source's over the stride) and files carry sha256;
# 2: the adapter is a diffusers model folder
MANIFEST_VERSION = 4
REQUIRED_KEYS = ("version", "model", "source_prompt", "frames", "width", "height", "fps", "files")
# A manifest is untrusted input: each field's type, checked on load (bool is not a number here).
FIELD_TYPES = {"version": int, "model": str, "source_prompt": str, "frames": int, "width": int, "height": int,
               "fps": (int, float), "files": dict, "stride": int, "sha256": dict, "temporal_layers": str,
               "model_file": dict, "loras": list, "motion_adapter": (dict, type(None))}


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


def clip_name(video: str | os.PathLike) -> str:
    """The folder name a clip's outputs get: the slug of its file's stem (a frame folder's name),
    never ``.``, ``..``, empty or absolute. A path ending in ``..`` or ``.`` names the folder it
    resolves to (``frames/..`` is ``frames``' parent), not ``..``; ``...mp4`` (stem ``..``) is ``untitled``."""
    path = Path(video)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    return slugify(path.stem)


def plain_name_under(root: str | os.PathLike, name: str) -> Path:
    """``root / name`` resolved, or UnsafeFileError unless ``name`` is a plain folder name (not
    ``.``, ``..``, empty, absolute, several parts or with a backslash) that stays under ``root``."""
    if name in ("", ".", "..") or "\\" in name or Path(name).is_absolute() or Path(name).name != name:
        raise UnsafeFileError(name)
    return inside(root, name)


def folder_under(root: str | os.PathLike, name: str, source: str | os.PathLike) -> Path:
    """``root / name`` for a folder named after the input ``source``, refused (UsageError) unless
    it is a plain name that stays under ``root`` once resolved."""
    try:
        plain_name_under(root, name)
    except UnsafeFileError:
        raise UsageError(f"the folder name {name!r} taken from {source} would not stay inside {root}; "
                         "rename the clip") from None
    return Path(root) / name


def default_run_dir(video: str | os.PathLike) -> Path:
    """``runs/<clip name>``: see :func:`clip_name`."""
    return folder_under(runs_root(), clip_name(video), video)


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
    for key, kind in FIELD_TYPES.items():
        value = manifest.get(key)
        if key in manifest and (isinstance(value, bool) or not isinstance(value, kind)):
            raise InputError(f"{path}: {key!r} is {value!r}, not {_kind(kind)}; the manifest is corrupt — tune again")
    if manifest.get("temporal_layers", EVERY_BLOCK) not in TEMPORAL_LAYERS:
        raise InputError(f"{path}: 'temporal_layers' is {manifest['temporal_layers']!r}, not one of "
                         f"{', '.join(TEMPORAL_LAYERS)}; the manifest is corrupt — tune again")
    if not all(isinstance(lora, dict) and isinstance(lora.get("file"), str) and isinstance(lora.get("sha256"), str)
               and isinstance(lora.get("scale"), (int, float)) for lora in manifest.get("loras", [])) or \
            ("model_file" in manifest and not all(isinstance(manifest["model_file"].get(k), str)
                                                   for k in ("path", "sha256", "family", "config"))):
        raise InputError(f"{path}: 'loras' or 'model_file' is malformed; the manifest is corrupt — tune again")
    motion = manifest.get("motion_adapter")
    if motion is not None and not (all(isinstance(motion.get(k), str) for k in ("folder", "sha256"))
                                   or isinstance(motion.get("id"), str)) \
            or motion is not None and manifest.get("temporal") not in ("tune", "freeze"):
        raise InputError(f"{path}: 'motion_adapter' or 'temporal' is malformed; the manifest is corrupt — tune again")
    bad = [k for k in ("frames", "width", "height", "fps", "stride") if k in manifest and not manifest[k] > 0]
    bad += [k for k, v in manifest["files"].items() if not isinstance(v, str)]
    if bad:
        raise InputError(f"{path}: {', '.join(map(repr, bad))} must be positive numbers or file names; "
                         "the manifest is corrupt — tune again")
    return manifest


def _kind(kind) -> str:
    if kind == (dict, type(None)):
        return "a JSON object or null"
    return {int: "an integer", str: "text", dict: "a JSON object", list: "a JSON list"}.get(kind, "a number")


def run_identity(run_dir: str | os.PathLike) -> str | None:
    """The sha256 of a run's manifest: an edit records the run it read by it, and checks it before
    writing into the run folder (None: no manifest there any more)."""
    try:
        return sha256_file(Path(run_dir) / MANIFEST)
    except OSError:
        return None


def file_hashes(folder: Path, files: dict) -> dict:
    """sha256 of every file a manifest names, a folder's files each by its relative path."""
    hashes = {}
    for name in files.values():
        path = folder / name
        for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if item.is_file():
                hashes[item.relative_to(folder).as_posix()] = sha256_file(item)
    return hashes


def verify_files(run_dir: Path, manifest: dict) -> None:
    """Refuse a run whose files no longer match the sha256 its manifest recorded (runs before
    version 3 recorded none and load as they are)."""
    for name, digest in (manifest.get("sha256") or {}).items():
        path = inside(run_dir, name)
        if not path.is_file():
            raise InputError(f"run file {path} is missing; the run folder is incomplete — tune again")
        if sha256_file(path) != digest:
            raise InputError(f"run file {path} does not match the sha256 its manifest records (corrupt, or changed "
                             "since the tune); tune again")


def run_file(run_dir: str | os.PathLike, manifest: dict, key: str) -> Path:
    """A file named by the manifest, refused if it points outside the run folder."""
    name = manifest["files"].get(key)
    if not name:
        raise InputError(f"run manifest in {run_dir} names no {key!r} file; tune again")
    path = inside(run_dir, name)
    if not path.exists():
        raise InputError(f"run file {path} is missing; the run folder is incomplete — tune again")
    return path


def source_clip(run_dir: str | os.PathLike, manifest: dict) -> Path:
    """The run's clip as tuned: its lossless frames (``source-frames/``) where the run has them,
    else ``source.mp4`` (runs tuned before the frames were kept; H.264 is lossy)."""
    return run_file(run_dir, manifest, "frames" if "frames" in manifest["files"] else "clip")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Held by ``tune`` while it replaces a run folder and by ``edit`` while it writes into one, so
    an edit never writes into a folder that is being swapped (a lock file beside the folder)."""
    run_dir = Path(run_dir).absolute()
    with file_lock(run_dir.parent / f".{run_dir.name}.lock"):
        yield
