"""The shapes world: generator geometry, captions, and the pixel oracle on generated frames."""

import itertools
import re

import numpy as np
import pytest

from contextedit.testing import shapes

COMBOS = list(itertools.product(shapes.SHAPES, shapes.COLOURS, shapes.BACKGROUNDS))


def test_world_constants_match_the_spec():
    assert shapes.BACKGROUNDS == {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
    assert shapes.COLOURS == {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
    assert set(shapes.DIRECTIONS) == {"left", "right", "up", "down"}
    assert len(COMBOS) == 36


def test_shape_sizes():
    square = shapes.shape_mask("square", (32, 32))
    circle = shapes.shape_mask("circle", (32, 32))
    triangle = shapes.shape_mask("triangle", (32, 32))
    assert square.sum() == 20 * 20
    assert np.nonzero(circle.any(0))[0].size == 20 and np.nonzero(circle.any(1))[0].size == 20
    # Point up: the top row of the triangle is narrower than its bottom row.
    rows = np.nonzero(triangle.any(1))[0]
    assert triangle[rows[0]].sum() < triangle[rows[-1]].sum()
    assert np.nonzero(triangle.any(0))[0].size in (21, 22)


@pytest.mark.parametrize("shape", shapes.SHAPES)
@pytest.mark.parametrize("direction", list(shapes.DIRECTIONS))
def test_object_stays_inside_for_16_frames_from_every_start(shape, direction):
    xs, ys = shapes.start_range(shape, direction)
    full_area = shapes.shape_mask(shape, (32, 32)).sum()
    # The extreme starts are the hardest cases; every start in between lies between them.
    for start in itertools.product((xs[0], xs[-1]), (ys[0], ys[-1])):
        clip, _ = shapes.make_clip(shape, "red", "black", direction, start=start)
        assert clip.shape == (16, 64, 64, 3) and clip.dtype == np.uint8
        drawn = clip.any(-1)
        assert (drawn.sum((1, 2)) == full_area).all()
        border = np.concatenate([drawn[:, 0], drawn[:, -1], drawn[:, :, 0], drawn[:, :, -1]], axis=1)
        assert not border.any()


def test_random_start_is_deterministic_with_a_seed():
    spec = shapes.random_spec(np.random.default_rng(3))
    a, cap_a = shapes.make_clip(**spec, rng=np.random.default_rng(7))
    b, cap_b = shapes.make_clip(**spec, rng=np.random.default_rng(7))
    assert cap_a == cap_b and np.array_equal(a, b)
    assert spec == shapes.random_spec(np.random.default_rng(3))


def test_captions_have_the_exact_format():
    _, caption = shapes.make_clip("triangle", "yellow", "gray", "up")
    assert caption == "a yellow triangle moving up on a gray background"
    _, caption = shapes.make_image("circle", "blue", "white")
    assert caption == "a blue circle on a white background"
    pattern = r"a (red|green|blue|yellow) (circle|square|triangle) moving (left|right|up|down) on a (black|white|gray) background"
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, caption = shapes.make_clip(**shapes.random_spec(rng), frames=2, rng=rng)
        assert re.fullmatch(pattern, caption)


@pytest.mark.parametrize("shape,colour,background", COMBOS)
def test_oracle_recovers_every_combination(shape, colour, background):
    image, _ = shapes.make_image(shape, colour, background, center=(30, 34))
    reading = shapes.oracle(image)
    assert (reading["shape"], reading["colour"], reading["background"]) == (shape, colour, background)
    assert reading["area"] == shapes.shape_mask(shape, (30, 34)).sum()
    # Exact for the symmetric shapes; a rasterised triangle's centroid is within a quarter pixel.
    tolerance = 0.25 if shape == "triangle" else 1e-9
    assert np.allclose(reading["centroid"], (30, 34), atol=tolerance)


@pytest.mark.parametrize("direction", list(shapes.DIRECTIONS))
def test_oracle_centroid_moves_2px_per_frame(direction):
    clip, _ = shapes.make_clip("triangle", "green", "white", direction, rng=np.random.default_rng(1))
    centroids = np.array([r["centroid"] for r in shapes.oracle_clip(clip)])
    steps = np.diff(centroids, axis=0)
    assert np.allclose(steps, 2 * np.array(shapes.DIRECTIONS[direction]))


def test_oracle_on_an_empty_frame_finds_no_object():
    reading = shapes.oracle(np.full((64, 64, 3), 128, np.uint8))
    assert reading["background"] == "gray" and reading["area"] == 0 and reading["shape"] is None


def test_oracle_tolerates_mild_noise():
    image, _ = shapes.make_image("circle", "yellow", "black", center=(20, 40))
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 12, image.shape), 0, 255)
    reading = shapes.oracle(noisy)
    assert (reading["shape"], reading["colour"], reading["background"]) == ("circle", "yellow", "black")


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown colour"):
        shapes.render_frame("circle", "purple", "black", (32, 32))
    with pytest.raises(ValueError, match="unknown direction"):
        shapes.make_clip("circle", "red", "black", "sideways")


