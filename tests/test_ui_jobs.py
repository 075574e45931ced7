"""The web UI's work without Gradio or a browser (:mod:`contextedit.ui.jobs`, ``.clip``, ``.outputs``):
Cancel and Resume end on the weights of a tune never stopped, the frame preview and the caption are
what ``tune`` takes, the edit settings and a user mask reach ``edit``, every output is offered, and
``eval`` scores the edits, the page's edit shows each result as it comes and a drawn mask edits as
the same mask uploaded. The tiny-random model, the tiny BLIP-2 and the tiny CLIP; no network."""

from __future__ import annotations

import contextlib
import inspect
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contextedit import video as vio
from contextedit.errors import InputError, UsageError
from contextedit.fileio import load_safetensors
from contextedit.ui import clip, masks, outputs
from contextedit.ui.jobs import Cancelled, Jobs, Selection

from helpers import MODEL

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "red-circle.mp4"
PROMPT = "a red circle moving right on a black background"
TINY_EVAL = {"clip_model": "tiny", "pickscore_model": "tiny", "dino_model": "tiny"}


def _jobs(runs: Path, **kw) -> Jobs:
    return Jobs(runs=runs, model=MODEL, device="cpu", caption_model="tiny", eval_models=TINY_EVAL, **kw)


def _stopping_after(jobs: Jobs, step: int):
    """A progress factory that presses Cancel once ``step`` steps are done."""
    def factory(description, total):
        @contextlib.contextmanager
        def bar():
            done = 0

            def advance(**_):
                nonlocal done
                done += 1
                if done == step:
                    jobs.cancel()
            yield advance
        return bar()
    return factory


