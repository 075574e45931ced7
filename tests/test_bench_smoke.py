"""Smoke runs of the shapes-world scripts: bench/train_tiny.py and bench/quality.py, at toy sizes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import bench_script

from contextedit.testing import shapes


@pytest.fixture
def train_tiny():
    with bench_script("train_tiny") as module:
        yield module


@pytest.mark.slow
def test_train_tiny_trains_resumes_and_loads(train_tiny, tmp_path):
    from contextedit.models.loading import load_components

    common = ["--vae-steps", "2", "--vae-batch", "2", "--batch", "2", "--eval-steps", "1", "--log-every", "1",
              "--ckpt-every", "1", "--threads", "1", "--eval-seeds", "1", "--work", str(tmp_path / "work"),
              "--out", str(tmp_path / "model"), "--results", str(tmp_path / "train.json")]
    train_tiny.main(common + ["--unet-steps", "2"])
    assert (tmp_path / "work" / "denoiser" / "ema.safetensors").is_file()
    train_tiny.main(common + ["--unet-steps", "3", "--grid", str(tmp_path / "grid.png")])  # resumes at step 2, EMA included
    info = json.loads((tmp_path / "train.json").read_text())
    info = info["variants"]["joint"]
    assert info["denoiser"]["steps"] == 3
    # The oracle's agreement, scored again here from the images the grid holds (every prompt, one seed).
    from PIL import Image

    specs = list(itertools.product(shapes.SHAPES, shapes.COLOURS, shapes.BACKGROUNDS))
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    columns = 12
    size = grid.shape[1] // columns
    assert grid.shape[0] == -(-len(specs) // columns) * size
    images = [grid[r * size:(r + 1) * size, c * size:(c + 1) * size] for r, c in
              (divmod(i, columns) for i in range(len(specs)))]
    readings = [shapes.agrees(shapes.oracle(image), *spec) for image, spec in zip(images, specs)]
    scores = info["eval"]["with_adapter"]
    assert scores["hits"] == [int(all(r.values())) for r in readings]
    for key in ("shape", "colour", "background"):
        assert scores[key] == pytest.approx(sum(r[key] for r in readings) / len(specs), rel=np.finfo(float).eps * len(specs))
    assert scores["all"] == pytest.approx(sum(scores["hits"]) / len(specs), rel=np.finfo(float).eps * len(specs))
    comps = load_components(str(tmp_path / "model"), torch.device("cpu"), torch.float32)
    assert comps.vae.config.scaling_factor == pytest.approx(info["vae"]["scaling_factor"])


@pytest.mark.slow
def test_train_tiny_keeps_a_given_vae(train_tiny, tmp_path):
    def out(n: int) -> list[str]:
        return ["--work", str(tmp_path / f"work{n}"), "--out", str(tmp_path / f"model{n}"), "--results",
                str(tmp_path / "r.json"), "--eval-steps", "1", "--threads", "1", "--batch", "2", "--unet-steps", "1", "--eval-seeds", "1"]

    train_tiny.main(out(1) + ["--vae-steps", "1", "--vae-batch", "2"])
    first = json.loads((tmp_path / "r.json").read_text())["variants"]["joint"]["vae"]["scaling_factor"]
    train_tiny.main(out(2) + ["--vae-init", str(tmp_path / "model1" / "vae"), "--vae-steps", "0",
                              "--unet-init", str(tmp_path / "model1")])
    assert json.loads((tmp_path / "r.json").read_text())["variants"]["joint"]["vae"]["scaling_factor"] == pytest.approx(first)


@pytest.mark.slow
def test_quality_bench_runs_and_writes_its_figures(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# B\n")
    with bench_script("quality") as quality:
        result = quality.main(["--clips", "1", "--model", "tiny-random", "--tune-steps", "1", "--edit-steps", "2",
                               "--generate-prompts", "1", "--generate-seeds", "1", "--out", str(tmp_path / "q.json"),
                               "--benchmarks", str(benchmarks), "--gif", str(tmp_path / "edit.gif"),
                               "--background-seeds", "0,1", "--work", str(tmp_path / "work")])
        args = quality.parse_args([])
        entry = json.loads(quality.PROMPTS.read_text())[0]
        source = quality._source_frames(entry["spec"], entry["start"], args)
        kinds = quality.EDIT_KINDS
    written = json.loads((tmp_path / "q.json").read_text())
    summary = written["summary"]
    assert set(summary) == {"adapter", "no-adapter"}
    assert result["clips"] == 1
    # clip 0's background and two-change (colour + background) edits again at background seed 1, made so
    assert entry["edits"][3]["changes"] == ["colour", "background"]
    for variant in summary:
        again = [r for r in written["rows"] if r["variant"] == variant and "background_seed" in r]
        assert sorted((r["kind"], r["background_seed"]) for r in again) == [("background", 1), ("multiple", 1)]
        record = json.loads((tmp_path / "work" / f"shapes-00-{variant}-edits-default-bs1" / "edits.json").read_text())
        assert record["settings"]["background_seed"] == 1 and len(record["outputs"]) == 2
    # each variant's success rates and background kept, recomputed from the per-edit rows it wrote
    eps = np.finfo(float).eps
    for variant, means in summary.items():
        rows = [r for r in written["rows"] if r["variant"] == variant and r["kind"] in kinds]
        rates = {}
        for kind in kinds:
            mine = [float(r["success"]) for r in rows if r["kind"] == kind]
            rates[kind] = sum(mine) / len(mine) if mine else None
            expected = pytest.approx(rates[kind], rel=eps * len(rows)) if mine else None
            assert means[f"success_{kind}"] == expected, (variant, kind)
        known = [v for v in rates.values() if v is not None]
        assert means["success_mean"] == pytest.approx(sum(known) / len(known), rel=eps * len(rows))
        kept = [r["background_kept"] for r in written["rows"] if r["variant"] == variant and r.get("background_kept") is not None]
        assert means["background_kept"] == pytest.approx(sum(kept) / len(kept), rel=eps * len(kept))
    # the gif is source | edit: the clip's frames, side by side at twice its width
    from contextedit import video

    gif = video.read_video(tmp_path / "edit.gif", frames=None, stride=1).frames
    assert gif.shape == (len(source), source.shape[1], 2 * source.shape[2], 3)
    assert "quality:begin" in benchmarks.read_text()


def test_quality_scores_the_source_itself_as_perfect():
    """The source clip, scored as its own edit, keeps everything: temporal IoU 1 with the clip's
    stride (consecutive frames are STEP·stride px apart), no motion error, all background kept."""
    with bench_script("quality") as quality:
        args = quality.parse_args([])
        for entry in quality.make_prompt_set(4):
            source = quality._source_frames(entry["spec"], entry["start"], args)
            s = shapes.score_edit(source, source, "colour", entry["spec"], entry["spec"]["direction"], source, args.stride)
            assert s["temporal_iou"] == 1.0 and s["motion_error_px"] == 0.0 and s["background_kept"] == 1.0
            assert s["success"]


@pytest.mark.slow
def test_claims_bench_measures_and_plots(tmp_path):
    from contextedit.models.adapter import ContextAdapter, config_for_unet
    from contextedit.models.loading import save_components

    from helpers import tiny

    comps = tiny()
    save_components(comps, tmp_path / "model")
    ContextAdapter(**config_for_unet(comps.unet)).save_pretrained(tmp_path / "model" / "adapter")
    benchmarks = tmp_path / "BENCHMARKS.md"
    with bench_script("claims") as claims:
        result = claims.main(["--model", "tiny-random", "--model-folder", str(tmp_path / "model"), "--tune-steps", "3",
                              "--seeds", "2", "--generate-seeds", "1", "--generate-steps", "5", "--default-steps", "1",
                              "--threads", "1",
                              "--out", str(tmp_path / "claims.json"), "--quality", str(tmp_path / "none.json"),
                              "--train", str(tmp_path / "none.json"), "--benchmarks", str(benchmarks)])
    held = result["convergence"]["held_out"]
    assert held["adapter"]["n"] == 2 and "excludes_0" in held["adapter_minus_no_adapter"]
    # a zero-headed adapter is the plain model: generation identical with and without it
    assert result["generation"]["with_minus_without"]["mean"] == 0
    assert (tmp_path / "claims-convergence.png").stat().st_size > 0 and (tmp_path / "claims-generate.png").is_file()
    assert "claims:begin" in benchmarks.read_text()


def test_bootstrap_intervals():
    with bench_script("bootstrap") as bootstrap:
        stat = bootstrap.interval([1.0] * 10 + [0.0] * 10)
        assert stat["low"] < 0.5 < stat["high"] and stat["mean"] == 0.5 and stat["n"] == 20
        # an edit made at three background seeds counts once: a clip's mean success is (1 + 1/3) / 2,
        # not 2/4, and its motion error the colour edit's and the three draws' mean, half and half
        rows = [{"clip": "a", "variant": "adapter", "kind": "colour", "success": True, "motion_error_px": 4.0}] + \
            [{"clip": "a", "variant": "adapter", "kind": "background", "success": ok, "motion_error_px": px,
              "background_seed": seed} for seed, ok, px in ((0, True, 1.0), (1, False, 2.0), (2, False, None))]
        kinds = ("colour", "background")
        joined = bootstrap.per_edit(rows)
        assert joined[0] == rows[0] and joined[1]["success"] == 1 / 3 and joined[1]["draws"] == 3
        assert "background_seed" not in joined[1]
        assert bootstrap.per_clip(rows, ["a"], "adapter", "success_mean", kinds) == [(1 + 1 / 3) / 2]
        assert bootstrap.per_clip(rows, ["a"], "adapter", "success_background", kinds) == [1 / 3]
        assert bootstrap.per_clip(rows, ["a"], "adapter", "motion_error_px", kinds) == [(4.0 + 1.5) / 2]
        lead = bootstrap.paired([1, 1, 1, 1], [0, 0, 1, 0])
        assert lead["mean"] == 0.75 and lead["excludes_0"]
        assert bootstrap.paired([1, 0], [1, 0])["excludes_0"] is False


def test_shipped_files_change_only_with_update_docs(tmp_path, capsys):
    """Without --update-docs the bench scripts refuse, before any work, to write README/BENCHMARKS.md,
    examples/, prompts/ or contextedit/assets/, and leave BENCHMARKS.md's tables alone."""
    with bench_script("update_docs") as docs:
        root = docs.ROOT
        assert docs.is_shipped(root / "BENCHMARKS.md") and docs.is_shipped(root / "contextedit" / "assets" / "tiny" / "unet")
        assert not docs.is_shipped(root / "bench" / "results" / "quality.json") and not docs.is_shipped(tmp_path / "BENCHMARKS.md")
    with bench_script("quality") as quality:
        for argv in (["--write-prompts"], ["--gif", str(root / "examples" / "x.gif")], ["--benchmarks", str(root / "BENCHMARKS.md")]):
            with pytest.raises(SystemExit, match="--update-docs"):
                quality.main(argv)
        assert quality.update_docs.benchmarks_file(quality.parse_args([])) is None
        assert "BENCHMARKS.md left as it is" in capsys.readouterr().out
        assert quality.update_docs.benchmarks_file(quality.parse_args(["--update-docs"])) == root / "BENCHMARKS.md"
    with bench_script("train_tiny") as train_tiny:
        for world in train_tiny.WORLDS:
            with pytest.raises(SystemExit, match="--update-docs"):
                train_tiny.main(["--world", world, "--out", str(train_tiny.ASSETS / train_tiny.WORLDS[world]["out"])])
            assert not Path(train_tiny.parse_args(["--world", world]).out).is_relative_to(train_tiny.ASSETS)