def _blur(image: np.ndarray, passes: int) -> np.ndarray:
    """Repeated 3x3 box blur (edges replicated), a stand-in for a VAE decoder's softness."""
    out = image.astype(np.float32)
    for _ in range(passes):
        padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = sum(padded[i:i + 64, j:j + 64] for i in range(3) for j in range(3)) / 9
    return out


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_oracle_reads_blurred_shapes(shape):
    image, _ = shapes.make_image(shape, "blue", "gray", center=(32, 32))
    assert shapes.oracle(_blur(image, 3))["shape"] == shape


def test_oracle_ignores_specks_of_a_few_pixels_but_not_a_blob():
    """A decoded frame's one-pixel corner of another class moved a square's box to the frame's
    corner (read as a triangle); a blob over SPECK_PX pixels is still part of what is read."""
    image, _ = shapes.make_image("square", "blue", "white", center=(28, 28))
    square = shapes.shape_mask("square", (28, 28))
    specked = image.copy()
    specked[63, 63] = specked[0, 63] = shapes.PALETTE[shapes.PALETTE_NAMES.index("gray")]
    reading = shapes.oracle(specked)
    assert (reading["shape"], reading["area"]) == ("square", square.sum())
    assert np.array_equal(reading["mask"], square)
    blob = image.copy()
    blob[58:62, 58:62] = shapes.PALETTE[shapes.PALETTE_NAMES.index("red")]  # 16 px > SPECK_PX
    assert shapes.oracle(blob)["area"] == square.sum() + 16


def test_a_background_edit_counts_only_frames_that_keep_the_object():
    """Four frames of a red circle on black, edited to white: right where the circle is kept; a frame
    whose circle was repainted green is wrong, and a smudge the reading lets through lowers ``background_flat``."""
    spec = dict(shape="circle", colour="red", direction="right", start=(20, 30), frames=4)
    source, _ = shapes.make_clip(background="black", **spec)
    edited, _ = shapes.make_clip(background="white", **spec)
    repainted, _ = shapes.make_clip(background="white", **{**spec, "colour": "green"})
    edited[2:] = repainted[2:]                                  # frames 2 and 3: the object repainted
    edited[1, :8, :8] = (215, 215, 215)                         # frame 1: a faint gray smudge in a corner
    target = {"shape": "circle", "colour": "red", "background": "white"}
    s = shapes.score_edit(source, edited, "background", target)
    assert s["object_kept"] == 0.5 and s["frames_right"] == 0.5 and s["success"] is False
    # off the circle's path (its masks grown by 2 px) every pixel is white but the smudge's 64
    path = shapes.grow_mask(np.any([r["mask"] for r in shapes.oracle_clip(source)], axis=0), 2)
    assert s["background_flat"] == pytest.approx(1 - 64 / (4 * (~path).sum()), abs=1e-12)
    edited[2:] = shapes.make_clip(background="white", **spec)[0][2:]
    assert shapes.score_edit(source, edited, "background", target)["success"] is True
