"""The ``--update-docs`` flag every bench script shares: what it may rewrite without it.

Without ``--update-docs`` a bench script writes only its figures (``bench/results/`` by default)
and its scratch folders (``bench/work/``, temporary folders). The shipped files — README.md,
BENCHMARKS.md, ``examples/``, ``prompts/`` and the packaged models in ``contextedit/assets/`` —
change only when the command says so with ``--update-docs``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("README.md", "BENCHMARKS.md", "examples", "prompts", "contextedit/assets")
HELP = ("also rewrite shipped files: BENCHMARKS.md's table, README/examples images, prompts/, "
        "contextedit/assets/ (without it only bench/results/ and scratch folders are written)")


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--update-docs", action="store_true", help=HELP)


def is_shipped(path: str | os.PathLike) -> bool:
    """Whether ``path`` is, or lies inside, one of the repository's shipped files or folders."""
    target = Path(path).resolve()
    return any(target == ROOT / name or (ROOT / name) in target.parents for name in SHIPPED)


def check(args: argparse.Namespace, *paths: str | os.PathLike | None) -> None:
    """Refuse, before any work, an output path among the shipped files unless ``--update-docs``."""
    for path in paths:
        if path and is_shipped(path) and not args.update_docs:
            raise SystemExit(f"{path} is a shipped file of the repository; add --update-docs to rewrite it "
                             "(or write elsewhere, e.g. under bench/work/)")


def benchmarks_file(args: argparse.Namespace) -> Path | None:
    """Where the BENCHMARKS.md block goes: ``--benchmarks`` if given ("" for nowhere), else
    BENCHMARKS.md with ``--update-docs``, else nowhere (the figures stay in bench/results/)."""
    if args.benchmarks is None:
        if not args.update_docs:
            print("BENCHMARKS.md left as it is (add --update-docs to rewrite its table)", flush=True)
            return None
        return ROOT / "BENCHMARKS.md"
    if not args.benchmarks:
        return None
    check(args, args.benchmarks)
    return Path(args.benchmarks)