@pytest.mark.slow
def test_long_clip_bench_scores_windows_and_memory(tmp_path):
    """bench/long_clip.py at toy size: a 16-frame sweep in windows of 8, edited whole and as 8
    frames in child processes, scored by the oracle (random weights: the scores mean nothing)."""
    with bench_script("long_clip") as long_clip:
        long_clip.main(["--frames", "16", "--windows", "8", "--tune-steps", "2", "--edit-steps", "2", "--short", "8",
                        "--model", "tiny-random", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "long.json")])
        sweep = long_clip.sweep_clip(120)
        source, target = long_clip.sweep_clip(16), long_clip.TARGET
    (row,) = json.loads((tmp_path / "long.json").read_text())["rows"]
    from contextedit.pipelines.windows import window_plan

    plan = window_plan(16, 8, 4)
    assert row["windows"] == len(plan) > 1 and row["fusion_store_mib"]["full"] == row["fusion_store_mib"]["short"]
    assert 0 < row["full"]["loaded_rss_mib"] <= row["full"]["peak_rss_mib"]
    assert row["peak_rss_ratio"] == row["full"]["peak_rss_mib"] / row["short"]["peak_rss_mib"]
    # the scores again, from the edit the bench left in --work: the share of frames the oracle
    # reads as the target, and the frame pairs with a seam between them (not both in one window)
    edited = shapes.oracle_clip(np.load(tmp_path / "work" / "edit-w8.npy"))
    src = shapes.oracle_clip(source)
    assert "a blue circle" in target
    hits = [r["colour"] == "blue" and r["shape"] == "circle" for r in edited]
    assert row["follows_prompt"] == pytest.approx(sum(hits) / len(hits), rel=np.finfo(float).eps * len(hits))
    owners = [[k for k, idx in enumerate(plan) if f in (idx if k == 0 else idx[1:])] for f in range(16)]
    seams = [f for f in range(15) if not (len(owners[f]) == 1 and owners[f] == owners[f + 1])
             and all(r["centroid"] for r in (edited[f], edited[f + 1], src[f], src[f + 1]))]
    assert row["seam_pairs"] == len(seams) > 0
    assert sweep.shape == (120, 64, 64, 3)


