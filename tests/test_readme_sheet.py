"""The README's sheet command reproduces the README's picture (issue 27): ``python
examples/make_sheet.py`` tunes as the first Quick-start command does and edits every kind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contextedit.testing import shapes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TILE = 64 * 2  # make_sheet's frames, upscaled ×2


def _rows(path: Path) -> np.ndarray:
    sheet = np.asarray(Image.open(path).convert("RGB"))[::2, ::2]
    return sheet.reshape(sheet.shape[0] // 64, 64, sheet.shape[1] // 64, 64, 3).transpose(0, 2, 1, 3, 4)


@pytest.mark.slow
def test_the_sheet_command_reproduces_the_readme_picture(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTEXTEDIT_RUNS", str(tmp_path / "runs"))
    spec = importlib.util.spec_from_file_location("make_sheet", EXAMPLES / "make_sheet.py")
    make_sheet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sheet)
    made, shipped = _rows(make_sheet.make_sheet(tmp_path / "sheet.png")), _rows(EXAMPLES / "edit-sheet.png")
    assert made.shape == shipped.shape == (1 + len(make_sheet.PROMPTS), 8, 64, 64, 3)
    # what the oracle reads in every frame is the same, and the pixels agree to within rounding noise
    # (another CPU's float32 sums differ in the last bits; the decoded uint8 may move by a level)
    for row_made, row_shipped in zip(made, shipped):
        for a, b in zip(row_made, row_shipped):
            ra, rb = shapes.oracle(a), shapes.oracle(b)
            assert (ra["colour"], ra["shape"], ra["background"]) == (rb["colour"], rb["shape"], rb["background"])
    assert np.abs(made.astype(int) - shipped.astype(int)).mean() <= 1.0
