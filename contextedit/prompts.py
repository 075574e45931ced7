"""Edit prompt sets: a clip's source caption and target prompts, as in the paper's study.

A prompt file is JSON: one set, or a list of sets (one per clip)::

    {"video": "examples/red-circle.mp4",
     "source_prompt": "a red circle moving right on a black background",
     "edits": [{"prompt": "a blue circle moving right on a black background", "type": "attribute"}, ...]}

``video`` and ``source_prompt`` are optional (without a source prompt the clip is captioned);
each edit is an object with a ``prompt`` and an optional ``type`` (object, attribute,
background, style or multiple), or a bare string. Other keys (notes) are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .fileio import read_json

# LOVEU-TGVE-2023's four kinds are style, object, background and multiple (several at once).
EDIT_TYPES = ("object", "attribute", "background", "style", "multiple")


@dataclass
class PromptSet:
    """One clip's prompts."""

    video: str | None
    source_prompt: str | None
    prompts: list[str]
    types: list[str | None]


def load_prompt_sets(path: str | os.PathLike) -> list[PromptSet]:
    """Every set in a prompt file; a malformed file is an InputError that says what to fix."""
    data = read_json(path, what="prompt file")
    entries = data if isinstance(data, list) else [data]
    if not entries:
        raise InputError(f"prompt file {path} is an empty list; add a prompt set (see prompts/red-circle.json)")
    return [_prompt_set(entry, f"prompt file {path}" + (f", set {i}" if isinstance(data, list) else "")) for i, entry in enumerate(entries)]


def load_prompt_file(path: str | os.PathLike, video: str | os.PathLike | None = None) -> tuple[str | None, list[str]]:
    """``(source_prompt or None, target prompts)`` of the file's set for ``video``.

    A file with one set serves any clip; with several, the set for ``video`` is taken: the one
    whose ``video`` is that file (relative to the working folder or to the prompt file), else, where
    a set's ``video`` is a placeholder that does not exist, the one with the same file name.
    """
    return _pick(load_prompt_sets(path), path, video)


def prompts_for_run(path: str | os.PathLike, run: str | os.PathLike | None = None) -> tuple[str | None, list[str]]:
    """:func:`load_prompt_file` for ``edit``: the set for the clip that ``run`` (else the latest run)
    was tuned on, as its manifest's ``source_video`` records it."""
    from .runs import latest_run, load_manifest

    sets = load_prompt_sets(path)
    video = None
    if len(sets) > 1:
        video = load_manifest(Path(run) if run else latest_run()).get("source_video")
    return _pick(sets, path, video)


def _pick(sets: list[PromptSet], path: str | os.PathLike, video: str | os.PathLike | None) -> tuple[str | None, list[str]]:
    if len(sets) == 1:
        return sets[0].source_prompt, sets[0].prompts
    found = {id(s): _find(s.video, Path(path).parent) for s in sets if s.video}
    matches = []
    if video is not None:
        matches = [s for s in sets if found.get(id(s)) and _same_file(found[id(s)], video)]
        if not matches:
            matches = [s for s in sets if s.video and found[id(s)] is None and Path(s.video).name == Path(video).name]
    if len(matches) != 1:
        name = Path(video).name if video is not None else None
        names = ", ".join(Path(s.video).name for s in sets if s.video)
        raise InputError(f"prompt file {path} holds several sets and {'several are' if matches else 'none is'} for "
                         f"{name or 'an unnamed clip'}; its sets are for: {names} — use a clip of one of those "
                         "(or a one-set file, or `prompt`)")
    return matches[0].source_prompt, matches[0].prompts


def _find(video: str, folder: Path) -> Path | None:
    """A set's ``video`` where it exists: as given (relative to the working folder) or beside the file."""
    candidates = [Path(video)] + ([] if Path(video).is_absolute() else [folder / video])
    return next((c for c in candidates if c.exists()), None)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is gone (a run's source moved away): compare the paths
        return Path(a).resolve() == Path(b).resolve()


def _prompt_set(entry: object, where: str) -> PromptSet:
    if not isinstance(entry, dict):
        raise InputError(f"{where} must be a JSON object with an 'edits' list; see prompts/red-circle.json")
    source = entry.get("source_prompt")
    if source is not None and not (isinstance(source, str) and source.strip()):
        raise InputError(f"{where}: 'source_prompt' must be a non-empty string (or left out to caption the clip)")
    video = entry.get("video")
    if video is not None and not isinstance(video, str):
        raise InputError(f"{where}: 'video' must be a path string")
    edits = entry.get("edits")
    if not isinstance(edits, list) or not edits:
        raise InputError(f"{where} needs a non-empty 'edits' list of target prompts; see prompts/red-circle.json")
    pairs = [_edit(edit, f"{where}, edit {i}") for i, edit in enumerate(edits)]
    return PromptSet(video, source.strip() if source else None, [p for p, _ in pairs], [t for _, t in pairs])


def _edit(edit: object, where: str) -> tuple[str, str | None]:
    """(prompt, type) of one ``edits`` entry, checked."""
    kind = None
    if isinstance(edit, dict):
        kind = edit.get("type")
        if kind is not None and kind not in EDIT_TYPES:
            raise InputError(f"{where}: type {kind!r} is not one of {', '.join(EDIT_TYPES)}")
        edit = edit.get("prompt")
    if not isinstance(edit, str) or not edit.strip():
        raise InputError(f"{where}: needs a non-empty 'prompt' string")
    return edit.strip(), kind
