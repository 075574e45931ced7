"""The source branch an edit fuses (issue 31): live in each step's UNet batch, or stored once."""

from __future__ import annotations

import json

import pytest
import torch

from contextedit.attention.fusion import FusionStore
from contextedit.models.adapter import ContextAdapter, config_for_unet
from contextedit.models.inflate import inflate_unet
from contextedit.pipelines import editing
from contextedit.pipelines.common import encode_text
from contextedit.pipelines.edit_options import EditSettings
from contextedit.pipelines.prompt_control import prompt_control
from contextedit.pipelines.common import token_ids
from contextedit.pipelines.source_branch import STORE_SHARE, choose_source, store_bytes
from contextedit.schedulers import ContextualDDIMScheduler

from helpers import F32_EPS, tiny

SOURCE = "a red circle moving right on a black background"
TARGET = "a blue circle moving right on a black background"
FRAMES, T = 3, 4


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    comps = tiny()
    unet = inflate_unet(comps.unet)
    for name, p in unet.named_parameters():  # temporal layers start at zero: give them weight, so clips mix frames
        if "temporal" in name:
            p.data.normal_(0, 0.05)
    adapter = ContextAdapter(**config_for_unet(comps.unet)).eval()
    latents = torch.randn(FRAMES, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    return comps, unet.eval(), adapter, latents


def _edit(parts, source: str, *, prompt=TARGET, adapter=True, **kw):
    """One prompt's edited latents, through prepare_source and sample_edit (what edit_clip runs)."""
    comps, unet, model_adapter, x0 = parts
    adapter = model_adapter if adapter else None
    opts = EditSettings(steps=T, source=source, **kw).resolve()
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(T)
    src_text, uncond, text = (encode_text(comps, [p]) for p in (SOURCE, "", prompt))
    src_ids = token_ids(comps.tokenizer, [SOURCE])[0]
    source_pass = editing.prepare_source(unet, scheduler, x0, src_text, uncond, opts, adapter=adapter,
                                         source_prompt=SOURCE, live=source == "live")
    control = prompt_control(comps.tokenizer, src_ids, prompt, opts, tuple(x0.shape[-2:]), None, source_prompt=SOURCE)
    out = editing.sample_edit(unet, scheduler, source_pass, text, uncond, opts, control, adapter=adapter)
    return out, source_pass


def _tol(*tensors) -> float:
    # T sampling steps, each a UNet of ~10² float32 ops on the longest chain, batched differently
    # (the live batch is larger): rounding, not maths, tells the two apart.
    return 100 * T * F32_EPS * max(float(t.abs().max()) for t in tensors)


@pytest.mark.parametrize("inversion", ["direct", "direct-one-pass", "ddim",
                                       pytest.param("null-text", marks=pytest.mark.slow)])  # null-text: 6 s
def test_live_and_stored_give_the_same_latents(parts, inversion):
    kw = dict(inversion=inversion, null_text_steps=2, self_fusion=0.75, cross_fusion=0.5)
    stored, stored_pass = _edit(parts, "stored", **kw)
    live, live_pass = _edit(parts, "live", **kw)
    assert live_pass.store is None and stored_pass.store.nbytes > 0  # live keeps no store
    torch.testing.assert_close(live, stored, rtol=0, atol=_tol(stored))
    # the test can tell: without the source's attention the latents move by far more than that
    unfused, _ = _edit(parts, "stored", **{**kw, "fusion": False, "blend": False})
    assert (unfused - stored).abs().max() > 100 * _tol(stored)


@pytest.mark.parametrize("source", ["live", "stored"])
def test_direct_inversion_reconstructs_the_source_exactly(parts, source):
    """Sampling the source prompt with direct inversion's offsets lands on x0 (guidance 7.5), live
    or stored, in either form of the source pass."""
    x0 = parts[3]
    for inversion in ("direct", "direct-one-pass"):
        out, _ = _edit(parts, source, prompt=SOURCE, inversion=inversion, blend=False)
        torch.testing.assert_close(out, x0, rtol=0, atol=_tol(x0))
    drift, _ = _edit(parts, source, prompt=SOURCE, inversion="ddim", blend=False)
    assert (drift - x0).abs().max() > 100 * _tol(x0)  # plain DDIM under guidance does not


def test_store_estimate_is_what_the_stored_branch_records(parts):
    _, stored_pass = _edit(parts, "stored", inversion="direct", self_fusion=0.5, cross_fusion=0.5, blend=False)
    comps, unet, _, x0 = parts
    estimate = store_bytes(unet, FRAMES, tuple(x0.shape[-2:]), self_steps=2, cross_steps=2, dtype=torch.float32)
    text = stored_pass.store.source_text_states
    assert estimate == stored_pass.store.nbytes - text.nbytes  # the text states are the only extra
    assert store_bytes(unet, FRAMES, (16, 16), 2, 2, torch.float16) * 2 == estimate


def test_auto_picks_live_when_the_store_would_not_fit():
    gib = 2**30
    needed = 14 * gib  # a 16-frame window at 512², T = 20, fp16 (docs: benchmarks)
    assert choose_source("auto", needed, free=24 * gib) == "live"       # 14 > half of a 24 GiB card's free memory
    assert choose_source("auto", needed, free=80 * gib) == "stored"     # an 80 GiB card keeps it
    assert choose_source("auto", int(STORE_SHARE * 28 * gib), free=28 * gib) == "stored"  # the boundary keeps it
    assert choose_source("live", 1, free=80 * gib) == "live" and choose_source("stored", needed, 1) == "stored"


def test_store_kept_nowhere_in_live_mode(parts, monkeypatch):
    """No FusionStore outlives the layer call that made it (weak references after the edit)."""
    import weakref

    made = []
    init = FusionStore.__init__

    def tracked(self, *a, **k):
        init(self, *a, **k)
        made.append(weakref.ref(self))
    monkeypatch.setattr(FusionStore, "__init__", tracked)
    out, live_pass = _edit(parts, "live", inversion="direct")
    import gc

    gc.collect()
    assert made and all(ref() is None or ref() is live_pass.store for ref in made)
    assert live_pass.store is None


def test_edit_records_the_branch_it_chose(tmp_path, runs):
    from contextedit.commands.edit import EditOptions, edit
    from helpers import MODEL, write_clip
    from contextedit.commands.tune import TuneOptions, tune

    clip = write_clip(tmp_path / "clip.mp4", frames=4)
    run = tune(TuneOptions(video=str(clip), prompt=SOURCE, frames=2, stride=2, steps=1, out=str(tmp_path / "run"),
                           model=MODEL, device="cpu", checkpointing=False)).run_dir
    comps = tiny()
    files = {}
    for source in ("live", "auto"):
        edit(EditOptions(prompts=[TARGET], run=str(run), steps=2, source=source, device="cpu",
                                  out=str(tmp_path / source), format="frames"), comps=comps)
        record = json.loads((tmp_path / source / "edits.json").read_text())
        assert record["settings"]["source"] == source
        files[source] = record["timings"]["source"]
        assert (record["timings"]["fusion_store_mib"] == 0) == (files[source] == "live")
    assert files == {"live": "live", "auto": "stored"}  # the tiny store fits anywhere


def test_one_guided_pass_is_the_inversion_and_the_replay(parts):
    """guided_inversion equals the two passes written out here (each level inverted with ε at its
    own timestep, then replay_source on those levels), with UNet calls of F + T·2F frames in all
    where the two passes make T·F + T·2F."""
    from contextedit.pipelines.inversion import guided_inversion, replay_source
    from contextedit.pipelines.loop import Denoiser, context_for

    comps, unet, adapter, x0 = parts
    scheduler = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    scheduler.set_timesteps(T)
    src_text, uncond = (encode_text(comps, [p]) for p in (SOURCE, ""))
    batches = []
    hook = unet.register_forward_pre_hook(
        lambda m, args, kwargs: batches.append((args[0] if args else kwargs["sample"]).shape[0]), with_kwargs=True)
    try:
        levels, outputs = guided_inversion(unet, scheduler, x0, src_text, uncond, adapter=adapter)
    finally:
        hook.remove()
    assert batches == [FRAMES] + [2 * FRAMES] * T

    context = context_for(adapter, x0, src_text, FRAMES, fixed=True)
    reference, x = [x0], x0
    with torch.no_grad():
        for j, t in enumerate(scheduler.timesteps.flip(0)):
            own = t if j == 0 else scheduler.timesteps[T - j]  # level j's timestep: sampling step T−j's
            x, _ = scheduler.invert_step(Denoiser(unet, src_text, num_frames=FRAMES)(x, own), int(t), x, context=context,
                                         return_dict=False)
            reference.append(x)
    replayed = replay_source(unet, scheduler, reference, src_text, uncond)
    for got, want in zip(levels, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=_tol(want))
    for got, want in zip(outputs, replayed):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=_tol(w))
