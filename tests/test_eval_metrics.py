"""eval's published-table metrics (issue 19): CLIP in both scales, PickScore, DINO, flow, warp,
PSNR outside a mask and the shapes oracle, each checked against a hand computation or a clip
whose answer is known; then the whole command through the CLI with its JSON and report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from helpers import f32_tol
from typer.testing import CliRunner

from contextedit.cli import app
from contextedit.metrics import evaluate
from contextedit.metrics.evaluate import ROW_INFO
from contextedit.testing import shapes
from contextedit.video import write_video

TINY = {"clip_model": "tiny", "pickscore_model": "tiny", "dino_model": "tiny"}
PROMPT = "a green circle moving right on a black background"


def moving_clip(colour: str = "red", frames: int = 8, direction: str = "right") -> np.ndarray:
    return shapes.make_clip("circle", colour, "black", direction, start=(20, 30), frames=frames)[0]


def test_clip_logit_is_100_times_cosine_and_a_still_clip_is_consistent(tmp_path):
    still = np.repeat(moving_clip()[:1], 5, axis=0)
    write_video(still, tmp_path / "still", fps=8)
    row = evaluate([tmp_path / "still"], metrics="clip,dino", prompt=PROMPT, clip_model="tiny", dino_model="tiny")["results"][0]
    assert row["clip_text_logit"] == 100 * row["clip_text"]
    tol = f32_tol(1.0, ops=64)  # a normalised dot product of 16-32 terms
    assert row["clip_temporal"] == pytest.approx(1.0, abs=tol)
    assert row["dino_temporal"] == pytest.approx(1.0, abs=tol)


def test_pickscore_equals_hand_computation(tmp_path):
    from contextedit.models.loading import load_pickscore_model

    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    write_video(frames, tmp_path / "clip", fps=8)
    row = evaluate([tmp_path / "clip"], metrics="pickscore", prompt=PROMPT, pickscore_model="tiny")["results"][0]

    model, processor = load_pickscore_model("tiny")
    with torch.no_grad():
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = processor(text=[PROMPT], return_tensors="pt", padding=True)
        txt = model.text_projection(model.text_model(**{k: tokens[k] for k in ("input_ids", "attention_mask")}).pooler_output)
    scores = model.logit_scale.exp() * (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T)[:, 0]
    scale = model.logit_scale.exp().item()
    assert row["pickscore"] == pytest.approx(float(scores.mean()), abs=f32_tol(scale, ops=128))
    assert row["per_frame"]["pickscore"] == pytest.approx(scores.tolist(), abs=f32_tol(scale, ops=128))
    assert model.logit_scale.exp().item() != pytest.approx(100.0)  # tiny's scale is CLIP's init (14.3), not PickScore's


def test_dino_equals_hand_computation(tmp_path):
    from contextedit.models.loading import load_dino_model

    frames = np.random.default_rng(1).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    write_video(frames, tmp_path / "clip", fps=8)
    for mode in ("consecutive", "all"):
        row = evaluate([tmp_path / "clip"], metrics="dino", dino_model="tiny", temporal=mode)["results"][0]
        model, processor = load_dino_model("tiny")
        with torch.no_grad():
            cls = model(pixel_values=processor(images=list(frames), return_tensors="pt")["pixel_values"]).last_hidden_state[:, 0]
        unit = F.normalize(cls, dim=-1)
        pairs = [(i, i + 1) for i in range(3)] if mode == "consecutive" else [(i, j) for i in range(4) for j in range(i + 1, 4)]
        hand = float(np.mean([float(unit[i] @ unit[j]) for i, j in pairs]))
        assert row["dino_temporal"] == pytest.approx(hand, abs=f32_tol(1.0, ops=64))


def test_source_metrics_of_a_clip_against_itself(tmp_path):
    source = moving_clip(frames=6)
    write_video(source, tmp_path / "source", fps=8)
    result = evaluate([tmp_path / "source"], metrics="flow,warp,psnr", source=tmp_path / "source")
    row = result["results"][0]
    assert row["flow_epe"] == 0.0 and row["psnr"] == 100.0
    assert row["warp_error"] < 1e-3
    assert len(row["per_frame"]["flow_epe"]) == 5 and len(row["per_frame"]["psnr"]) == 6
    assert result["models"]["flow"] == "farneback"


def test_doubled_motion_has_flow_error(tmp_path):
    long = moving_clip(frames=12)
    write_video(long[:6], tmp_path / "source", fps=8)
    write_video(long[::2], tmp_path / "fast", fps=8)
    row = evaluate([tmp_path / "fast"], metrics="flow", source=tmp_path / "source")["results"][0]
    assert row["flow_epe"] > 0.1


def test_bg_psnr_ignores_the_masked_region(tmp_path):
    source = moving_clip(frames=4)
    edit = source.copy()
    edit[:, 10:50, 10:50] = 255 - edit[:, 10:50, 10:50]
    mask = np.zeros((64, 64), np.uint8)
    mask[8:52, 8:52] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    write_video(source, tmp_path / "source", fps=8)
    write_video(edit, tmp_path / "edit", fps=8)
    result = evaluate([tmp_path / "edit"], metrics="psnr", source=tmp_path / "source", mask=tmp_path / "mask.png")
    row = result["results"][0]
    assert row["bg_psnr"] == 100.0 and row["psnr"] < 20.0
    assert result["mask"] == str(tmp_path / "mask.png") and "bg_psnr" in result["scales"]


def test_a_mask_folder_describes_the_source_frames(tmp_path):
    # one mask per source frame serves an edit of another length (compared over the common frames)
    source = moving_clip(frames=4)
    (tmp_path / "masks").mkdir()
    for i in range(4):
        Image.fromarray(np.full((64, 64), 255 * (i % 2), np.uint8)).save(tmp_path / "masks" / f"{i}.png")
    write_video(source, tmp_path / "source", fps=8)
    write_video(moving_clip(frames=6), tmp_path / "longer", fps=8)
    row = evaluate([tmp_path / "longer"], metrics="psnr", source=tmp_path / "source", mask=tmp_path / "masks")["results"][0]
    assert row["bg_psnr"] == 100.0  # the background of frames 0 and 2 is unchanged; frames 1 and 3 have none


def test_a_report_that_cannot_be_written_is_refused_before_scoring(tmp_path):
    write_video(moving_clip(frames=3), tmp_path / "clip", fps=8)
    (tmp_path / "report_files").mkdir()
    (tmp_path / "report_files" / "notes.txt").write_text("mine")
    args = ["eval", tmp_path / "clip", "--metrics", "psnr", "--source", tmp_path / "clip", "--json", tmp_path / "r.json",
            "--report", tmp_path / "report.html", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and "report_files" in result.stderr
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "report.html").exists()
    assert (tmp_path / "report_files" / "notes.txt").read_text() == "mine"


def test_oracle_scores_a_right_and_a_wrong_edit(tmp_path):
    source = moving_clip("red")
    write_video(source, tmp_path / "source", fps=8)
    write_video(moving_clip("green"), tmp_path / "green", fps=8)
    result = evaluate([tmp_path / "green"], metrics="oracle", prompt=PROMPT, source=tmp_path / "source")
    row = result["results"][0]
    assert row["oracle_success"] == 1.0 and row["oracle_colour"] == 1.0 and row["oracle_shape"] == 1.0
    assert row["oracle_centroid_error"] == 0.0 and row["oracle_temporal_iou"] == 1.0 and row["oracle_background_kept"] == 1.0
    wrong = evaluate([tmp_path / "source"], metrics="oracle", prompt=PROMPT, source=tmp_path / "source")["results"][0]
    assert wrong["oracle_success"] == 0.0 and wrong["oracle_colour"] == 0.0
    alone = evaluate([tmp_path / "green"], metrics="oracle", prompt=PROMPT)["results"][0]
    assert alone["oracle_colour"] == 1.0 and "oracle_success" not in alone


def test_oracle_is_the_quality_benchmark_scorer():
    """bench/quality.py scores each edit with the same function eval's oracle calls."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "bench" / "quality.py").read_text()
    assert "shapes.score_edit(" in text and "def score_edit" not in text