def _in_thread(fn):
    """Run ``fn`` off the main thread, as Gradio runs a handler (Ctrl-C handling is off there)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 — handed back to the test
            out["error"] = exc
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=300)
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.slow
def test_cancel_then_resume_ends_on_the_weights_of_the_clis_uninterrupted_tune(tmp_path, runs):
    """A page tune (no prompt: the caption button's caption) cancelled after step 2 of 4 keeps its
    checkpoint; Resume ends on exactly the weights, losses and caption of ``tune`` run whole."""
    from contextedit.commands.tune import TuneOptions, tune

    selection = Selection(frames="4", stride=3, start=1, size="48x32")
    jobs = _jobs(tmp_path / "page")
    with pytest.raises(Cancelled, match="cancelled after step 2 of 4.*Resume") as cancelled:
        _in_thread(lambda: jobs.tune(str(SAMPLE), "", 4, 7, selection, progress=_stopping_after(jobs, 2)))
    run = jobs.runs / cancelled.value.run
    assert cancelled.value.run == "red-circle" and {p.name for p in run.iterdir()} == {"checkpoint.safetensors"}
    assert jobs.list_runs() == []  # not a tuned run yet
    assert jobs.new_run_folder(str(SAMPLE)).name == "red-circle-2"  # a second tune never takes its folder
    with pytest.raises(InputError, match="no cancelled tune named 'other'"):
        jobs.resume("other")
    with pytest.raises(UsageError, match="not a folder name inside"):
        jobs.resume("../red-circle")
    assert _in_thread(lambda: jobs.resume("red-circle")) == "red-circle"
    assert not (run / "checkpoint.safetensors").exists() and jobs.list_runs() == ["red-circle"]

    caption = clip.caption(jobs, str(SAMPLE), selection)  # the Caption button: what tune captioned
    whole = tune(TuneOptions(video=str(SAMPLE), frames=4, stride=3, start=1, size="48x32", steps=4, seed=7, model=MODEL,
                             device="cpu", caption_model="tiny", out=str(tmp_path / "cli")))
    for name in ("tuned.safetensors", "adapter/diffusion_pytorch_model.safetensors"):
        a, b = load_safetensors(whole.run_dir / name), load_safetensors(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["loss_curve"] == whole.manifest["loss_curve"] and len(manifest["loss_curve"]) == 4
    assert manifest["source_prompt"] == whole.manifest["source_prompt"] == caption
    assert (manifest["frames"], manifest["width"], manifest["height"], manifest["stride"], manifest["start"]) == (4, 48, 32, 3, 1)


def test_the_preview_is_the_frames_tune_takes(tmp_path):
    jobs = _jobs(tmp_path)
    frames, line = clip.preview(jobs, str(SAMPLE), Selection(frames="4", stride=3, start=1, size="48x32"))
    expected = vio.resize_crop(vio.read_video(SAMPLE, frames=4, stride=3, start=1).frames, 48, 32)
    assert len(frames) == 4 and all(np.array_equal(f, e) for f, e in zip(frames, expected))
    assert "4 of the clip's 16 frames (indices 1, 4, 7, 10) at 48×32" in line
    frames, line = clip.preview(jobs, str(SAMPLE), Selection())  # tune's defaults: 8 frames, stride 2, the model's size
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3) and "indices 0, 2, 4, 6, 8, 10, 12, 14" in line
    frames, _ = clip.preview(jobs, str(SAMPLE), Selection(frames="all", stride=1))
    assert len(frames) == 16
    for selection, words in [(Selection(frames="x"), "`frames` must be a frame count or all"),
                             (Selection(stride=0), "`stride`"), (Selection(size="50x50"), "multiple"),
                             (Selection(start=40), "start"), (Selection(stride="two"), "whole number")]:
        with pytest.raises((UsageError, InputError), match=words):
            clip.preview(jobs, str(SAMPLE), selection)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(InputError):
        clip.preview(jobs, str(tmp_path / "notes.mp4"), Selection())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ui-runs")
    jobs = _jobs(runs, edit_steps=2)
    return jobs, jobs.tune(str(SAMPLE), PROMPT, 2, 0)


@pytest.mark.slow
def test_edit_settings_and_a_user_mask_reach_edit_and_every_output_is_offered(tuned, tmp_path):
    jobs, name = tuned
    run = jobs.runs / name
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    settings = {"inversion": "ddim", "self_fusion": 0.25, "cross_fusion": 0.4, "blend": False}
    made = jobs.edit_outputs(name, "a blue circle\n\na green square", 7.5, settings=settings, mask=str(tmp_path / "mask.png"))
    folder = made[0]["frames"].parent
    assert folder.parent == run / "edits" and folder.name.startswith(
        "guidance-7.5_inversion-ddim_self-fusion-0.25_cross-fusion-0.4_blend-off_mask-")
    record = json.loads((folder / "edits.json").read_text())
    assert {k: record["settings"][k] for k in settings} == settings and record["settings"]["mask"] == str(tmp_path / "mask.png")
    assert [o["prompt"] for o in record["outputs"]] == ["a blue circle", "a green square"]
    for outs in made:
        frames = vio.read_video(outs["frames"], frames=None, stride=1).frames
        assert frames.shape == (8, 64, 64, 3)
        assert vio.count_frames(outs["mp4"]) == 8 and vio.count_frames(outs["gif"]) == 8
        assert vio.read_video(outs["source-edit"], frames=None, stride=1).frames.shape == (8, 64, 128, 3)
        with zipfile.ZipFile(outs["zip"]) as archive:
            pngs = [n for n in archive.namelist() if n.endswith(".png")]
            assert len(pngs) == 8 and all(n.startswith(f"{outs['frames'].name}/") for n in pngs)
    # the /edit endpoint's call: edit's defaults, its own folder, the mp4s
    files = jobs.edit(name, "a blue circle", 7.5)
    assert files == [str(run / "edits" / "guidance-7.5" / "a-blue-circle.mp4")]
    assert json.loads((run / "edits" / "guidance-7.5" / "edits.json").read_text())["settings"]["inversion"] == "direct"

    (tmp_path / "mask.txt").write_text("not an image")
    with pytest.raises(InputError):
        jobs.edit_outputs(name, "a cat", 7.5, mask=str(tmp_path / "mask.txt"))
    with pytest.raises(InputError, match="not a file"):
        jobs.edit_outputs(name, "a cat", 7.5, mask=str(tmp_path / "missing.png"))
    with pytest.raises(UsageError, match="inversion"):
        jobs.edit_outputs(name, "a cat", 7.5, settings={"inversion": "sideways"})
    with pytest.raises(UsageError, match="no edit setting"):
        jobs.edit_outputs(name, "a cat", 7.5, settings={"steps": 3})


def _painting(frame: np.ndarray) -> dict:
    """The value Gradio's ImageEditor passes for a white rectangle painted over ``frame`` (and a
    faint stroke, under half opaque: not painted, as ``--mask`` reads under half white as black)."""
    layer = np.zeros((*frame.shape[:2], 4), np.uint8)
    layer[8:40, 16:56] = 255
    layer[40:44, 16:56] = (255, 255, 255, 100)
    composite = frame.copy()
    composite[8:40, 16:56] = 255
    return {"background": frame, "layers": [layer], "composite": composite}


@pytest.mark.slow
def test_a_drawn_mask_edits_as_the_same_mask_uploaded(tuned, tmp_path):
    jobs, name = tuned
    run = jobs.runs / name
    frame = masks.first_frame(run)
    assert np.array_equal(frame, vio.read_video(run / "source-frames", frames=1, stride=1).frames[0])
    assert np.array_equal(masks.canvas(run)["background"], frame) and masks.canvas(run)["layers"] == []
    drawing = _painting(frame)
    drawn = masks.user_mask(run, None, drawing)
    assert Path(drawn).parent == run / "edits" / "masks" and masks.user_mask(run, None, drawing) == drawn  # same drawing, same file
    upload = np.zeros((64, 64, 3), np.uint8)
    upload[8:40, 16:56] = 255
    Image.fromarray(upload).save(tmp_path / "mask.png")  # RGB: other bytes than the drawn PNG, so a fresh edit
    assert np.array_equal(vio.read_mask_frames(drawn, 8), vio.read_mask_frames(tmp_path / "mask.png", 8))

    as_drawn = jobs.edit_outputs(name, "a blue circle", 7.5, mask=drawn)[0]["frames"]
    as_uploaded = jobs.edit_outputs(name, "a blue circle", 7.5, mask=str(tmp_path / "mask.png"))[0]["frames"]
    assert as_drawn.parent != as_uploaded.parent  # two edits, not one file returned twice
    assert json.loads((as_drawn.parent / "edits.json").read_text())["settings"]["mask"] == drawn
    a, b = (vio.read_video(f, frames=None, stride=1).frames for f in (as_drawn, as_uploaded))
    assert a.shape == (8, 64, 64, 3) and np.array_equal(a, b)
    unmasked = vio.read_video(jobs.edit_outputs(name, "a blue circle", 7.5)[0]["frames"], frames=None, stride=1).frames
    assert not np.array_equal(a, unmasked)  # the mask did something

    empty = {**drawing, "layers": [np.zeros_like(drawing["layers"][0])]}
    assert masks.user_mask(run, str(tmp_path / "mask.png"), empty) == str(tmp_path / "mask.png")  # nothing painted
    assert masks.user_mask(run, None, None) is None and masks.user_mask(run, None, {"layers": None}) is None
    with pytest.raises(UsageError, match="two masks"):
        masks.user_mask(run, str(tmp_path / "mask.png"), drawing)


@pytest.mark.slow
def test_the_pages_edit_shows_each_result_as_soon_as_it_is_made(tuned):
    """The page's Edit handler is a generator: its first update holds the first prompt's result,
    on disk, before the second prompt is edited; the last holds both. /edit keeps its one answer."""
    pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e \".[ui]\"")
    from contextedit.ui.app import build_app

    jobs, name = tuned
    demo = build_app(jobs)
    handler = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "edit_page")
    api = next(f.fn for f in demo.fns.values() if f.api_name == "edit")
    assert inspect.isgeneratorfunction(handler) and not inspect.isgeneratorfunction(api)
    bars = []
    drawing = _painting(masks.first_frame(jobs.runs / name))
    updates = handler(name, "a yellow circle\na purple square", 6.0, None, 0.5, 0.5, True, None, drawing,
                      progress=lambda value, desc="", unit="": bars.append(desc))
    player, gallery, files, last = next(updates)
    assert len(gallery) == 1 and player == gallery[0][0] and Path(player).is_file()
    assert player.endswith("a-yellow-circle.source-edit.mp4") and vio.count_frames(player) == 8
    assert len(files) == 3 and all(Path(f).is_file() for f in files) and len(last["folders"]) == 1
    assert not (Path(last["folders"][0]).parent / "a-purple-square").exists()
    assert any("a yellow circle" in b for b in bars) and not any("a purple square" in b for b in bars)
    assert Path(last["mask"]).parent == jobs.runs / name / "edits" / "masks"  # the drawing is the edit's mask
    *_, (player, gallery, files, last) = updates
    assert [g[1] for g in gallery] == ["a-yellow-circle", "a-purple-square"] and player == gallery[1][0]
    assert len(files) == 6 and all(Path(f).is_file() for f in files) and len(last["folders"]) == 2
    assert any("a purple square" in b for b in bars)


def test_score_is_evals_report_of_the_edit(tuned):
    jobs, name = tuned
    made = jobs.edit_outputs(name, "a blue circle", 7.5)
    report, result = outputs.score([m["frames"] for m in made], jobs.runs / name, ["clip", "psnr"], jobs.eval_models, "cpu")
    assert report == made[0]["frames"].parent / "report.html" and report.is_file()
    row = result["results"][0]
    assert row["prompt"] == "a blue circle" and {"clip_text", "psnr"} <= set(row) and result["source"].endswith("source-frames")
    with zipfile.ZipFile(outputs.report_zip(report)) as archive:
        names = archive.namelist()
    assert "report.html" in names and "report_files/source.gif" in names
    frame = outputs.report_frame(report)
    served = [Path(s) for s in __import__("re").findall(r"gradio_api/file=([^&\"]+)", frame)]
    assert served and all(p.is_file() and p.is_relative_to(jobs.runs) for p in served)
    assert frame.startswith("<iframe") and "<script" not in frame
    with pytest.raises(UsageError, match="edit first"):
        outputs.score([], jobs.runs / name, "clip", jobs.eval_models, "cpu")
    with pytest.raises(UsageError, match="unknown metric"):
        outputs.score([m["frames"] for m in made], jobs.runs / name, ["colour"], jobs.eval_models, "cpu")
