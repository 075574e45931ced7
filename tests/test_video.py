"""Video I/O: decoding with both backends, frame selection, sizes, writers and error messages.

Test clips encode each frame's index in its content (a uniform gray level per frame), so a
selection can be checked after lossy H.264 by the nearest level.
"""

from __future__ import annotations

import sys

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from contextedit import video
from contextedit.errors import InputError, OutputExistsError, UsageError

try:
    import decord  # noqa: F401  (only whether it imports)
except ImportError:  # no decord wheel for this platform (pyproject installs it on x86-64 Linux/Windows only)
    HAVE_DECORD = False
else:
    HAVE_DECORD = True
needs_decord = pytest.mark.skipif(not HAVE_DECORD, reason="decord is not installed on this platform")
BACKENDS = [pytest.param("decord", marks=needs_decord), "imageio"]


def level(index: int) -> int:
    return 16 + 10 * index


def gray_frames(count: int, height: int, width: int) -> np.ndarray:
    """Frame i is gray ``level(i)`` with a white band along the top edge (orientation check)."""
    frames = np.stack([np.full((height, width, 3), level(i), np.uint8) for i in range(count)])
    frames[:, :8] = 255
    return frames


def decoded_indices(frames: np.ndarray) -> list[int]:
    """Invert ``level`` on the bottom half of each frame."""
    return [round((float(f[f.shape[0] // 2 :].mean()) - 16) / 10) for f in frames]


def noise_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def encode(frames: np.ndarray, path, fps: float = 8, codec: str = "libx264", extra: list[str] | None = None):
    """Encode with ffmpeg directly: other containers, and short keyframe intervals that make decoders seek."""
    writer = imageio_ffmpeg.write_frames(
        str(path), frames.shape[2:0:-1], fps=fps, codec=codec, macro_block_size=1, quality=None,
        output_params=extra or [], ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    return path


# ---------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("width,height", [(96, 64), (64, 96)])
def test_read_selects_frames_by_index(tmp_path, backend, width, height):
    path = video.write_video(gray_frames(20, height, width), tmp_path / "clip.mp4", fps=8)
    clip = video.read_video(path, frames=4, stride=3, start=2, backend=backend)
    assert clip.frames.shape == (4, height, width, 3) and clip.frames.dtype == np.uint8
    assert decoded_indices(clip.frames) == clip.indices == [2, 5, 8, 11]
    assert clip.frames[:, :4].mean() > 240  # the band stays on top: not transposed
    assert clip.fps == pytest.approx(8) and clip.total_frames == 20 and clip.path == str(path)


@needs_decord
def test_decord_and_imageio_give_identical_frames(tmp_path):
    path = encode(noise_frames(12, 48, 80), tmp_path / "noise.mp4", extra=["-g", "4", "-crf", "18"])
    for selection in [dict(frames=12, stride=1), dict(frames=3, stride=3, start=2)]:
        a = video.read_video(path, backend="decord", **selection)
        b = video.read_video(path, backend="imageio", **selection)
        np.testing.assert_array_equal(a.frames, b.frames)
        assert (a.fps, a.total_frames, a.indices) == (b.fps, b.total_frames, b.indices)
    assert video.probe(path, "decord")[:4] == video.probe(path, "imageio")[:4] == (12, 8.0, 80, 48)


def test_auto_falls_back_to_imageio_without_decord(tmp_path, monkeypatch):
    path = video.write_video(gray_frames(6, 64, 96), tmp_path / "clip.mp4", fps=8)
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord → ImportError
    clip = video.read_video(path, frames=3, stride=2)
    assert decoded_indices(clip.frames) == [0, 2, 4]
    with pytest.raises(InputError, match="decord is not installed"):
        video.read_video(path, backend="decord")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix,codec", [(".mov", "libx264"), (".avi", "mpeg4"), (".webm", "libvpx")])
def test_reads_other_containers(tmp_path, suffix, codec, backend):
    quality = ["-q:v", "2"] if codec == "mpeg4" else []
    path = encode(gray_frames(6, 64, 96), tmp_path / f"clip{suffix}", codec=codec, extra=quality)
    clip = video.read_video(path, frames=3, stride=2, backend=backend)
    assert clip.frames.shape == (3, 64, 96, 3) and decoded_indices(clip.frames) == [0, 2, 4]


def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(["frame1.png", "frame2.jpg", "frame10.png", "frame11.PNG"]):
        Image.fromarray(gray_frames(i + 1, 32, 48)[-1]).save(folder / name, quality=95)
    (folder / "notes.txt").write_text("not a frame")
    clip = video.read_video(folder, frames=4, stride=1)
    assert decoded_indices(clip.frames) == [0, 1, 2, 3]  # frame2 before frame10
    assert clip.fps == video.DEFAULT_FPS and clip.total_frames == 4


def test_frame_folder_without_frames(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image frames .* in folder .*empty"):
        video.read_video(tmp_path / "empty")


def test_frame_folder_with_bad_fps(tmp_path):
    out = video.write_video(noise_frames(2, 16, 16), tmp_path / "frames", fps=8)
    (out / video.FOLDER_META).write_text('{"fps": "fast"}')
    with pytest.raises(InputError, match="clip.json has no valid fps"):
        video.read_video(out, frames=2, stride=1)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_missing_and_undecodable_files(tmp_path, backend):
    with pytest.raises(InputError, match="video not found: .*nope.mp4"):
        video.read_video(tmp_path / "nope.mp4", backend=backend)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    truncated = tmp_path / "truncated.mp4"
    whole = video.write_video(noise_frames(8, 64, 64), tmp_path / "whole.mp4", fps=8).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    for bad in (text, empty, truncated):
        with pytest.raises(InputError, match=f"cannot decode {bad}"):
            video.read_video(bad, frames=8, stride=1, backend=backend)


def test_too_few_frames_says_how_many(tmp_path):
    path = video.write_video(gray_frames(10, 64, 64), tmp_path / "short.mp4", fps=8)
    with pytest.raises(InputError, match=r"short.mp4 has 10 frames .* needs 15; try `frames` 5 or `stride` 1"):
        video.read_video(path, frames=8, stride=2)
    with pytest.raises(InputError, match=r"needs 12; try `start` 0 or `frames` 3 or `stride` 2"):
        video.read_video(path, frames=4, stride=3, start=2)


@pytest.mark.parametrize("option", [dict(frames=0), dict(stride=0), dict(start=-1)])
def test_selection_options_must_be_positive(option):
    with pytest.raises(UsageError, match=f"`{next(iter(option))}` must be"):
        video.select_indices(100, **option)


def test_select_indices():
    assert video.select_indices(15, frames=8, stride=2) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert video.select_indices(5, frames=2, stride=1, start=3) == [3, 4]


# ---------------------------------------------------------------------------------------------- sizes


def test_parse_size():
    assert video.parse_size("512x320") == (512, 320)
    assert video.parse_size(" 64X96 ") == (64, 96)
    for bad, message in [
        ("abc", "invalid size"),
        ("512", "invalid size"),
        ("500x320", "not a multiple of 8.*504x320"),
        ("0x64", "out of range"),
        ("8192x64", "out of range"),
    ]:
        with pytest.raises(UsageError, match=message):
            video.parse_size(bad)


def test_default_size_keeps_aspect():
    assert video.default_size(1920, 1080, 512) == (912, 512)
    assert video.default_size(1080, 1920, 512) == (512, 912)
    assert video.default_size(96, 64, 64) == (96, 64)
    assert video.default_size(64, 64, 512) == (512, 512)
    with pytest.raises(UsageError, match="smaller `size`"):
        video.default_size(10000, 100, 512)


def test_resize_crop_covers_then_crops_centre():
    # columns hold their x coordinate: a centre crop keeps the middle columns
    source = np.broadcast_to(np.arange(128, dtype=np.uint8)[None, None, :, None] * 2, (2, 64, 128, 3)).copy()
    out = video.resize_crop(source, 32, 32)  # scale 0.5 → 64x32, crop x 16..48 ≈ source x 32..96
    assert out.shape == (2, 32, 32, 3)
    assert abs(int(out[0, 16, 0, 0]) - 2 * 33) <= 4 and abs(int(out[0, 16, -1, 0]) - 2 * 94) <= 4
    assert video.resize_crop(source, 40, 64).shape == (2, 64, 40, 3)
    assert video.resize_crop(source, 256, 72).shape == (2, 72, 256, 3)
    assert video.resize_crop(source, 128, 64) is source


def test_read_then_resize(tmp_path):
    path = video.write_video(gray_frames(4, 64, 96), tmp_path / "clip.mp4", fps=8)
    clip = video.read_video(path, frames=2)
    assert video.resize_crop(clip.frames, 48, 40).shape == (2, 40, 48, 3)
    size = video.default_size(clip.width, clip.height, 32)
    assert video.resize_crop(clip.frames, *size).shape == (2, 32, 48, 3)


def test_tensor_round_trip():
    frames = noise_frames(3, 16, 24)
    x = video.to_tensor(frames)
    assert x.shape == (3, 3, 16, 24) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(video.to_frames(x), frames)
    assert video.to_frames(torch.full((1, 3, 2, 2), 5.0)).max() == 255


# ---------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "out_frames"])
def test_write_read_round_trip(tmp_path, name):
    frames = gray_frames(8, 40, 72)
    frames[3] = frames[2]  # a repeated frame must stay a frame (Pillow's GIF writer merges them)
    path = video.write_video(frames, tmp_path / name, fps=8)
    clip = video.read_video(path, frames=8, stride=1)
    assert clip.frames.shape == frames.shape and clip.total_frames == 8
    assert clip.fps == pytest.approx(8, rel=0.02)  # GIF delays are whole 1/100 s
    assert np.abs(clip.frames.astype(int) - frames).mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp files left behind


def test_mp4_round_trip_is_close_on_texture(tmp_path):
    # smooth colour waves, like real footage (fast colour changes would only measure 4:2:0 chroma loss)
    y, x = np.mgrid[0:64, 0:64] / 64
    waves = [np.sin(2 * np.pi * (x + y + t / 4) + c) for t in range(4) for c in range(3)]
    frames = (127 + 100 * np.stack(waves).reshape(4, 3, 64, 64).transpose(0, 2, 3, 1)).astype(np.uint8)
    path = video.write_video(frames, tmp_path / "tex.mp4", fps=12.5)
    clip = video.read_video(path, frames=4, stride=1)
    assert clip.fps == pytest.approx(12.5)
    assert np.abs(clip.frames.astype(int) - frames).mean() < 3


def test_write_mp4_sizes(tmp_path):
    with pytest.raises(UsageError, match="even sizes"):
        video.write_video(noise_frames(2, 33, 64), tmp_path / "odd.mp4", fps=8)
    assert not list(tmp_path.iterdir())
    with pytest.raises(UsageError, match="cannot write"):
        video.write_video(noise_frames(2, 32, 32), tmp_path / "clip.avi", fps=8)


def test_frame_folder_overwrite_policy(tmp_path):
    out = tmp_path / "frames"
    video.write_video(noise_frames(3, 16, 16), out, fps=8)
    video.write_video(noise_frames(2, 16, 16), out, fps=4)  # replaces its own earlier output
    assert video.probe(out)[:4] == (2, 4.0, 16, 16)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="photos exists"):
        video.write_video(noise_frames(2, 16, 16), other, fps=8)
    assert (other / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "photos"]


def test_side_by_side():
    a, b, c = noise_frames(3, 16, 24), noise_frames(3, 16, 8, seed=1), noise_frames(3, 16, 24, seed=2)
    grid = video.side_by_side(a, b, c)
    assert grid.shape == (3, 16, 56, 3)
    np.testing.assert_array_equal(grid[:, :, 24:32], b)
    with pytest.raises(UsageError, match="one frame count and height"):
        video.side_by_side(a, noise_frames(2, 16, 24))


def test_sample_clip_matches_its_script():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    sys.path.insert(0, str(root))
    try:
        import make_sample
    finally:
        sys.path.remove(str(root))
    clip = video.read_video(root / "red-circle.mp4", frames=16, stride=1)
    assert clip.frames.shape == (16, 64, 64, 3) and clip.fps == 8
    assert np.abs(clip.frames.astype(int) - make_sample.make_frames()).mean() < 3