def test_every_backbone_and_scale_is_named(tmp_path):
    source = moving_clip(frames=4)
    write_video(source, tmp_path / "source", fps=8)
    result = evaluate([tmp_path / "source"], metrics="clip,pickscore,dino,flow,warp,psnr,oracle", prompt=PROMPT,
                      source=tmp_path / "source", **TINY)
    assert result["models"] == {"clip": "tiny", "pickscore": "tiny", "dino": "tiny", "flow": "farneback"}
    row = result["results"][0]
    metric_keys = {k for k in row if k not in ROW_INFO}
    assert metric_keys == set(result["scales"]) == set(result["mean"])
    assert "100" in result["scales"]["clip_text_logit"] and "cosine" in result["scales"]["clip_text"]
    json.dumps(result)  # plain JSON


def test_eval_command_with_every_metric_and_a_report(tmp_path):
    source = moving_clip("red", frames=6)
    write_video(source, tmp_path / "source.mp4", fps=8)
    write_video(moving_clip("green", frames=6), tmp_path / "green.mp4", fps=8)
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "mask.png")
    args = ["eval", tmp_path / "green.mp4", "--prompt", PROMPT, "--source", tmp_path / "source.mp4", "--mask", tmp_path / "mask.png",
            "--metrics", "clip,pickscore,dino,flow,warp,psnr,oracle", "--clip-model", "tiny", "--pickscore-model", "tiny",
            "--dino-model", "tiny", "--json", tmp_path / "out" / "r.json", "--report", tmp_path / "out" / "report.html",
            "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    row = data["results"][0]
    for key in ("path", "prompt", "clip_text", "clip_text_logit", "clip_temporal", "pickscore", "dino_temporal", "flow_epe",
                "warp_error", "psnr", "bg_psnr", "oracle_success"):
        assert key in row, key
    assert row["bg_psnr"] is None  # an all-white mask leaves no background
    page = (tmp_path / "out" / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#:]+)"', page)
    assert refs and all((tmp_path / "out" / ref).is_file() for ref in refs)


def test_oracle_reads_scenes_world_edits_and_their_leakage(tmp_path):
    """A two-object edit on a panning texture: the right edit changes the circle only; the leaky one
    also recolours the square the prompt keeps, in every frame."""
    from contextedit.worlds import scenes

    def clip(circle: str, square: str) -> np.ndarray:
        things = (scenes.Thing("circle", circle, "right", (24, 30)), scenes.Thing("square", square, "down", (66, 24)))
        return scenes.make_clip(scenes.Scene(things, "checkered", pan="left"), frames=6)[0]

    for name, frames in {"source": clip("red", "blue"), "right": clip("green", "blue"), "leaky": clip("green", "yellow")}.items():
        write_video(frames, tmp_path / name, fps=8)
    prompt = "a green circle moving right and a blue square moving down on a checkered background"
    rows = evaluate([tmp_path / "right", tmp_path / "leaky"], metrics="oracle", prompt=prompt,
                    source=tmp_path / "source")["results"]
    right, leaky = rows
    assert (right["oracle_success"], right["oracle_shape"], right["oracle_leakage"]) == (1.0, 1.0, 0.0)
    assert right["oracle_centroid_error"] == 0.0 and right["oracle_background_kept"] == 1.0
    assert (leaky["oracle_success"], leaky["oracle_colour"], leaky["oracle_leakage"]) == (0.0, 0.0, 1.0)
    assert right["oracle_temporal_iou"] is None  # the shapes world's one-object shift test does not apply