@pytest.mark.slow
def test_throughput_bench_runs(tmp_path):
    """bench/throughput.py at toy size: one job through `batch`'s worker pool, its breakdown, the
    N-GPU scaling and the BENCHMARKS.md block (written to a copy)."""
    with bench_script("throughput") as throughput:
        throughput.main(["--jobs", "1", "--frames", "4", "--tune-steps", "1", "--edit-steps", "1", "--workers", "1",
                         "--model", "tiny-random", "--out", str(tmp_path / "t.json")])
        doc = json.loads((tmp_path / "t.json").read_text())
        throughput.write_benchmarks(doc, tmp_path / "B.md")
    (row,) = doc["rows"]
    assert row["jobs"] == 1 and not row["failed"] and row["jobs_per_hour"] == 3600 * row["jobs"] / row["wall_s"]
    assert set(row["per_job_s"]) == {"tune", "invert", "each_prompt", "edit", "total"}
    assert 0 < row["per_job_s"]["invert"] < row["per_job_s"]["edit"] < row["per_job_s"]["total"] <= row["wall_s"]
    assert doc["scaling"]["single_worker_job_s"] == row["per_job_s"]["total"]
    assert doc["scaling"]["per_n"]["1"] == 3600 / row["per_job_s"]["total"]
    assert doc["scaling"]["per_n"]["8"] == pytest.approx(8 * doc["scaling"]["per_n"]["1"])
    block = (tmp_path / "B.md").read_text()
    assert "<!-- throughput:begin -->" in block and "jobs/h on 8" in block
    assert f"| {row['wall_s']:.0f} s | {row['jobs_per_hour']:.0f} |" in block


