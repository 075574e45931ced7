"""What the page offers after an edit: every output for download and the edits' scores.

An edit on the page writes each prompt as a frame folder (``edit --format frames``, lossless); the
``.mp4``, ``.gif``, the ``.zip`` of the frames and the ``.source-edit.mp4`` the player loops are
written beside it from those frames with the CLI's own writer (:func:`~contextedit.video.write_video`).
Scoring is ``contextedit eval`` (:func:`~contextedit.commands.evaluate.evaluate`) on the frame
folders against the run's source clip, with its HTML report; the page shows the report in a frame
(its images served from the runs folder) and offers it as a zip."""

from __future__ import annotations

import html
import re
import zipfile
from pathlib import Path
from urllib.parse import quote, unquote

from .. import video as vio
from ..fileio import atomic_path
from ..progress import ProgressFactory
from ..runs import load_manifest, source_clip

KINDS = ("mp4", "gif", "zip", "source-edit")
REPORT = "report.html"
FILE_URL = "gradio_api/file="  # Gradio's route for files under allowed_paths (relative: works behind a root path)


def downloads(folders: list[Path], run_dir: Path) -> list[dict[str, Path]]:
    """For each edit's frame folder, ``{"mp4", "gif", "zip", "source-edit": path}`` beside it; each is
    written once (again only when the frames are newer), atomically."""
    source = None
    made = []
    for folder in map(Path, folders):
        outputs = {kind: folder.with_name(f"{folder.name}.{kind}" if kind != "source-edit" else f"{folder.name}.source-edit.mp4")
                   for kind in KINDS}
        stale = [kind for kind, path in outputs.items() if not path.is_file() or path.stat().st_mtime < folder.stat().st_mtime]
        if stale:
            clip = vio.read_video(folder, frames=None, stride=1)
            for kind in stale:
                if kind == "zip":
                    _zip(folder, outputs["zip"])
                    continue
                frames = clip.frames
                if kind == "source-edit":
                    if source is None:
                        source = vio.read_video(source_clip(run_dir, load_manifest(run_dir)), frames=None, stride=1).frames
                    frames = vio.side_by_side(source[:len(frames)], frames)
                vio.write_video(frames, outputs[kind], clip.fps)
        made.append(outputs)
    return made


def _zip(folder: Path, out: Path) -> Path:
    return _write_zip(out, [(file, f"{folder.name}/{file.name}") for file in sorted(folder.iterdir()) if file.is_file()])


def _write_zip(out: Path, entries: list[tuple[Path, str]]) -> Path:
    """``out``, atomically: each ``(file, name in the archive)``, deflated."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for file, name in entries:
            archive.write(file, name)
    return out


def metric_names() -> list[str]:
    """eval's metrics, in its registry's order."""
    from ..metrics.evaluate import METRICS

    return list(METRICS)


def score(folders: list[Path], run_dir: Path, metrics: list[str] | str, models: dict, device: str,
          mask: str | None = None, progress: ProgressFactory | None = None) -> tuple[Path, dict]:
    """``contextedit eval FOLDERS --source <run>/source-frames --metrics M --report report.html`` (and
    ``--mask``) for one edit's outputs: the report beside them and eval's result."""
    from ..commands.evaluate import evaluate
    from ..errors import UsageError
    from ..options import EvalOptions

    if not folders:
        raise UsageError("nothing to score yet: edit first, then score the edit")
    names = ",".join(metrics) if not isinstance(metrics, str) else metrics
    report = Path(folders[0]).parent / REPORT
    opts = EvalOptions(paths=[str(f) for f in folders], metrics=names, source=str(source_clip(run_dir, load_manifest(run_dir))),
                       mask=mask, report=str(report), device=device, **models)
    return report, evaluate(opts, progress=progress)


def report_zip(report: Path) -> Path:
    """``report.zip``: the page and its ``report_files/`` folder, as eval wrote them."""
    files = report.with_name(f"{report.stem}_files")
    entries = [(file, f"{files.name}/{file.name}") for file in (sorted(files.iterdir()) if files.is_dir() else [])]
    return _write_zip(report.with_suffix(".zip"), [(report, report.name), *entries])


def report_frame(report: Path, height: int = 640) -> str:
    """The report in an ``<iframe srcdoc>`` (its own styles stay inside), its images pointed at
    Gradio's file route: Gradio serves an .html file only as a download, images inline."""
    page = report.read_text(encoding="utf-8")

    def served(match: re.Match) -> str:
        path = (report.parent / unquote(html.unescape(match.group(2)))).resolve()
        return f'{match.group(1)}="{html.escape(FILE_URL + quote(str(path)))}"'

    page = re.sub(r'\b(src|href)="(?![a-z]+:|/|#)([^"]+)"', served, page)
    return (f'<iframe title="eval report" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width:100%;height:{height}px;border:1px solid #ccc;border-radius:6px;background:#fff"></iframe>')
