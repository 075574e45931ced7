"""Make ``examples/red-circle.mp4``: a tiny deterministic clip for demos and smoke tests.

64x64 RGB, black background, a red (220, 40, 40) filled circle of diameter 20 px that moves
right by 2 px per frame, 16 frames at 8 fps, H.264. Run: ``python examples/make_sample.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contextedit.video import write_video

FPS = 8


def make_frames() -> np.ndarray:
    """The shapes world's red circle, touching the left edge, vertically centred, moving right
    (the web UI makes the same clip when it has no examples folder: ``contextedit.ui.jobs.sample_frames``)."""
    from contextedit.ui.jobs import sample_frames

    return sample_frames()


if __name__ == "__main__":
    out = write_video(make_frames(), Path(__file__).with_name("red-circle.mp4"), fps=FPS)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
