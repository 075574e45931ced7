"""CLIP-text / CLIP-temporal / PSNR and ``evaluate``: checked against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contextedit.errors import InputError, ModelNotFoundError, UnsafeFileError, UsageError
from contextedit.metrics import (
    PSNR_CAP_DB, clip_temporal_score, clip_text_score, evaluate, load_clip, parse_metrics, psnr, results_table,
)
from contextedit.testing.tiny_clip import build_tiny_clip
from contextedit.video import write_video


def random_clip(frames: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (frames, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """The tiny CLIP saved as a real model folder (model + processor, safetensors)."""
    folder = tmp_path_factory.mktemp("clip")
    model, processor = build_tiny_clip()
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def hand_scores(folder, frames: np.ndarray, prompt: str) -> tuple[float, float, float]:
    """clip_text, consecutive and all-pairs clip_temporal, computed directly with CLIPModel."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = processor(text=[prompt], return_tensors="pt", padding=True)
        txt = model.text_projection(model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output)
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    text = float(np.mean([float(img[i] @ txt[0]) for i in range(len(img))]))
    consecutive = float(np.mean([float(img[i] @ img[i + 1]) for i in range(len(img) - 1)]))
    pairs = float(np.mean([float(img[i] @ img[j]) for i in range(len(img)) for j in range(i + 1, len(img))]))
    return text, consecutive, pairs


def test_identical_frames_have_temporal_one():
    embeds = torch.randn(1, 16).repeat(5, 1) * 3.0
    assert clip_temporal_score(embeds, "consecutive") == pytest.approx(1.0, abs=1e-5)
    assert clip_temporal_score(embeds, "all") == pytest.approx(1.0, abs=1e-5)
    assert clip_temporal_score(embeds[:1]) is None


def test_scores_are_raw_cosines():
    img, txt = torch.randn(3, 8), torch.randn(8)
    assert clip_text_score(img, txt) == pytest.approx(F.cosine_similarity(img, txt[None]).mean().item(), abs=1e-6)


def test_evaluate_matches_hand_computation(tmp_path, clip_folder):
    frames = random_clip(4)
    write_video(frames, tmp_path / "clip", fps=8)  # a frame folder: lossless
    prompt = "a red circle moving right"
    text, consecutive, pairs = hand_scores(clip_folder, frames, prompt)

    result = evaluate([tmp_path / "clip"], prompt=prompt, clip_model=str(clip_folder))
    row = result["results"][0]
    assert result["models"]["clip"] == str(clip_folder)
    assert row["frames"] == 4 and row["prompt"] == prompt
    assert row["clip_text"] == pytest.approx(text, abs=1e-5)
    assert row["clip_temporal"] == pytest.approx(consecutive, abs=1e-5)
    assert result["mean"] == {"clip_text": row["clip_text"], "clip_text_logit": 100 * row["clip_text"],
                              "clip_temporal": row["clip_temporal"]}
    all_pairs = evaluate([tmp_path / "clip"], prompt=prompt, clip_model=str(clip_folder), temporal="all")
    assert all_pairs["results"][0]["clip_temporal"] == pytest.approx(pairs, abs=1e-5)


def test_edit_folder_prompts_come_from_manifest(tmp_path):
    scorer = load_clip("tiny")
    write_video(random_clip(3, seed=1), tmp_path / "edit-0.mp4", fps=8)
    write_video(random_clip(3, seed=2), tmp_path / "edit-1", fps=8)
    outputs = [{"prompt": "a blue circle", "file": "edit-0.mp4"}, {"prompt": "a red square", "file": "edit-1"}]
    (tmp_path / "edits.json").write_text(json.dumps({"outputs": outputs, "source_prompt": "a red circle"}))

    result = evaluate([tmp_path], scorer=scorer)
    assert [r["prompt"] for r in result["results"]] == ["a blue circle", "a red square"]
    assert [r["frames"] for r in result["results"]] == [3, 3]
    assert result["mean"]["clip_text"] == pytest.approx(np.mean([r["clip_text"] for r in result["results"]]))


