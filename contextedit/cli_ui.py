"""``contextedit ui``: the options of the web UI and its start. Gradio (the ``ui`` extra) and torch
are imported only when the command runs, so ``--help`` stays instant and works without them."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .errors import UsageError

INSTALL = 'pip install -e ".[ui]"'


def ui_params() -> list[inspect.Parameter]:
    def own(name, annotation, default=None):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    return [
        own("model", Annotated[Optional[str], typer.Option(metavar="TEXT", help="Model the page tunes on: hub id, local diffusers folder, "
            "or 'tiny' (embedded). [default: $CONTEXTEDIT_MODEL, else stable-diffusion-v1-5/stable-diffusion-v1-5]")]),
        own("device", Annotated[str, typer.Option(metavar="TEXT", help="auto | cpu | cuda | cuda:N | mps.")], "auto"),
        own("host", Annotated[str, typer.Option(metavar="TEXT", help="Address to bind; 0.0.0.0 serves the network (no login: "
            "anyone who reaches it can run jobs).")], "127.0.0.1"),
        own("port", Annotated[int, typer.Option(metavar="INTEGER", help="Port to serve on.")], 7860),
        own("runs", Annotated[Optional[Path], typer.Option(metavar="PATH", help="Runs folder the page tunes into and lists "
            "(the CLI's run folders). [default: $CONTEXTEDIT_RUNS, else runs/]")]),
        own("share", Annotated[bool, typer.Option("--share", help="Also open a public Gradio share link "
            "(off by default: the page is reachable from this machine only).")], False),
        own("max_upload_mb", Annotated[int, typer.Option(metavar="INTEGER", help="Largest upload accepted, in MB.")], 500),
    ]


def check_gradio() -> None:
    """Refuse (exit 2, one line) when the ``ui`` extra is not installed."""
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the web UI needs gradio, which is not installed ({exc}); {INSTALL}") from None


def serve(values: dict, message: Callable[[str], str]) -> None:
    """Build the app and serve it until Ctrl-C; ``message`` puts a library error in the CLI's words."""
    if values["max_upload_mb"] < 1:
        raise UsageError("`max_upload_mb` must be at least 1")
    if not 0 < values["port"] < 65536:
        raise UsageError(f"`port` {values['port']} is not a port number (1-65535)")
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no calls home
    check_gradio()
    from .ui.app import serve_app

    serve_app(model=values["model"], device=values["device"], host=values["host"], port=values["port"],
              runs=values["runs"], share=values["share"], max_upload_mb=values["max_upload_mb"], message=message)
