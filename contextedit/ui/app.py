"""The Gradio page of ``contextedit ui`` and its named API endpoints (``/tune``, ``/edit``,
``/runs``). The work is :class:`~contextedit.ui.jobs.Jobs`, :mod:`.clip`, :mod:`.masks` and :mod:`.outputs`; this
module only wires them to Gradio: errors become the CLI's one-line message in a ``gr.Error`` (the
server keeps running), the library's progress callbacks feed ``gr.Progress``, and one queue runs one
device job at a time.

The API endpoints keep exactly their inputs (the issue's contract); the page's buttons call the
same work with the page's further settings (frame selection, edit settings) through their own,
private handlers, and the endpoints hang on hidden buttons. The page's Edit streams each prompt's
result as it is made; ``/edit`` answers once, with every prompt's file."""

from __future__ import annotations

import contextlib
import functools
import inspect
from pathlib import Path
from typing import Callable

from ..errors import ContextEditError
from ..runs import runs_root
from .jobs import EDIT_SETTINGS, Cancelled, Jobs, Selection

TITLE = "contextedit: text-guided video editing"
DEVICE = "device"  # the concurrency group of everything that runs a model: one at a time


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


def one_line(exc: BaseException, message: Callable[[str], str]) -> str:
    """The CLI's one line for a library error; a short one for anything else."""
    if isinstance(exc, ContextEditError):
        return " ".join(message(str(exc)).split())
    return f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"


@contextlib.contextmanager
def _one_line_errors(message: Callable[[str], str]):
    """Every failure inside turned into one line in the page (``gr.Error``)."""
    import gradio as gr

    try:
        yield
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001 — the page shows one line; the server keeps running
        raise gr.Error(one_line(exc, message)) from None


def _guarded(fn: Callable, message: Callable[[str], str]) -> Callable:
    """``fn`` with every failure turned into one line in the page; a generator stays one (Gradio
    streams each ``yield`` to the page)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with _one_line_errors(message):
                yield from fn(*args, **kwargs)

        return stream

    @functools.wraps(fn)  # the endpoint's parameters keep their names (video, prompt…) in the API
    def call(*args, **kwargs):
        with _one_line_errors(message):
            return fn(*args, **kwargs)

    return call


def _default(cls, name: str):
    """A setting's declared default (the page starts where the CLI does)."""
    from dataclasses import fields

    return next(f.default for f in fields(cls) if f.name == name)


