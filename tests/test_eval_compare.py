"""What eval compares (issue 29, items 2 and 6): the edit half of an ``edit --side-by-side`` output,
never source | edit against a stretched source; and, when the clip and the source differ in length
or aspect, the frames actually compared and a note saying so, in the table and in the JSON.

Every score is checked against PSNR computed here with numpy on the frames that should be compared."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.testing import shapes
from contextedit.video import read_video, side_by_side, write_video

PROMPT = "a green circle moving right on a black background"
SOURCE_PROMPT = "a red circle moving right on a black background"


def moving_clip(colour: str, frames: int) -> np.ndarray:
    return shapes.make_clip("circle", colour, "black", "right", start=(20, 30), frames=frames)[0]


def reference_psnr(edit: np.ndarray, source: np.ndarray) -> float:
    """Mean over frames of 10·log10(255² / MSE), written out here (no frame is identical: no cap)."""
    mse = ((edit.astype(np.float64) - source.astype(np.float64)) ** 2).reshape(len(edit), -1).mean(axis=1)
    assert (mse > 0).all()
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def edit_folder(folder, pixels: np.ndarray, name: str, fmt: str, side: bool, width: int = 64, height: int = 64,
                fps: float = 8.0) -> None:
    """An ``edit`` output folder: the output and the ``edits.json`` record as ``contextedit edit`` writes it."""
    folder.mkdir(parents=True)
    write_video(pixels, folder / name, fps, fmt=fmt)
    record = {
        "run": str(folder.parent / "run"), "model": "tiny-random", "source_prompt": SOURCE_PROMPT,
        "settings": {"steps": 3, "format": fmt, "side_by_side": side, "mask": None, "adapter": True},
        "frames": len(pixels), "width": width, "height": height, "fps": fps,
        "outputs": [{"prompt": PROMPT, "file": name, "sampling_s": 0.1, "guidance": 3.0}],
    }
    (folder / "edits.json").write_text(json.dumps(record))


def run_eval(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["eval", *map(str, args), "--device", "cpu", "--quiet"])
    return result.exit_code, result.stdout, result.stderr


def flat(text: str) -> str:
    """The table's text with its wrapping undone (a note may be folded over caption lines)."""
    return " ".join(text.split())


@pytest.fixture()
def clips(tmp_path):
    source, edit = moving_clip("red", 6), moving_clip("green", 6)
    write_video(source, tmp_path / "source", fps=8)  # a frame folder: lossless
    return source, edit


