"""tune then edit on the tiny-random model: artifacts, resume, one inversion for many prompts, fusion window."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from contextedit.errors import InputError
from contextedit.fileio import load_safetensors
from contextedit.models.inflate import inflate_unet, is_inflated, load_tuned
from contextedit.pipeline import ContextEditPipeline
from contextedit.commands.edit import EditOptions, edit
from contextedit.commands.tune import TuneOptions, tune
from contextedit import video as vio

from helpers import MODEL, tiny, write_clip


def _tune(tmp_path, comps=None, **kw):
    clip = write_clip(tmp_path / "clip.mp4", frames=8)
    opts = dict(video=str(clip), prompt="a red circle moving right on a black background", frames=4, stride=2,
                steps=3, lr=1e-3, out=str(tmp_path / "run"), model=MODEL, device="cpu", checkpointing=False)
    opts.update(kw)
    return tune(TuneOptions(**opts), comps=comps)


def test_tune_writes_run_and_artifact_reproduces_predictions(tmp_path, runs):
    comps = tiny()
    result = _tune(tmp_path, comps=comps)
    run = result.run_dir
    m = result.manifest
    files = {"tuned.safetensors", "adapter", "latents.safetensors", "source.mp4", "source-frames", "manifest.json"}
    assert files <= {p.name for p in run.iterdir()}
    assert (run / "adapter" / "config.json").is_file() and (run / "adapter" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (run / "checkpoint.safetensors").exists()
    assert (m["frames"], m["width"], m["height"], m["model"]) == (4, 64, 64, MODEL)
    assert m["adapter"] and m["adapter_parameters"] > 0 and len(m["source_sha256"]) == 64
    assert (runs / "latest").read_text().strip() == str(run.resolve())
    # The caller's components are left as they were; the saved artifact on a fresh inflated UNet
    # gives the tuned UNet's predictions exactly.
    assert not is_inflated(comps.unet)
    tuned_unet = ContextEditPipeline(comps).video_unet(result.tuned)
    fresh = load_tuned(inflate_unet(tiny().unet), load_safetensors(run / "tuned.safetensors"))
    x = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(4, 77, 32, generator=torch.Generator().manual_seed(1))
    kw = dict(encoder_hidden_states=text, cross_attention_kwargs={"num_frames": 4})
    with torch.no_grad():
        assert torch.equal(tuned_unet(x, 500, **kw).sample, fresh(x, 500, **kw).sample)
    clip = vio.read_video(run / "source.mp4", frames=4, stride=1)
    assert clip.frames.shape == (4, 64, 64, 3)


def test_resume_after_interrupt_ends_on_same_weights(tmp_path, runs):
    full = _tune(tmp_path / "a", steps=4, checkpoint_every=2)
    calls = {"n": 0}

    def interrupting_progress(description, total):
        import contextlib

        @contextlib.contextmanager
        def bar():
            def advance(**_):
                calls["n"] += 1
                if calls["n"] == 2:
                    os.kill(os.getpid(), signal.SIGINT)  # taken at the end of step 2
            yield advance
        return bar()

    clip_dir = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        tune(TuneOptions(video=str(write_clip(clip_dir / "clip.mp4")), prompt="a red circle moving right on a black background",
                         frames=4, stride=2, steps=4, lr=1e-3, out=str(clip_dir / "run"), model=MODEL, device="cpu",
                         checkpointing=False, checkpoint_every=100), progress=interrupting_progress)
    assert (clip_dir / "run" / "checkpoint.safetensors").exists()
    assert not (clip_dir / "run" / "manifest.json").exists()
    resumed = tune(TuneOptions(video=str(clip_dir / "clip.mp4"), prompt="a red circle moving right on a black background",
                               frames=4, stride=2, steps=4, lr=1e-3, out=str(clip_dir / "run"), model=MODEL, device="cpu",
                               checkpointing=False, resume=True))
    for name in ("tuned.safetensors", "adapter/diffusion_pytorch_model.safetensors"):
        a, b = load_safetensors(full.run_dir / name), load_safetensors(resumed.run_dir / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # the manifest's loss curve has every step, across the interruption too
    assert len(full.manifest["loss_curve"]) == 4 and resumed.manifest["loss_curve"] == full.manifest["loss_curve"]
    assert resumed.manifest["adapter_rel_scale"] == full.manifest["adapter_rel_scale"]


def test_manifest_records_the_adapters_relative_scale(tmp_path, runs):
    m = _tune(tmp_path, steps=3).manifest
    scale = m["adapter_rel_scale"]
    assert set(scale) == {"100", "500", "900"} and all(v > 0 for v in scale.values())  # lr 1e-3 moved the zero head
    assert len(m["loss_curve"]) == 3 and m["final_loss"] == m["loss_curve"][-1]
    assert _tune(tmp_path / "b", adapter=False).manifest["adapter_rel_scale"] is None


def _count_unet_calls(comps):
    """The batch of each UNet call. A forward pre-hook (not a patched ``forward``: the video UNet is
    a copy whose patched attribute would call the 2-D original) goes into the copy with the module."""
    calls = []

    def counting(module, args, kwargs):
        assert module is not comps.unet, "the edit ran the 2-D UNet, not the tuned video copy"
        calls.append((args[0] if args else kwargs["sample"]).shape[0])
    comps.unet.register_forward_pre_hook(counting, with_kwargs=True)
    return calls


def test_two_prompts_one_inversion_and_outputs_decode(tmp_path, runs):
    _tune(tmp_path)
    comps = tiny()
    calls = _count_unet_calls(comps)
    prompts = ["a blue circle moving right on a black background", "a red square moving right on a white background"]
    result = edit(EditOptions(prompts=prompts, steps=4, device="cpu"), comps=comps)  # no --run: the latest
    assert len(result.files) == 2 and all(p.exists() for p in result.files)
    # one inversion (batch F) and one guided source-branch replay (direct inversion, batch 2F), then
    # per prompt: the region probe (one call per change group at each probed step, batch 2F) and T
    # guided calls (batch 2F); a prompt whose groups edit both sides runs one pass per side, each with
    # its own probe. At T = 4 the probe's fractions 0, 0.1 and 0.2 of T all fall on step 0: one step.
    expected = 0
    for output in result.record["outputs"]:
        sides = [r["side"] for r in output["control"]["regions"]]
        expected += len(sides) + 4
        if len(set(sides)) > 1:
            expected += 4 + len(sides)
    assert calls == [4] * 4 + [8] * 4 + [8] * expected
    for path in result.files:
        clip = vio.read_video(path, frames=4, stride=1)
        # every 2nd frame of an 8 fps source plays at 4 fps: the clip's own time (issue 29)
        assert clip.frames.shape == (4, 64, 64, 3) and clip.fps == pytest.approx(8.0 / 2)
    record = result.record
    assert [o["prompt"] for o in record["outputs"]] == prompts
    assert record["timings"]["inversion_s"] > 0 and len(record["timings"]["sampling_s_per_prompt"]) == 2
    assert (result.out_dir / "edits.json").exists()


@pytest.mark.slow
def test_ablations_change_the_result_and_seed_reproduces(tmp_path, runs):
    _tune(tmp_path)
    prompt = ["a blue circle moving right on a black background"]

    def frames(name, **kw):
        result = edit(EditOptions(prompts=prompt, steps=4, device="cpu", out=str(tmp_path / name), format="frames", **kw))
        return vio.read_video(result.files[0], frames=4, stride=1).frames

    base = frames("base")
    assert (base == frames("again")).all()
    assert not (base == frames("nofusion", fusion=False)).all()
    assert not (base == frames("noadapter", adapter=False)).all()


def test_edit_without_any_run_is_a_clear_error(tmp_path, runs):
    with pytest.raises(InputError, match="contextedit tune"):
        edit(EditOptions(prompts=["a cat"], device="cpu"))


def test_tune_is_reproducible_from_its_seed_on_the_trained_tiny(tmp_path, runs):
    """The new temporal layers and the adapter start from --seed, not from the global RNG (the
    trained ``tiny`` loads from its folder without touching the RNG, unlike tiny-random)."""
    def weights(name, seed, caller_seed):
        torch.manual_seed(caller_seed)  # whatever the caller's RNG holds must not matter
        run = _tune(tmp_path / name, model="tiny", seed=seed).run_dir
        return {f: load_safetensors(run / f) for f in ("tuned.safetensors", "adapter/diffusion_pytorch_model.safetensors")}

    a, b, c = weights("a", 0, caller_seed=1), weights("b", 0, caller_seed=2), weights("c", 1, caller_seed=1)
    for name in a:
        assert a[name].keys() == b[name].keys() == c[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
        assert not all(torch.equal(a[name][k], c[name][k]) for k in a[name]), name


def test_seeded_build_leaves_the_global_rng_alone():
    from contextedit.pipelines.tuning import build_video_model

    comps = tiny()
    state = torch.random.get_rng_state()
    _, adapter = build_video_model(comps, True, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    _, again = build_video_model(tiny(), True, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(adapter.state_dict().values(), again.state_dict().values()))
