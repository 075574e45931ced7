"""Progress reporting: rich bars for the CLI, silence for library calls and --quiet."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

Advance = Callable[..., None]


def _noop(**_: object) -> None:
    return None


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Advance]:
    """Yield ``advance(**fields)``; fields (loss=…) are shown beside the bar."""
    if not enabled:
        yield _noop
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(**fields: object) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            progress.update(task, advance=1, info=info)

        yield advance


# Library functions take ``progress`` factories of this type; the CLI passes ``progress_bar``.
ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager]


def silent(description: str, total: int) -> contextlib.AbstractContextManager:
    return progress_bar(description, total, enabled=False)


def quiet_libraries(debug: bool = False) -> None:
    """Silence the libraries' own chatter — Python warnings, diffusers' and transformers' logs,
    hub download bars — for the CLI and its batch workers: failures reach the user as one
    ``Error:`` line (or a job's record) instead. The env vars cover a library imported later,
    ``setLevel`` one imported already; ``debug`` keeps warnings."""
    import logging
    import os
    import warnings

    if not debug:
        warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our bars only: no "Loading weights" bars
    for name in ("diffusers", "transformers"):
        os.environ[f"{name.upper()}_VERBOSITY"] = "warning" if debug else "critical"
        logging.getLogger(name).setLevel(logging.WARNING if debug else logging.CRITICAL)
