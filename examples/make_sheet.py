"""Make ``examples/edit-sheet.png``: the bundled clip's source row above one row per edit.

It tunes exactly as the README's first Quick-start command does (``--model tiny``, 50 steps, the
clip's 8 frames at stride 2), then edits that run at ``edit``'s defaults with every kind of edit:
colour, shape, background, and two changes at once. Run from the repository root:

    python examples/make_sheet.py                     # writes examples/edit-sheet.png
    python examples/make_sheet.py --out /tmp/sheet.png --run runs/my-run   # an existing run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLIP = HERE / "red-circle.mp4"
SOURCE = "a red circle moving right on a black background"
PROMPTS = (
    "a blue circle moving right on a black background",      # colour
    "a red square moving right on a black background",       # shape
    "a red triangle moving right on a black background",     # shape
    "a red circle moving right on a white background",       # background
    "a yellow circle moving right on a gray background",     # colour + background
    "a green square moving right on a black background",     # colour + shape
)
SCALE = 2  # nearest-neighbour upscaling, so the 64-px frames can be read


def make_sheet(out: Path, run: Path | None = None) -> Path:
    from PIL import Image

    from contextedit import video
    from contextedit.commands.edit import EditOptions, edit
    from contextedit.commands.tune import TuneOptions, tune

    with tempfile.TemporaryDirectory() as scratch:
        if run is None:
            run = tune(TuneOptions(video=str(CLIP), prompt=SOURCE, model="tiny", steps=50, out=str(Path(scratch) / "run"),
                                   device="cpu")).run_dir
        result = edit(EditOptions(prompts=list(PROMPTS), run=str(run), format="frames", out=str(Path(scratch) / "edits"),
                                  device="cpu"))
        read = lambda path: video.read_video(path, frames=None, stride=1).frames  # noqa: E731  (every frame written)
        rows = [read(Path(run) / "source.mp4")] + [read(path) for path in result.files]
    sheet = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    image = Image.fromarray(sheet).resize((sheet.shape[1] * SCALE, sheet.shape[0] * SCALE), Image.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "edit-sheet.png")
    parser.add_argument("--run", type=Path, default=None, help="an existing tuned run instead of tuning one")
    args = parser.parse_args()
    print(make_sheet(args.out, args.run))
