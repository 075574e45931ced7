"""Make ``examples/red-circle.mp4``: a tiny deterministic clip for demos and smoke tests.

64x64 RGB, black background, a red (220, 40, 40) filled circle of diameter 20 px that moves
right by 2 px per frame, 16 frames at 8 fps, H.264. Run: ``python examples/make_sample.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contextedit.video import write_video

SIZE, FRAMES, FPS = 64, 16, 8
DIAMETER, STEP = 20, 2
RED = (220, 40, 40)


def circle_frame(centre_x: float, centre_y: float) -> np.ndarray:
    """One frame: the circle's pixels are those whose centres lie within the radius."""
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    frame[(xs - centre_x) ** 2 + (ys - centre_y) ** 2 <= (DIAMETER / 2) ** 2] = RED
    return frame


def make_frames() -> np.ndarray:
    """The circle starts touching the left edge, vertically centred."""
    return np.stack([circle_frame(DIAMETER / 2 + STEP * i, SIZE / 2) for i in range(FRAMES)])


if __name__ == "__main__":
    out = write_video(make_frames(), Path(__file__).with_name("red-circle.mp4"), fps=FPS)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
