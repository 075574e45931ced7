"""The clip on the page before it is tuned: the frames the frame selection takes (the preview) and
their caption. Both read the clip as ``contextedit tune`` does (:func:`~contextedit.video.read_video`
and :func:`~contextedit.commands.tune.sized_frames`) and caption it as ``tune`` does without a prompt
(:func:`~contextedit.commands.tune.source_caption`), so what the page shows is what a tune takes."""

from __future__ import annotations

import numpy as np

from .. import video as vio
from .jobs import Jobs, Selection, check_video

PREVIEW_MAX = 64  # frames shown at most ("all" of a long clip would flood the page)


def selected_frames(jobs: Jobs, video: str | None, selection: Selection):
    """``(TuneOptions, Clip, frames)``: the options the selection makes (checked as tune checks them),
    the frames read and those frames at the size the tune works at."""
    from ..commands.tune import sized_frames
    from ..options import TuneOptions

    opts = TuneOptions(video=check_video(video), model=jobs.model, device=jobs.device, caption_model=jobs.caption_model,
                       **selection.options())
    opts.validate()
    clip = vio.read_video(opts.video, frames=opts.frames, stride=opts.stride, start=opts.start)
    return opts, clip, sized_frames(clip, opts.size, jobs.components().native_size)


def preview(jobs: Jobs, video: str | None, selection: Selection) -> tuple[list[np.ndarray], str]:
    """The frames the tune would take (at most :data:`PREVIEW_MAX`), and one line saying which."""
    _, clip, frames = selected_frames(jobs, video, selection)
    shown = ", ".join(map(str, clip.indices[:12])) + (", …" if len(clip.indices) > 12 else "")
    more = f" (the first {PREVIEW_MAX} shown)" if len(frames) > PREVIEW_MAX else ""
    line = (f"{len(frames)} of the clip's {clip.total_frames} frames (indices {shown}) at {frames.shape[2]}×{frames.shape[1]}, "
            f"playing at {clip.playback_fps:g} fps{more}")
    return list(frames[:PREVIEW_MAX]), line


def caption(jobs: Jobs, video: str | None, selection: Selection) -> str:
    """The source prompt ``tune`` would caption these frames with (``--caption-model``)."""
    from ..commands.tune import source_caption
    from ..pipeline import ContextEditPipeline

    opts, _, frames = selected_frames(jobs, video, selection)
    return source_caption(frames, opts, ContextEditPipeline(jobs.components()))