def build_app(jobs: Jobs, message: Callable[[str], str] = str):
    """The page: a clip (upload or the sample) and its frames, its tune (Cancel, Resume), the runs,
    the edits with their settings and downloads, and their scores."""
    import gradio as gr

    from ..options import EvalOptions, TuneOptions
    from ..pipelines import inversion_modes
    from . import clip, masks, outputs

    guard = functools.partial(_guarded, message=message)

    # -- the named endpoints: exactly the inputs ------------------------------------------
    def tune(video, prompt, steps, seed, progress=gr.Progress()):
        return jobs.tune(video, prompt, steps, seed, progress=gradio_progress(progress))

    def edit(run, prompts, guidance, progress=gr.Progress()):
        return jobs.edit(run, prompts, guidance, progress=gradio_progress(progress))

    def runs():
        return jobs.list_runs()

    # -- the page's own handlers ------------------------------------------------------------------
    def tuned(call) -> tuple[str, str]:
        try:
            name = call()
        except Cancelled as exc:  # not a failure: the page says how to go on
            return exc.run, one_line(exc, str)
        return name, f"Tuned **{name}**: ready to edit, here or with `contextedit edit --run`."

    def tune_page(video, prompt, steps, seed, frames, stride, start, size, progress=gr.Progress()):
        selection = Selection(frames, stride, start, size)
        return tuned(lambda: jobs.tune(video, prompt, steps, seed, selection, progress=gradio_progress(progress)))

    def resume_page(run, progress=gr.Progress()):
        return tuned(lambda: jobs.resume(run, progress=gradio_progress(progress)))

    def cancel():
        jobs.cancel()
        return "Cancelling after the current step…"

    def preview_page(video, frames, stride, start, size):
        if not video:
            return [], ""
        try:
            return clip.preview(jobs, video, Selection(frames, stride, start, size))
        except Exception as exc:  # noqa: BLE001 — shown under the preview while the boxes are typed in
            return [], f"Error: {one_line(exc, message)}"

    def caption_page(video, frames, stride, start, size):
        return clip.caption(jobs, video, Selection(frames, stride, start, size))

    def edit_page(run, prompts, guidance, inversion, self_fusion, cross_fusion, blend, mask, drawn,
                  progress=gr.Progress()):
        """Streams (player, gallery, downloads, last edit) each time a prompt is done: the newest
        result loops in the player, all so far in the gallery and the downloads."""
        settings = dict(zip(EDIT_SETTINGS, (inversion or None, self_fusion, cross_fusion, blend)))
        mask = masks.user_mask(jobs.run_folder(run), mask, drawn)
        for made in jobs.iter_edit_outputs(run, prompts, guidance, gradio_progress(progress), settings=settings, mask=mask):
            shown = [(str(m["source-edit"]), m["frames"].name) for m in made]
            files = [str(m[kind]) for m in made for kind in ("mp4", "gif", "zip")]
            last = {"run": str(jobs.run_folder(run)), "folders": [str(m["frames"]) for m in made], "mask": mask}
            yield shown[-1][0] if shown else None, shown, files, last

    def canvas_page(run):
        try:
            return masks.canvas(jobs.run_folder(run))
        except Exception:  # noqa: BLE001 — no run chosen (or a name being typed): an empty canvas
            return None

    def score_page(last, metrics, progress=gr.Progress()):
        last = last or {}
        report, _ = outputs.score([Path(f) for f in last.get("folders", [])], Path(last.get("run", ".")), metrics,
                                  jobs.eval_models, jobs.device, mask=last.get("mask"), progress=gradio_progress(progress))
        return outputs.report_frame(report), [str(outputs.report_zip(report))]

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        here = Path.cwd().resolve()
        shown = jobs.runs.relative_to(here) if jobs.runs.is_relative_to(here) else jobs.runs
        gr.Markdown(f"## {TITLE}\nTune on one clip, then edit it with new prompts. The runs are the CLI's run "
                    f"folders (`{shown}`): `contextedit edit --run` works on them too.")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Clip", sources=["upload"], loop=True, height=260, elem_id="clip")
                sample = gr.Button("Use the sample clip (a red circle)", size="sm", elem_id="sample")
                with gr.Accordion("Frame selection (what the tune takes)", open=True):
                    with gr.Row():
                        frames = gr.Textbox(label="Frames (a count, or all)", value=str(_default(TuneOptions, "frames")))
                        stride = gr.Number(label="Stride", value=_default(TuneOptions, "stride"), precision=0, minimum=1)
                        start = gr.Number(label="Start", value=_default(TuneOptions, "start"), precision=0, minimum=0)
                        size = gr.Textbox(label="Size WIDTHxHEIGHT", placeholder="empty: the model's size")
                    taken = gr.Gallery(label="Frames taken", columns=4, height=300, object_fit="contain", allow_preview=False,
                                       elem_id="taken")
                    taken_info = gr.Markdown(elem_id="taken-info")
            with gr.Column():
                with gr.Row():
                    prompt = gr.Textbox(label="Source prompt", scale=4, elem_id="prompt",
                                        placeholder="what the clip shows (empty: a BLIP-2 caption, as tune makes)")
                    caption_button = gr.Button("Caption", size="sm", scale=1, elem_id="caption")
                with gr.Row():
                    steps = gr.Number(label="Tuning steps", value=500, precision=0, minimum=1, elem_id="steps")
                    seed = gr.Number(label="Seed", value=_default(TuneOptions, "seed"), precision=0)
                with gr.Row():
                    tune_button = gr.Button("Tune", variant="primary", elem_id="tune")
                    cancel_button = gr.Button("Cancel", variant="stop")
                    resume_button = gr.Button("Resume")
                run_name = gr.Textbox(label="Tuned run", interactive=False, elem_id="run-name")
                tune_status = gr.Markdown(elem_id="tune-status")
        gr.Markdown("### Edit")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    run = gr.Dropdown(label="Run", choices=jobs.list_runs(), allow_custom_value=True, scale=4)
                    refresh = gr.Button("Refresh", size="sm", scale=1)
                targets = gr.Textbox(label="Target prompts, one per line", lines=3, elem_id="targets")
                guidance = gr.Number(label="Guidance", value=jobs.guidance(), minimum=0)
                with gr.Accordion("Edit settings", open=False):
                    inversion = gr.Dropdown(label="Inversion", choices=list(inversion_modes.names()),
                                            value=jobs.edit_default("inversion"))
                    self_fusion = gr.Slider(0, 1, step=0.05, label="Self-attention fusion (share of the steps)",
                                            value=jobs.edit_default("self_fusion"))
                    cross_fusion = gr.Slider(0, 1, step=0.05, label="Cross-attention fusion (share of the steps)",
                                             value=jobs.edit_default("cross_fusion"))
                    blend = gr.Checkbox(label="Mask from the changed words (blend)", value=bool(jobs.edit_default("blend")))
                    mask = gr.Image(label="Your mask (white: may change; optional)", type="filepath", sources=["upload"],
                                    format="png", height=160)
                    drawn = gr.ImageEditor(label="Or draw it: paint where the edit may change (the run's first frame)",
                                           type="numpy", sources=[], transforms=[], layers=False, format="png", height=300,
                                           brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
                                           elem_id="drawn-mask")
                edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
            with gr.Column():
                player = gr.Video(label="Source | edit", autoplay=True, loop=True, interactive=False, elem_id="player")
                gallery = gr.Gallery(label="Edits (source | edit)", columns=2, height=220, object_fit="contain", allow_preview=False)
                files = gr.Files(label="Downloads: mp4, gif, frames zip", interactive=False)
        gr.Markdown("### Score")
        with gr.Row():
            with gr.Column(scale=1):
                metrics = gr.CheckboxGroup(label="eval's metrics", choices=outputs.metric_names(),
                                           value=[m.strip() for m in _default(EvalOptions, "metrics").split(",")])
                score_button = gr.Button("Score the last edit", elem_id="score")
                report_files = gr.Files(label="Report (zip)", interactive=False)
            report = gr.HTML(elem_id="report")
        names = gr.JSON(label="Runs", visible=False)
        last_edit = gr.State()
        api_tune, api_edit = gr.Button(visible=False), gr.Button(visible=False)

        selection = [frames, stride, start, size]
        sample.click(lambda: str(jobs.sample()), None, video, api_visibility="private")
        gr.on([video.change, frames.blur, frames.submit, stride.change, start.change, size.blur, size.submit],
              preview_page, [video, *selection], [taken, taken_info], api_visibility="private", trigger_mode="always_last",
              concurrency_id="preview")
        caption_button.click(guard(caption_page), [video, *selection], prompt, api_visibility="private",
                             concurrency_id=DEVICE)
        refresh_runs = dict(fn=lambda name: gr.Dropdown(choices=jobs.list_runs(), value=name or None), inputs=run_name,
                            outputs=run, api_visibility="private")
        tune_button.click(guard(tune_page), [video, prompt, steps, seed, *selection], [run_name, tune_status],
                          api_visibility="private", concurrency_id=DEVICE).then(**refresh_runs)
        resume_button.click(guard(resume_page), run_name, [run_name, tune_status], api_visibility="private",
                            concurrency_id=DEVICE).then(**refresh_runs)
        cancel_button.click(cancel, None, tune_status, api_visibility="private", queue=False)
        run.change(canvas_page, run, drawn, api_visibility="private", concurrency_limit=None)
        edit_button.click(guard(edit_page), [run, targets, guidance, inversion, self_fusion, cross_fusion, blend, mask, drawn],
                          [player, gallery, files, last_edit], api_visibility="private", concurrency_id=DEVICE)
        score_button.click(guard(score_page), [last_edit, metrics], [report, report_files], api_visibility="private",
                           concurrency_id=DEVICE)

        api_tune.click(guard(tune), [video, prompt, steps, seed], run_name, api_name="tune", concurrency_id=DEVICE)
        api_edit.click(guard(edit), [run, targets, guidance], files, api_name="edit", concurrency_id=DEVICE)
        refresh.click(guard(runs), None, names, api_name="runs", concurrency_limit=None).then(
            lambda listed: gr.Dropdown(choices=listed or []), names, run, api_visibility="private")
    return demo


def serve_app(opts, message: Callable[[str], str] = str) -> None:
    """Serve the page (:class:`~contextedit.options.UIOptions`) until Ctrl-C: on ``opts.host`` only
    (127.0.0.1 unless asked), no share link unless ``opts.share``, uploads up to
    ``opts.max_upload_mb`` MB, one job at a time (a second tune queues)."""
    runs = Path(opts.runs) if opts.runs is not None else runs_root()
    runs.mkdir(parents=True, exist_ok=True)
    jobs = Jobs(runs=runs.resolve(), model=opts.model, device=opts.device, edit_steps=opts.edit_steps,
                caption_model=opts.caption_model,
                eval_models={k: getattr(opts, k) for k in ("clip_model", "pickscore_model", "dino_model")})
    demo = build_app(jobs, message)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=opts.host, server_port=opts.port, share=opts.share, max_file_size=opts.max_upload_mb * 1024 * 1024,
                allowed_paths=[str(jobs.runs), str(jobs.sample().parent)], ssr_mode=False, show_error=True,
                footer_links=["api"])
