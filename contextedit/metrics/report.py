"""``contextedit eval --report report.html``: one static HTML page showing what eval measured.

The page lists the models and metric scales, the mean of every metric, and one card per scored
clip (source | edit as looping GIFs, the prompt, the metrics), then a plot of the per-frame values.
It is a plain file with a sibling ``<stem>_files/`` folder: no server, no JavaScript, nothing
fetched from the network, so it can be mailed, zipped or opened straight from disk.

The page and its folder are built in a temporary folder beside ``out`` and moved into place at
the end, so an interrupted run leaves the previous report (or nothing), never half of one.
"""

from __future__ import annotations

import html
import math
import os
import re
import secrets
import shutil
import unicodedata
from numbers import Real
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..errors import InputError, OutputExistsError, UsageError
from ..fileio import check_writable_dir, ensure_writable_dir
from ..video.write import write_video

GIF_MAX_SIDE = 256  # larger frames are downscaled: the page stays light enough to mail
NOT_METRICS = {"path", "prompt", "frames", "source_frames", "compared_frames", "cropped", "notes", "per_frame"}
# per_frame.png panels: (per_frame key, panel title, x-axis label)
PANELS = (("clip_text", "per-frame CLIP-T", "frame"), ("flow_epe", "per-pair flow error", "frame pair"))
PLOT_NAME = "per_frame.png"
DASH = "\u2014"

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; max-width: 1150px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.card { border: 1px solid #bbb; border-radius: 6px; padding: 12px; margin: 14px 0; display: flex; gap: 18px; flex-wrap: wrap; }
.media { display: flex; gap: 10px; }
figure { margin: 0; text-align: center; font-size: 12px; color: #555; }
figure img { min-width: 160px; max-width: 256px; height: auto; image-rendering: pixelated; display: block; }
.none { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center; background: #eee; }
.info { font-size: 13px; flex: 1 1 320px; min-width: 0; } .prompt { font-size: 15px; font-weight: 600; }
code { font-size: 12px; overflow-wrap: anywhere; }
img.plot { max-width: 100%; }
"""


def write_report(result: dict, out: str | os.PathLike, clips: dict[str, np.ndarray], source: np.ndarray | None = None, *,
                 fps: int = 8) -> Path:
    """Write the HTML report of eval's ``result`` to ``out`` (and its ``<stem>_files/`` folder).

    ``clips`` maps each result's ``path`` to its uint8 (F, H, W, 3) frames; ``source`` is the
    source clip's frames or None. An existing report at ``out`` and its folder are replaced.
    Returns the HTML path.
    """
    out = check_report(out)
    if not fps > 0:
        raise UsageError(f"`fps` must be positive, got {fps}")
    files = out.with_name(f"{out.stem}_files")
    rows = list(result.get("results") or [])

    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        media = tmp / files.name
        media.mkdir()
        source_name = None
        if source is not None:
            source_name = "source.gif"
            _write_gif(source, media / source_name, fps, "source")
        gifs = []
        for index, row in enumerate(rows, 1):
            frames = clips.get(str(row.get("path")))
            name = f"{index:03d}-{_slug(row)}.gif" if frames is not None else None
            if name is not None:
                _write_gif(frames, media / name, fps, str(row.get("path")))
            gifs.append(name)
        plot = PLOT_NAME if _write_plot(rows, media / PLOT_NAME) else None
        page = _page(result, rows, files.name, source_name, gifs, plot)
        (tmp / out.name).write_text(page, encoding="utf-8")
        _move_into_place(tmp, out, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # holds the replaced old folder, or a failed attempt
    return out


def check_report(out: str | os.PathLike, *, new_folder_ok: bool = False) -> Path:
    """Refuse a ``report`` path the page could not be written to (before any scoring): not .html, a
    folder, a missing (unless ``new_folder_ok``: the caller makes it) or unwritable folder, a foreign
    ``_files`` folder."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"`report` must be an .html file path, got {str(out)!r}")
    if new_folder_ok and not out.parent.exists():
        check_writable_dir(out.parent)
        return out
    if not out.parent.is_dir():
        raise InputError(f"the folder of `report` {out} does not exist; create {out.parent} first")
    if out.is_dir():
        raise UsageError(f"`report` {out} is a folder; pass an .html file path")
    ensure_writable_dir(out.parent)
    _check_replaceable(out.with_name(f"{out.stem}_files"))
    return out


def _check_replaceable(files: Path) -> None:
    # a report's folder holds only GIFs and a PNG; anything else there is someone's data, never deleted
    if not files.exists() and not files.is_symlink():
        return
    ours = files.is_dir() and not files.is_symlink() and all(
        p.is_file() and p.suffix.lower() in (".gif", ".png") for p in files.iterdir())
    if not ours:
        raise OutputExistsError(f"{files} exists and is not a report folder written by contextedit; choose another `report`")


def _move_into_place(tmp: Path, out: Path, files: Path) -> None:
    """Swap the new folder and page in; if either rename fails, put the old ones back."""
    old = tmp / "old_files"
    had_old = files.exists()
    if had_old:
        os.replace(files, old)
    try:
        os.replace(tmp / files.name, files)
        try:
            os.replace(tmp / out.name, out)
        except BaseException:
            os.replace(files, tmp / files.name)
            raise
    except BaseException:
        if had_old:
            os.replace(old, files)
        raise


def _slug(row: dict) -> str:
    """Safe ASCII file-name part from the prompt, else the clip's file name."""
    text = row.get("prompt") or Path(str(row.get("path") or "clip")).stem
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "clip"


def _write_gif(frames: np.ndarray, path: Path, fps: float, what: str) -> None:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"frames of {what} must be a non-empty uint8 (F, H, W, 3) array, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    scale = GIF_MAX_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS)) for f in frames])
    write_video(frames, path, fps, "gif")  # ffmpeg GIF: one palette per clip, loop=0 (forever)


def _series(rows: list[dict], key: str) -> list[tuple[int, list[float]]]:
    """(result number, values) of every result with a non-empty per_frame[key]; None → NaN (a gap)."""
    found = []
    for index, row in enumerate(rows, 1):
        values = (row.get("per_frame") or {}).get(key)
        if values:
            found.append((index, [math.nan if v is None else float(v) for v in values]))
    return found


def _write_plot(rows: list[dict], path: Path) -> bool:
    """Two panels (per-frame CLIP-T, per-pair flow error), one line per result; False when no data."""
    panels = [(_series(rows, key), title, xlabel) for key, title, xlabel in PANELS]
    if not any(series for series, _, _ in panels):
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), dpi=100, layout="constrained")  # Figure API: pyplot's global state untouched
    FigureCanvasAgg(fig)
    for ax, (series, title, xlabel) in zip(fig.subplots(1, len(panels)), panels):
        ax.set_title(title if series else f"{title}: no data")
        ax.set_xlabel(xlabel)
        for index, values in series:
            ax.plot(range(len(values)), values, marker="o", markersize=3, label=f"{index}. {_label(rows[index - 1])}")
        if series and len(series) <= 12:  # more would hide the lines
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.savefig(path, format="png")
    return True


def _label(row: dict) -> str:
    text = row.get("prompt") or Path(str(row.get("path"))).name
    text = text if len(text) <= 30 else text[:29] + "\u2026"
    return text.replace("$", r"\$")  # a "$" would start matplotlib mathtext, and a bad formula fails the draw


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _metric_keys(result: dict, rows: list[dict]) -> list[str]:
    """Every numeric (or None) metric key of the mean and the results, in order of appearance."""
    keys: dict[str, None] = {}
    for mapping in [result.get("mean") or {}, *rows]:
        for key, value in mapping.items():
            if key not in NOT_METRICS and (value is None or _is_number(value)):
                keys.setdefault(key)
    return list(keys)


def _fmt(value) -> str:
    """4 significant digits; "—" for a missing value."""
    if value is None or not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, int) or abs(value) >= 1e4:
        return f"{value:.0f}"
    return f"{value:.4g}"