@pytest.mark.parametrize("given", ["folder", "file"])
def test_a_side_by_side_output_is_scored_on_its_edit_half(tmp_path, clips, given):
    source, edit = clips
    pixels = side_by_side(source, edit)
    assert pixels.shape == (6, 64, 128, 3)
    edit_folder(tmp_path / "edits", pixels, "a_green_circle", "frames", side=True)
    target = tmp_path / "edits" if given == "folder" else tmp_path / "edits" / "a_green_circle"
    code, out, err = run_eval(target, "--source", tmp_path / "source", "--metrics", "psnr,oracle",
                              "--json", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert row["psnr"] == pytest.approx(reference_psnr(edit, source), abs=1e-9)
    assert row["oracle_colour"] == 1.0 and row["oracle_success"] == 1.0  # the green half only
    assert row["cropped"] == "edit half of side-by-side"
    assert any("edit half" in note and "64 of 128" in note for note in row["notes"])
    assert row["frames"] == 6 and row["compared_frames"] == {"psnr": 6, "oracle": 6}
    assert "edit half of a side-by-side output" in flat(out)


def test_a_side_by_side_mp4_is_scored_on_its_edit_half(tmp_path, clips):
    source, edit = clips
    edit_folder(tmp_path / "edits", side_by_side(source, edit), "a_green_circle.mp4", "mp4", side=True)
    code, _, err = run_eval(tmp_path / "edits", "--source", tmp_path / "source", "--metrics", "psnr", "--json", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    decoded = read_video(tmp_path / "edits" / "a_green_circle.mp4", frames=6, stride=1).frames
    assert row["psnr"] == pytest.approx(reference_psnr(decoded[:, :, 64:], source), abs=1e-9)
    # H.264 at CRF 12 moves the score a little; the whole frame would be far off (about 12 dB lower)
    exact = reference_psnr(edit, source)
    assert row["psnr"] == pytest.approx(exact, abs=0.5)
    assert reference_psnr(np.stack([np.asarray(Image.fromarray(f).resize((64, 64), Image.BICUBIC)) for f in decoded]),
                          source) < exact - 1  # what stretching source | edit would have scored


@pytest.mark.parametrize("record", [{"width": 50}, {"width": None}, {"height": 32}])
def test_a_side_by_side_output_whose_layout_is_unknown_is_refused(tmp_path, clips, record):
    source, edit = clips
    edit_folder(tmp_path / "edits", side_by_side(source, edit), "a_green_circle", "frames", side=True)
    manifest = tmp_path / "edits" / "edits.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **record}))
    code, out, err = run_eval(tmp_path / "edits", "--source", tmp_path / "source", "--metrics", "psnr", "--json", tmp_path / "r.json")
    assert code == 2
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert "side-by-side" in err and "without --side-by-side" in err and "edit half cannot be found" in err
    assert not (tmp_path / "r.json").exists()


def test_a_plain_output_of_an_edit_folder_is_scored_whole(tmp_path, clips):
    source, edit = clips
    edit_folder(tmp_path / "edits", edit, "a_green_circle", "frames", side=False)
    code, _, err = run_eval(tmp_path / "edits", "--source", tmp_path / "source", "--metrics", "psnr", "--json", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert row["psnr"] == pytest.approx(reference_psnr(edit, source), abs=1e-9)
    assert "cropped" not in row and row["notes"] == []


def test_a_longer_clip_reports_the_frames_compared_with_a_shorter_source(tmp_path):
    source, edit = moving_clip("red", 4), moving_clip("green", 12)
    write_video(source, tmp_path / "source", fps=8)
    write_video(edit, tmp_path / "long", fps=8)
    code, out, err = run_eval(tmp_path / "long", "--source", tmp_path / "source", "--prompt", PROMPT,
                              "--metrics", "psnr,oracle", "--json", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert row["frames"] == 12 and row["source_frames"] == 4
    assert row["compared_frames"] == {"psnr": 4, "oracle": 4} and len(row["per_frame"]["psnr"]) == 4
    assert row["psnr"] == pytest.approx(reference_psnr(edit[:4], source), abs=1e-9)
    assert row["notes"] == ["compared 4 of 12 frames: the source has 4"]
    table = flat(out)
    assert "compared" in table and "long: compared 4 of 12 frames: the source has 4" in table


def test_a_shorter_clip_says_it_met_only_the_start_of_the_source(tmp_path):
    source, edit = moving_clip("red", 10), moving_clip("green", 3)
    write_video(source, tmp_path / "source", fps=8)
    write_video(edit, tmp_path / "short", fps=8)
    code, out, err = run_eval(tmp_path / "short", "--source", tmp_path / "source", "--metrics", "psnr,flow,warp",
                              "--json", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert row["frames"] == 3 and row["source_frames"] == 10
    assert row["compared_frames"] == {"flow": 3, "warp": 3, "psnr": 3} and len(row["per_frame"]["flow_epe"]) == 2
    assert row["psnr"] == pytest.approx(reference_psnr(edit, source[:3]), abs=1e-9)
    assert row["notes"] == ["compared 3 frames with the first 3 of the source's 10"]
    assert "the first 3 of the source's 10" in flat(out)


def test_another_aspect_than_the_source_is_noted_and_another_size_alone_is_not(tmp_path):
    source = moving_clip("red", 4)
    write_video(source, tmp_path / "source", fps=8)
    wide = np.concatenate([moving_clip("green", 4)] * 2, axis=2)  # 128x64: aspect 2
    write_video(wide, tmp_path / "wide", fps=8)
    big = np.stack([np.asarray(Image.fromarray(f).resize((128, 128), Image.NEAREST)) for f in moving_clip("green", 4)])
    write_video(big, tmp_path / "big", fps=8)  # 128x128: the source's aspect
    code, out, err = run_eval(tmp_path / "wide", tmp_path / "big", "--source", tmp_path / "source", "--metrics", "psnr",
                              "--json", tmp_path / "r.json")
    assert code == 0, err
    wide_row, big_row = json.loads((tmp_path / "r.json").read_text())["results"]
    note = "aspect 2.00 (128x64) vs source 1.00 (64x64): source resized to 128x64, stretched"
    assert wide_row["notes"] == [note] and big_row["notes"] == []
    assert wide_row["compared_frames"] == {"psnr": 4}
    stretched = np.stack([np.asarray(Image.fromarray(f).resize((128, 64), Image.BICUBIC)) for f in source])
    assert wide_row["psnr"] == pytest.approx(reference_psnr(wide, stretched), abs=1e-9)
    assert f"wide: {note}" in flat(out)


def test_without_a_source_no_comparison_is_reported(tmp_path):
    write_video(moving_clip("green", 4), tmp_path / "clip", fps=8)
    code, out, err = run_eval(tmp_path / "clip", "--prompt", PROMPT, "--metrics", "oracle", "--json", tmp_path / "r.json")
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert "compared_frames" not in row and "source_frames" not in row and row["notes"] == []
    assert "compared" not in flat(out)
