"""The Gradio page of ``contextedit ui`` and its named API endpoints (``/tune``, ``/edit``,
``/runs``). The work is :class:`~contextedit.ui.jobs.Jobs`; this module only wires it to Gradio:
errors become the CLI's one-line message in a ``gr.Error`` (the server keeps running), the
library's progress callbacks feed ``gr.Progress``, and one queue runs one job at a time."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from ..errors import ContextEditError
from ..runs import runs_root
from .jobs import Jobs

TITLE = "contextedit: text-guided video editing"


def gradio_progress(bar) -> Callable:
    """A library progress factory (:data:`~contextedit.progress.ProgressFactory`) that moves ``bar``
    (a ``gr.Progress``): the step, the fields the library reports (loss…) and Gradio's time left."""

    @contextlib.contextmanager
    def factory(description: str, total: int):
        done = 0
        bar((0, total), desc=description, unit="steps")

        def advance(**fields) -> None:
            nonlocal done
            done += 1
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            bar((done, total), desc=f"{description} {info}".strip(), unit="steps")

        yield advance

    return factory


def _guarded(fn: Callable, message: Callable[[str], str]) -> Callable:
    """``fn`` with every failure turned into one line in the page (``gr.Error``)."""
    import functools

    import gradio as gr

    @functools.wraps(fn)  # the endpoint's parameters keep their names (video, prompt…) in the API
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ContextEditError as exc:
            raise gr.Error(" ".join(message(str(exc)).split())) from None
        except Exception as exc:  # noqa: BLE001 — the page shows one line; the server keeps running
            raise gr.Error(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}") from None

    return call


def build_app(jobs: Jobs, message: Callable[[str], str] = str):
    """The page: a clip (upload or the sample), its tune with a progress bar, the runs, the edits."""
    import gradio as gr

    def tune(video, prompt, steps, seed, progress=gr.Progress()):
        return jobs.tune(video, prompt, steps, seed, progress=gradio_progress(progress))

    def edit(run, prompts, guidance, progress=gr.Progress()):
        return jobs.edit(run, prompts, guidance, progress=gradio_progress(progress))

    def runs():
        return jobs.list_runs()

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}\nTune on one clip, then edit it with new prompts. The runs are the CLI's run "
                    f"folders (`{jobs.runs}`): `contextedit edit --run` works on them too.")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Clip", sources=["upload"], loop=True)
                sample = gr.Button("Use the sample clip (a red circle)", size="sm")
            with gr.Column():
                prompt = gr.Textbox(label="Source prompt", placeholder="what the clip shows (empty: a BLIP-2 caption)")
                with gr.Row():
                    steps = gr.Number(label="Tuning steps", value=500, precision=0, minimum=1)
                    seed = gr.Number(label="Seed", value=0, precision=0)
                tune_button = gr.Button("Tune", variant="primary")
                run_name = gr.Textbox(label="Tuned run", interactive=False)
        gr.Markdown("### Edit")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    run = gr.Dropdown(label="Run", choices=jobs.list_runs(), allow_custom_value=True, scale=4)
                    refresh = gr.Button("Refresh", size="sm", scale=1)
                targets = gr.Textbox(label="Target prompts, one per line", lines=3)
                guidance = gr.Number(label="Guidance", value=jobs.guidance(), minimum=0)
                edit_button = gr.Button("Edit", variant="primary")
            with gr.Column():
                gallery = gr.Gallery(label="Edits", columns=2, height="auto")
                files = gr.Files(label="Edited videos", interactive=False)
        names = gr.JSON(label="Runs", visible=False)

        sample.click(lambda: str(jobs.sample()), None, video, api_visibility="private")
        tune_button.click(_guarded(tune, message), [video, prompt, steps, seed], run_name, api_name="tune",
                          concurrency_id="device").then(
            lambda name: gr.Dropdown(choices=jobs.list_runs(), value=name or None), run_name, run, api_visibility="private")
        edit_button.click(_guarded(edit, message), [run, targets, guidance], files, api_name="edit",
                          concurrency_id="device").then(lambda paths: paths or [], files, gallery, api_visibility="private")
        refresh.click(_guarded(runs, message), None, names, api_name="runs", concurrency_limit=None).then(
            lambda listed: gr.Dropdown(choices=listed or []), names, run, api_visibility="private")
    return demo


def serve_app(opts, message: Callable[[str], str] = str) -> None:
    """Serve the page (:class:`~contextedit.options.UIOptions`) until Ctrl-C: on ``opts.host`` only
    (127.0.0.1 unless asked), no share link unless ``opts.share``, uploads up to
    ``opts.max_upload_mb`` MB, one job at a time (a second tune queues)."""
    runs = Path(opts.runs) if opts.runs is not None else runs_root()
    runs.mkdir(parents=True, exist_ok=True)
    jobs = Jobs(runs=runs.resolve(), model=opts.model, device=opts.device, edit_steps=opts.edit_steps)
    demo = build_app(jobs, message)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=opts.host, server_port=opts.port, share=opts.share, max_file_size=opts.max_upload_mb * 1024 * 1024,
                allowed_paths=[str(jobs.runs), str(jobs.sample().parent)], ssr_mode=False, show_error=True,
                footer_links=["api"])