@pytest.mark.slow
def test_video_table_recipe_runs_every_arm(tmp_path):
    """bench/video_table.py end to end on the embedded model and tiny scorers: three arms, every column."""
    from helpers import write_clip

    write_clip(tmp_path / "clip.mp4", frames=8)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"video": "clip.mp4", "source_prompt": "a red circle moving right on a black background",
                                   "edits": [{"prompt": "a blue circle moving right on a black background", "type": "object"},
                                             {"prompt": "a red circle moving right on a white background", "type": "background"}]}))
    with bench_script("video_table") as table:
        result = table.main(["--prompts", str(prompts), "--model", "tiny", "--scorers", "tiny", "--tune-steps", "1",
                             "--edit-steps", "2", "--frames", "3", "--device", "cpu", "--out", str(tmp_path / "work"),
                             "--results", str(tmp_path / "table.json"), "--table", str(tmp_path / "table.md")])
    assert list(result["arms"]) == ["contextedit", "no-adapter", "ddim-inversion"]
    for arm in result["arms"].values():
        assert arm["edits"] == 2 and set(arm["means"]) == {"all", "object", "background"}
        assert all(value is not None for value in arm["means"]["all"].values())
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert len(lines) == 5 and "Motion (−EPE)" in lines[0]


def test_loveu_csv_becomes_a_prompt_file(tmp_path):
    csv = tmp_path / "loveu.csv"
    csv.write_text("Video name,Original Caption,Style Change Caption,Object Change Caption,Background Change Caption,"
                   "Multiple Changes Caption\nblackswan,a black swan,a black swan in Van Gogh style,a white duck,"
                   "a black swan in a pond,a duck in a pond in anime style\n,,,,,\n")
    with bench_script("loveu_prompts") as loveu:
        loveu.main([str(csv), "--videos", str(tmp_path / "frames"), "--out", str(tmp_path / "p" / "loveu.json")])
    from contextedit.prompts import load_prompt_sets

    (prompt_set,) = load_prompt_sets(tmp_path / "p" / "loveu.json")
    assert prompt_set.video == "../frames/blackswan" and prompt_set.source_prompt == "a black swan"
    assert prompt_set.types == ["style", "object", "background", "multiple"]


