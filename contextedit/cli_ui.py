"""``contextedit ui``: the options of the web UI and its start. Gradio (the ``ui`` extra) and torch
are imported only when the command runs, so ``--help`` stays instant and works without them."""

from __future__ import annotations

import inspect
from typing import Callable

from .errors import UsageError

INSTALL = 'pip install -e ".[ui]"'


def ui_params() -> list[inspect.Parameter]:
    from .cli_options import option_parameters
    from .options import UIOptions

    return option_parameters(UIOptions)


def check_gradio() -> None:
    """Refuse (exit 2, one line) when the ``ui`` extra is not installed."""
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the web UI needs gradio, which is not installed ({exc}); {INSTALL}") from None


def serve(values: dict, message: Callable[[str], str]) -> None:
    """Build the app and serve it until Ctrl-C; ``message`` puts a library error in the CLI's words."""
    from .cli_options import given
    from .options import UIOptions

    opts = UIOptions(**given(values, UIOptions))
    opts.validate()
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no calls home
    check_gradio()
    from .ui.app import serve_app

    serve_app(opts, message=message)
