"""What every command of the CLI does first: logging to stderr, the libraries' own chatter
silenced, and the progress factory (rich bars, or silence under --quiet). Kept out of cli.py,
which holds the commands, so that each file stays short."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

log = logging.getLogger("contextedit")

# The options shared by every command that loads a model are declared in settings.RuntimeOptions.
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info lines.")]


def setup(quiet: bool, debug: bool):
    """Logging to stderr, library chatter silenced; returns the progress factory."""
    from .progress import progress_bar, quiet_libraries, silent

    quiet_libraries(debug)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if not log.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    return silent if quiet else progress_bar


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (redirections and test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr)