def test_generate_folder_images_have_no_temporal(tmp_path):
    from PIL import Image

    images = []
    for i, frame in enumerate(random_clip(2, seed=3)):
        Image.fromarray(frame).save(tmp_path / f"img-{i}.png")
        images.append({"prompt": f"a cat {i}", "file": f"img-{i}.png", "seed": i})
    (tmp_path / "generate.json").write_text(json.dumps({"images": images}))

    result = evaluate([tmp_path], clip_model="tiny")
    assert [(r["frames"], r["clip_temporal"]) for r in result["results"]] == [(1, None), (1, None)]
    assert result["mean"]["clip_temporal"] is None


def test_manifest_paths_cannot_escape(tmp_path):
    (tmp_path / "edits.json").write_text(json.dumps({"outputs": [{"prompt": "x", "file": "../secret.mp4"}]}))
    with pytest.raises(UnsafeFileError):
        evaluate([tmp_path], clip_model="tiny")


def test_missing_prompt_is_a_usage_error(tmp_path):
    write_video(random_clip(2), tmp_path / "clip", fps=8)
    with pytest.raises(UsageError, match="no prompt for .*`prompt`"):
        evaluate([tmp_path / "clip"], clip_model="tiny")


def test_unknown_metric_lists_known_ones():
    assert parse_metrics("clip, psnr,clip") == ["clip", "psnr"]
    with pytest.raises(UsageError, match="fid.*clip, pickscore, dino, flow, warp, psnr, oracle"):
        parse_metrics("clip,fid")


def test_missing_and_empty_paths_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        evaluate([tmp_path / "nope.mp4"], prompt="x", clip_model="tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no"):
        evaluate([tmp_path / "empty"], prompt="x", clip_model="tiny")


def test_psnr_self_is_capped_and_noise_is_finite():
    frames = random_clip(3)
    assert psnr(frames, frames) == PSNR_CAP_DB
    noisy = np.clip(frames.astype(int) + np.random.RandomState(1).randint(-8, 9, frames.shape), 0, 255).astype(np.uint8)
    mse = ((frames.astype(float) - noisy) ** 2).reshape(3, -1).mean(1)
    assert psnr(noisy, frames) == pytest.approx(np.mean(10 * np.log10(255**2 / mse)))
    assert np.isfinite(psnr(noisy, frames)) and psnr(noisy, frames) < PSNR_CAP_DB


def test_psnr_metric_resizes_source(tmp_path):
    big = np.repeat(np.repeat(random_clip(2, size=16), 2, axis=1), 2, axis=2)  # 32x32, blocky
    write_video(big, tmp_path / "source", fps=8)
    write_video(big[:, ::2, ::2], tmp_path / "out", fps=8)
    with pytest.raises(UsageError, match="`source`"):
        evaluate([tmp_path / "out"], metrics="psnr")
    result = evaluate([tmp_path / "out"], metrics="psnr", source=tmp_path / "source")
    assert result["models"]["clip"] is None and set(result["mean"]) == {"psnr"}
    assert 20 < result["results"][0]["psnr"] <= PSNR_CAP_DB


def test_results_table_renders():
    from rich.console import Console

    result = {
        "clip_model": "tiny", "mean": {"clip_text": 0.25, "clip_temporal": None},
        "results": [{"path": "a.png", "prompt": "a cat", "frames": 1, "clip_text": 0.25, "clip_temporal": None}],
    }
    console = Console(record=True, width=120)
    console.print(results_table(result))
    text = console.export_text()
    assert "CLIP-T" in text and "0.25" in text and "a.png" in text


def test_pickle_only_model_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(UnsafeFileError, match="pickle"):
        load_clip(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="`clip_model` tiny"):
        load_clip(str(tmp_path / "missing-dir" / "x"))


def test_uncached_hub_model_offline_says_what_to_do():
    with pytest.raises(ModelNotFoundError, match="`clip_model` PATH or use `clip_model` tiny"):
        load_clip("nobody/no-such-clip-model")


def test_eval_command_json_equals_hand_computation(tmp_path, clip_folder):
    from typer.testing import CliRunner

    from contextedit.cli import app

    frames = random_clip(3, seed=1)
    write_video(frames, tmp_path / "clip", fps=8)
    prompt = "a blue square"
    text, consecutive, _ = hand_scores(clip_folder, frames, prompt)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "clip"), "--prompt", prompt, "--clip-model", str(clip_folder),
                                      "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    row = json.loads(out.read_text())["results"][0]
    assert row["clip_text"] == pytest.approx(text, abs=1e-5)
    assert row["clip_temporal"] == pytest.approx(consecutive, abs=1e-5)