def test_method_table_recipes_resolve_and_the_lead_is_the_paired_difference():
    """Every recipe is a valid edit whose own settings win over the model's recommendations, with
    contextedit's own region treatment off; the table's best recipe and contextedit's lead over it
    are read off constructed rows whose answer is known."""
    from contextedit.pipelines.edit_options import EditSettings

    with bench_script("methods") as methods:
        for name, recipe in methods.RECIPES.items():
            settings = EditSettings(**methods.recipe_settings(name, "tiny")).resolve({"guidance": 3.0, "offset_inside": 0.5})
            assert all(getattr(settings, key) == value for key, value in recipe["edit"].items()), name
            assert (settings.composite, settings.background_noise, settings.background_guidance) == ("off", 0.0, 3.0)
        kinds = methods.quality.EDIT_KINDS
        success = {"a": {"adapter": 1, "Tune-A-Video": 0, "FateZero": 0}, "b": {"adapter": 1, "Tune-A-Video": 1, "FateZero": 0}}
        rows = [{"clip": clip, "variant": arm, "kind": kind, "success": ok}
                for clip, arms in success.items() for arm, ok in arms.items() for kind in kinds]
        out = methods.table({"rows": [r for r in rows if r["variant"] != "adapter"]},
                            {"rows": [r for r in rows if r["variant"] == "adapter"]})
    assert out["best_recipe"] == "Tune-A-Video"  # 0.5 against FateZero's 0
    assert out["arms"]["contextedit (defaults)"]["success_mean"]["mean"] == 1.0
    lead = out["lead_over_best_recipe"]["contextedit (defaults)"]
    assert lead["mean"] == 0.5 and lead["n"] == 2  # (1 − 0 + 1 − 1) / 2 clips


def test_the_remedies_sweep_writes_its_own_table_beside_the_settings_one(tmp_path):
    """bench/sweep.py --regions: its rows go between their own markers, and the recorded settings
    sweep's block is left as it was (it was run on an earlier model)."""
    import argparse

    with bench_script("sweep") as sweep:
        names = list(sweep.REGION_SETTINGS)[:2]
        keys = ("success_colour", "success_shape", "success_background", "success_multiple", "success_mean",
                "background_kept", "object_kept", "motion_error_px", "temporal_iou", "reconstruction_gap_db")
        results = {names[0]: {"summary": {"adapter": dict(zip(keys, (1, 0.875, 0.75, 0.625, 0.8125, 0.999, 0.96, 0.93, 0.91, -0.073)))},
                              "seconds": 160.0, "clips": 8},
                   names[1]: {"summary": {"adapter": dict(zip(keys[:4], (0.5, 0.25, 0.125, 0.0)))}, "seconds": 84.0, "clips": 8}}
        page = tmp_path / "BENCHMARKS.md"
        page.write_text("# Benchmarks\n\n<!-- sweep:begin -->\nthe issue-15 table\n<!-- sweep:end -->\n")
        args = argparse.Namespace(clips=8, tune_steps=100, edit_steps=20, work="bench/work/q")
        sweep.write_table(results, page, args, 0.0, "regions")
        sweep.plot(results, tmp_path / "plot.png", "object_kept")
    text = page.read_text()
    assert "<!-- sweep:begin -->\nthe issue-15 table\n<!-- sweep:end -->" in text
    block = text.split("<!-- sweep-regions:begin -->")[1].split("<!-- sweep-regions:end -->")[0]
    assert "`python bench/sweep.py --regions --work bench/work/q --update-docs` — 8 clips" in block
    assert "![mean edit success against object kept](bench/results/sweep-regions.png)" in block
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    assert rows == [f"| {names[0]} | 1.000 | 0.875 | 0.750 | 0.625 | 0.812 | 0.999 | 0.960 | 0.930 | 0.910 | -0.073 | 20 |",
                    f"| {names[1]} | 0.500 | 0.250 | 0.125 | 0.000 | – | – | – | – | – | – | 10 |"]
    from PIL import Image

    assert Image.open(tmp_path / "plot.png").size == (1100, 600)
