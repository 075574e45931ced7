"""``contextedit eval``: its options come from :class:`contextedit.options.EvalOptions`; kept apart
from cli.py, whose other commands fill it."""

from __future__ import annotations

import inspect

from .cli_options import given, option_parameters
from .cli_setup import Debug, Quiet, say as _say, setup as _setup
from .options import EvalOptions


def _evaluate(values: dict) -> None:
    """Score edits: CLIP (cosine and x100), PickScore, DINO, flow and warp error, PSNR, shapes oracle."""
    quiet = values.pop("quiet")
    progress = _setup(quiet, values.pop("debug"))
    from rich.console import Console

    from .commands.evaluate import evaluate as run_eval
    from .metrics.evaluate import results_table, table_width

    values["paths"] = [str(p) for p in values.get("paths") or []]
    result = run_eval(EvalOptions(**given(values, EvalOptions)), progress=progress)
    console = Console()
    console.width = max(console.width, table_width(result))  # a fixed table reads better than folded cells
    console.print(results_table(result))
    for written in (values.get("json_out"), values.get("report")):
        if written is not None:
            _say(quiet, f"wrote {written}")


def eval_params() -> list[inspect.Parameter]:
    from pathlib import Path

    flags = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=a)
             for n, a in (("debug", Debug), ("quiet", Quiet))]
    return [*option_parameters(EvalOptions, argument_types={"paths": list[Path]}), *flags]