def _page(result: dict, rows: list[dict], folder: str, source: str | None, gifs: list[str | None], plot: str | None) -> str:
    e = html.escape
    keys = _metric_keys(result, rows)
    scales = result.get("scales") or {}
    models = result.get("models") or {}
    means = result.get("mean") or {}

    def src(name: str) -> str:
        return e(quote(f"{folder}/{name}"))

    def figure(name: str | None, caption: str, missing: str) -> str:
        if name is None:
            return f'<figure><div class="none">{e(missing)}</div><figcaption>{e(caption)}</figcaption></figure>'
        return f'<figure><img src="{src(name)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>contextedit eval report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>contextedit eval report</h1>"]
    model_items = "".join(f"<li>{e(str(k))}: <code>{e(str(v))}</code></li>" for k, v in models.items() if v is not None)
    parts.append(f"<h2>Models</h2><ul>{model_items or '<li>none recorded</li>'}</ul>")
    src_text = result.get("source")
    parts.append(f'<p class="info">source: {f"<code>{e(str(src_text))}</code>" if src_text else "none"}</p>')
    parts.append("<h2>Means</h2><table><tr><th>metric</th><th>mean</th><th>scale</th></tr>")
    for key in keys:
        parts.append(f'<tr><td>{e(key)}</td><td class="num">{_fmt(means.get(key))}</td><td>{e(str(scales.get(key) or ""))}</td></tr>')
    parts.append("</table>")

    parts.append(f"<h2>Results ({len(rows)})</h2>")
    for index, (row, gif) in enumerate(zip(rows, gifs), 1):
        prompt = row.get("prompt")
        caption = f"edit ({row['cropped']})" if row.get("cropped") else "edit"
        media = figure(source, "source", "no source given") + figure(gif, caption, "no frames given")
        metrics = "".join(f'<tr><td>{e(k)}</td><td class="num">{_fmt(row.get(k))}</td></tr>' for k in keys if k in row)
        frames = f" · {row['frames']} frames" if _is_number(row.get("frames")) else ""
        notes = [str(n) for n in row.get("notes") or []] if isinstance(row.get("notes"), list) else []
        notes_html = f'<ul class="notes">{"".join(f"<li>{e(n)}</li>" for n in notes)}</ul>' if notes else ""
        parts.append(
            f'<div class="card"><div class="media">{media}</div><div class="info">'
            f'<div class="prompt">{index}. {e(prompt) if prompt else "<i>no prompt</i>"}</div>'
            f'<p><code>{e(str(row.get("path")))}</code>{e(frames)}</p>{notes_html}'
            f'<table>{metrics or "<tr><td>no metrics</td></tr>"}</table></div></div>')

    if plot is not None:
        parts.append(f'<h2>Per-frame values</h2><img class="plot" src="{src(plot)}" alt="per-frame CLIP-T and flow error">')
    parts.append("</body></html>\n")
    return "\n".join(parts)
