"""Optical-flow metrics (flow_epe, warp_error) on synthetic clips with known motion, and RAFT loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contextedit.errors import InputError, UsageError
from contextedit.metrics.flow import FLOW_METHODS, clip_flows, flow_epe, load_flow, warp_error
from contextedit.testing.shapes import make_clip


def texture(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth, periodic RGB texture (sums of low-frequency cosines): np.roll moves it without a seam."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    out = np.zeros((size, size, 3))
    for c in range(3):
        for _ in range(12):
            fy, fx = rng.integers(-6, 7, 2)
            out[..., c] += np.cos(2 * np.pi * (fy * ys + fx * xs) + rng.random() * 2 * np.pi)
    out = (out - out.min()) / (out.max() - out.min())
    return (out * 255).round().astype(np.uint8)


def translating(frames: int = 6, step: int = 3, size: int = 96) -> np.ndarray:
    """The texture moving ``step`` px right per frame."""
    image = texture(size)
    return np.stack([np.roll(image, step * t, axis=1) for t in range(frames)])


@pytest.fixture(scope="module")
def farneback():
    return load_flow("farneback")


def test_farneback_recovers_a_translation(farneback):
    flows = clip_flows(translating(), farneback)
    assert flows.shape == (5, 96, 96, 2) and flows.dtype == np.float32
    interior = flows[:, 16:-16, 16:-16].reshape(-1, 2).mean(0)
    assert interior == pytest.approx([3.0, 0.0], abs=0.5)
    assert farneback.name == "farneback"


def test_flow_epe_of_a_clip_with_itself_is_zero(farneback):
    clip, _ = make_clip("circle", "red", "gray", "right")
    mean, per_pair = flow_epe(clip, clip, farneback)
    assert mean == 0.0 and per_pair == [0.0] * (len(clip) - 1)
    mean, _ = flow_epe(translating(), translating(), farneback)
    assert mean == 0.0


def test_flow_epe_sees_doubled_motion(farneback):
    clip = translating(frames=12, step=2)
    doubled = clip[::2]  # 4 px per frame against the source's 2
    mean, per_pair = flow_epe(doubled, clip, farneback)
    assert len(per_pair) == 5
    assert mean > 1.0 and mean > flow_epe(clip[:6], clip, farneback)[0] + 1.0

    shapes, _ = make_clip("square", "blue", "white", "down", frames=16)
    mean, _ = flow_epe(shapes[::2], shapes[:8], farneback)
    assert mean > 0.1


def test_warp_error(farneback):
    clip = translating()
    own, per_pair = warp_error(clip, clip, farneback)
    assert len(per_pair) == 5 and own < 1e-4  # MSE on [0, 1] pixels: ~4e-6 measured

    noise = np.random.default_rng(1).integers(0, 256, clip.shape, dtype=np.uint8)
    assert warp_error(noise, clip, farneback)[0] > 1000 * own
    assert warp_error(clip[::-1], clip, farneback)[0] > 100 * own  # moving against the source's flow

    static = np.repeat(texture()[None], 4, axis=0)
    assert warp_error(static, static, farneback) == (0.0, [0.0, 0.0, 0.0])


def test_size_and_length_mismatch(farneback):
    clip = translating(frames=6, step=2, size=96)
    small = np.stack([np.ascontiguousarray(f[::3, ::3]) for f in clip])  # 32x32: resized up to the edit's size
    mean, per_pair = flow_epe(clip[:4], small, farneback)
    assert len(per_pair) == 3 and np.isfinite(mean)
    mean, per_pair = warp_error(clip, small[:3], farneback)
    assert len(per_pair) == 2 and np.isfinite(mean)
    # The edit's size wins: a half-size edit of a full-size clip is compared at 48x48.
    half = clip[:, ::2, ::2].copy()
    assert flow_epe(half, clip, farneback)[0] < 0.5


def test_fewer_than_two_frames(farneback):
    clip = translating()
    assert flow_epe(clip[:1], clip, farneback) == (None, [])
    assert warp_error(clip, clip[:1], farneback) == (None, [])
    assert clip_flows(clip[:1], farneback).shape == (0, 96, 96, 2)


def test_bad_options_and_input(tmp_path, farneback):
    assert FLOW_METHODS == ("farneback", "raft")
    with pytest.raises(UsageError, match="`flow`"):
        load_flow("pwc")
    with pytest.raises(UsageError, match="`flow_model`"):
        load_flow("farneback", tmp_path / "raft.safetensors")
    with pytest.raises(UsageError, match="`flow_model` FILE"):
        load_flow("raft")
    for name in ("raft_large.pth", "raft.pt", "raft.bin"):
        with pytest.raises(UsageError, match="not a .safetensors file.*README"):
            load_flow("raft", tmp_path / name)
    with pytest.raises(InputError, match="uint8"):
        flow_epe(np.zeros((3, 8, 8, 3), np.float32), np.zeros((3, 8, 8, 3), np.uint8), farneback)


def _torchvision_raft():
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception as exc:  # this repository's CPU torch cannot load the PyPI torchvision wheel
        pytest.skip(f"torchvision does not import: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
    return raft_large, raft_small


def test_raft_without_torchvision_says_so(tmp_path):
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(UsageError, match="RAFT needs torchvision"):
            load_flow("raft", tmp_path / "raft_small.safetensors")
    else:
        pytest.skip("torchvision imports here")


def test_raft_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    _, raft_small = _torchvision_raft()
    torch.manual_seed(0)
    file = tmp_path / "raft_small.safetensors"
    save_file({k: v.contiguous() for k, v in raft_small(weights=None, progress=False).state_dict().items()}, str(file))
    estimator = load_flow("raft", file)
    assert estimator.name == "raft_small:raft_small.safetensors"

    clip = translating(frames=4, step=2, size=60)  # not a multiple of 8: padded, and the flow cropped back
    flows = clip_flows(clip, estimator)
    assert flows.shape == (3, 60, 60, 2) and flows.dtype == np.float32 and np.isfinite(flows).all()
    assert flow_epe(clip, clip, estimator) == (0.0, [0.0, 0.0, 0.0])
    assert warp_error(clip, clip, estimator)[0] is not None

    wrong = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(InputError, match="raft_large or raft_small"):
        load_flow("raft", wrong)
