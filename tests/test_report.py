"""The eval HTML report: self-contained files, escaping, atomic replacement, and a real Chromium render."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from contextedit.errors import InputError, UsageError
from contextedit.metrics.report import write_report

RED = (220, 40, 40)
NASTY_PROMPT = 'a <b>red</b> & "bold" square'


def _clip(colour, frames=8, size=32, seed=0):
    """Frames of one colour with a small dark square moving right (so frames differ)."""
    clip = np.empty((frames, size, size, 3), np.uint8)
    clip[:] = colour
    for f in range(frames):
        clip[f, 10:18, 2 + 2 * f:10 + 2 * f] = (20, 20, 20)
    return clip


def _fixture(per_frame=True, only_clip=False):
    paths = ["/data/red.mp4", "/data/blue.mp4"]
    clips = {paths[0]: _clip(RED), paths[1]: _clip((40, 80, 220), frames=6)}
    rows = [
        {"path": paths[0], "prompt": NASTY_PROMPT, "frames": 8, "clip_text": 0.27123456, "clip_temporal": 0.95,
         "pickscore": 20.1, "flow_epe": 1.2, "warp_error": None, "psnr": 25.0},
        {"path": paths[1], "prompt": None, "frames": 6, "clip_text": 0.2, "clip_temporal": None,
         "pickscore": 19.0, "flow_epe": 0.8, "warp_error": 0.003, "psnr": 30.5},
    ]
    if per_frame:
        rows[0]["per_frame"] = {"clip_text": [0.25, 0.26, 0.27, 0.28, 0.27, 0.26, 0.28, 0.29], "flow_epe": [1.0] * 7}
        rows[1]["per_frame"] = {"clip_text": [0.2] * 6}
    keys = ["clip_text", "clip_temporal"] if only_clip else ["clip_text", "clip_temporal", "pickscore", "flow_epe", "warp_error", "psnr"]
    rows = [{k: v for k, v in r.items() if k in keys or k in ("path", "prompt", "frames", "per_frame")} for r in rows]
    result = {
        "models": {"clip": "openai/clip-vit-large-patch14", "pickscore": None if only_clip else "yuvalkirstain/PickScore_v1"},
        "scales": {"clip_text": "cosine", "psnr": "dB"},
        "source": "/data/source.mp4",
        "results": rows,
        "mean": {k: None if k == "clip_temporal" else 1.5 for k in keys},
    }
    return result, clips


def _refs(page: Path) -> list[Path]:
    text = page.read_text()
    return [page.parent / unquote(ref) for ref in re.findall(r'(?:src|href)="([^"]+)"', text)]


def test_report_files_exist_and_text_escaped(tmp_path):
    result, clips = _fixture()
    page = write_report(result, tmp_path / "report.html", clips, source=_clip((0, 160, 0)), fps=8)
    assert page == tmp_path / "report.html"
    refs = _refs(page)
    assert refs and all(ref.is_file() for ref in refs)
    names = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert names == ["001-a-b-red-b-bold-square.gif", "002-blue.gif", "per_frame.png", "source.gif"]
    assert {p.name for p in refs} == set(names)
    for name, count in [("001-a-b-red-b-bold-square.gif", 8), ("002-blue.gif", 6), ("source.gif", 8)]:
        with Image.open(tmp_path / "report_files" / name) as gif:
            assert gif.n_frames == count and gif.info.get("loop") == 0
    text = page.read_text()
    assert "a &lt;b&gt;red&lt;/b&gt; &amp; &quot;bold&quot; square" in text and "<b>red</b>" not in text
    assert re.search(r"<td>warp_error</td><td class=\"num\">\u2014</td>", text)  # None in the first result
    assert re.search(r"<td>clip_temporal</td><td class=\"num\">\u2014</td><td>", text)  # None mean
    assert ">0.2712<" in text and ">30.5<" in text and "openai/clip-vit-large-patch14" in text
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_report_without_per_frame_source_or_extra_metrics(tmp_path):
    result, clips = _fixture(per_frame=False, only_clip=True)
    page = write_report(result, tmp_path / "r.htm", clips)
    text = page.read_text()
    assert all(ref.is_file() for ref in _refs(page))
    assert "per_frame.png" not in text and "source.gif" not in text
    assert sorted(p.name for p in (tmp_path / "r_files").iterdir()) == ["001-a-b-red-b-bold-square.gif", "002-blue.gif"]
    assert text.count("no source given") == 2
    assert "pickscore" not in text  # metric absent: no row; a None model is not listed


def test_plot_panel_without_data_still_writes_png(tmp_path):
    result, clips = _fixture()
    for row in result["results"]:
        row["per_frame"] = {"clip_text": row["per_frame"]["clip_text"]}  # no flow lists at all
    result["results"][1]["prompt"] = r"a $\frac$ cat"  # two "$" make matplotlib mathtext, and this formula is invalid
    page = write_report(result, tmp_path / "report.html", clips)
    assert (tmp_path / "report_files" / "per_frame.png").is_file() and "per_frame.png" in page.read_text()


def test_rewrite_replaces_report_and_folder(tmp_path):
    result, clips = _fixture()
    write_report(result, tmp_path / "report.html", clips, source=_clip((0, 160, 0)))
    result["results"] = result["results"][1:]
    result["results"][0].pop("per_frame")
    page = write_report(result, tmp_path / "report.html", clips)
    assert sorted(p.name for p in (tmp_path / "report_files").iterdir()) == ["001-blue.gif"]
    assert all(ref.is_file() for ref in _refs(page)) and "source.gif" not in page.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report_files"]


def test_failed_write_keeps_old_report(tmp_path):
    result, clips = _fixture()
    write_report(result, tmp_path / "report.html", clips)
    before = (tmp_path / "report.html").read_text()
    with pytest.raises(InputError, match="uint8"):
        write_report(result, tmp_path / "report.html", {k: v.astype(np.float32) for k, v in clips.items()})
    assert (tmp_path / "report.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report_files"]
    assert len(list((tmp_path / "report_files").iterdir())) == 3


def test_failed_swap_puts_old_report_back(tmp_path, monkeypatch):
    result, clips = _fixture()
    write_report(result, tmp_path / "report.html", clips, source=_clip((0, 160, 0)))
    before = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    real_replace = os.replace

    def replace(src, dst):  # the folder is already swapped when the page's rename fails
        if Path(dst) == tmp_path / "report.html":
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        write_report({**result, "results": result["results"][:1]}, tmp_path / "report.html", clips)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "report_files").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report_files"]


def test_bad_out(tmp_path):
    result, clips = _fixture()
    with pytest.raises(UsageError, match="`report` must be an .html file path"):
        write_report(result, tmp_path / "report.pdf", clips)
    with pytest.raises(InputError):
        write_report(result, tmp_path / "missing" / "report.html", clips)
    (tmp_path / "mine_files").mkdir()
    (tmp_path / "mine_files" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a report folder"):
        write_report(result, tmp_path / "mine.html", clips)
    assert (tmp_path / "mine_files" / "notes.txt").read_text() == "keep me"


def _browser() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)


def test_report_renders_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("Chromium not installed: no chromium, chromium-browser or google-chrome on PATH")
    result, clips = _fixture()
    page = write_report(result, tmp_path / "report.html", clips, source=_clip((0, 160, 0)))
    shot = tmp_path / "shot.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", page.as_uri()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    except subprocess.TimeoutExpired:
        pytest.skip("Chromium did not finish a screenshot within 60 s")
    if done.returncode != 0 and not shot.is_file():
        lines = done.stderr.strip().splitlines()
        pytest.skip(f"Chromium failed to start: {lines[-1] if lines else f'exit {done.returncode}'}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    common = Counter(map(tuple, pixels[::7].tolist())).most_common(1)[0][0]  # a sample is enough to find it
    differing = np.any(pixels != np.array(common), axis=1).mean()
    assert differing > 0.02, f"screenshot is nearly blank: {differing:.2%} of pixels differ from {common}"
    reddish = int(((pixels[:, 0] > 150) & (pixels[:, 1] < 100) & (pixels[:, 2] < 100)).sum())
    assert reddish >= 500, f"the red clip's GIF did not render: only {reddish} reddish pixels"
