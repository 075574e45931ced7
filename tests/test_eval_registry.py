"""Metrics are records (issue 30): a new metric is one :class:`Metric` plus one registration line, and
``evaluate`` / ``contextedit eval --metrics`` take it at once, with its scale, per-frame series,
mean and table column; a backbone loads once for all clips, shared by the metrics that name it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.errors import UsageError
from contextedit.metrics import METRICS, Metric, evaluate, register, unregister
from contextedit.testing import shapes
from contextedit.video import write_video

PROMPT = "a green circle moving right on a black background"


def brightness(item, backbone, ctx) -> dict:
    """The worked example of docs/extending.md: mean brightness on [0, 1], per frame and over the clip."""
    per_frame = item.frames.reshape(len(item.frames), -1).mean(axis=1) / 255.0
    return {"brightness": float(per_frame.mean()), "per_frame": {"brightness": per_frame.tolist()}}


BRIGHTNESS = Metric("brightness", ("brightness",), scales={"brightness": "mean pixel value on [0, 1], mean over frames"},
                    columns={"brightness": "bright"}, score=brightness, per_frame=("brightness",))


@pytest.fixture
def toy():
    register(BRIGHTNESS)
    yield BRIGHTNESS
    unregister(BRIGHTNESS.name)


def clip(colour: str, frames: int, background: str = "black") -> np.ndarray:
    return shapes.make_clip("circle", colour, background, "right", start=(20, 30), frames=frames)[0]


def by_hand(frames: np.ndarray) -> list[float]:
    return [float(np.mean(frame.astype(np.float64))) / 255.0 for frame in frames]


def test_a_registered_metric_is_scored_by_evaluate(tmp_path, toy):
    write_video(clip("red", 6), tmp_path / "source", fps=8)  # frame folders: lossless
    edits = {"green": clip("green", 6), "white": clip("blue", 4, "white")}
    for name, frames in edits.items():
        write_video(frames, tmp_path / name, fps=8)
    result = evaluate([tmp_path / "green", tmp_path / "white"], metrics="psnr,brightness", source=tmp_path / "source")
    assert result["metrics"] == ["psnr", "brightness"]
    assert result["scales"]["brightness"] == "mean pixel value on [0, 1], mean over frames"
    for row, frames in zip(result["results"], edits.values()):
        assert row["per_frame"]["brightness"] == pytest.approx(by_hand(frames), abs=1e-12)
        assert row["brightness"] == pytest.approx(np.mean(by_hand(frames)), abs=1e-12)
        assert row["compared_frames"] == {"psnr": min(len(frames), 6)}  # it does not compare with the source
        assert list(row["per_frame"]) == ["psnr", "brightness"]
    assert result["mean"]["brightness"] == pytest.approx(np.mean([np.mean(by_hand(f)) for f in edits.values()]), abs=1e-12)
    assert result["models"] == {"clip": None, "pickscore": None, "dino": None, "flow": None}  # it loads nothing

    unregister(toy.name)
    try:
        with pytest.raises(UsageError, match="unknown metric brightness"):
            evaluate([tmp_path / "green"], metrics="brightness")
    finally:
        register(toy)


def test_a_registered_metric_runs_through_the_cli(tmp_path, toy):
    frames = clip("green", 5)
    write_video(frames, tmp_path / "green", fps=8)
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "green"), "--metrics", "brightness,oracle", "--prompt", PROMPT,
                                      "--json", str(tmp_path / "r.json"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    row = data["results"][0]
    assert row["brightness"] == pytest.approx(np.mean(by_hand(frames)), abs=1e-12)
    assert row["oracle_colour"] == 1.0
    assert list(data["mean"]) == ["brightness", *METRICS["oracle"].keys]  # the order of --metrics
    header = next(line for line in result.stdout.splitlines() if "frames" in line)
    assert header.index("IoU") < header.index("bright")  # the table keeps the registry's order: registered last


class Counter:
    model_id = "toy-backbone"

    def __init__(self):
        self.loads = 0


def test_a_backbone_loads_once_for_all_clips_and_is_shared(tmp_path):
    backbone = Counter()

    def load(ctx):
        backbone.loads += 1
        assert ctx.options["gain"] == 2.0  # evaluate's `options` reach the metric
        return backbone

    def scored(key):
        return lambda item, model, ctx: {key: ctx.options["gain"] * float(item.frames.mean()) / 255.0}

    mean_metric = Metric("toy-mean", ("toy_mean",), scales={"toy_mean": "gain x mean brightness"}, score=scored("toy_mean"),
                         load=load, backbone="toy")
    twin = Metric("toy-twin", ("toy_twin",), scales={"toy_twin": "the same, again"}, score=scored("toy_twin"),
                  load=load, backbone="toy")
    paths = []
    for index in range(3):
        write_video(clip("green", 3 + index), tmp_path / f"c{index}", fps=8)
        paths.append(tmp_path / f"c{index}")
    register(mean_metric)
    register(twin)
    try:
        result = evaluate(paths, metrics="toy-mean,toy-twin", options={"gain": 2.0})
    finally:
        unregister(twin.name)
        unregister(mean_metric.name)
    assert backbone.loads == 1
    assert result["models"]["toy"] == "toy-backbone"
    assert [r["toy_mean"] for r in result["results"]] == [r["toy_twin"] for r in result["results"]]
    assert result["results"][0]["toy_mean"] == pytest.approx(2.0 * np.mean(by_hand(clip("green", 3))), abs=1e-12)


def test_records_are_checked():
    with pytest.raises(ValueError, match="already"):
        register(METRICS["psnr"])
    with pytest.raises(ValueError, match="psnr .psnr."):
        register(Metric("psnr2", ("psnr",), scales={"psnr": "dB"}, score=brightness))
    with pytest.raises(ValueError, match="no scale for b"):
        Metric("toy", ("a", "b"), scales={"a": "x"}, score=brightness)
    with pytest.raises(ValueError, match="row field"):
        Metric("toy", ("notes",), scales={"notes": "x"}, score=brightness)
    with pytest.raises(ValueError, match="not among its keys"):
        Metric("toy", ("a",), scales={"a": "x"}, per_frame=("b",), score=brightness)
    assert Metric("toy", ("a",), scales={"a": "x"}, score=brightness, needs_source=True).uses_source
    assert list(METRICS) == ["clip", "pickscore", "dino", "flow", "warp", "psnr", "oracle"]
