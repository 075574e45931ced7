"""Editing controls (issue 15): fusion windows and the step pairing, inversion modes that hold under
guidance, blend masks, user masks, the model's recommended defaults."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from contextedit import video as vio
from contextedit.testing import shapes
from contextedit.attention.fusion import FusionStore
from contextedit.errors import InputError, UsageError
from contextedit.models.loading import load_components, save_components
from contextedit.pipelines import editing as edit_module
from contextedit.pipelines.common import decode_latents, encode_latents
from contextedit.commands.edit import EditOptions, edit
from contextedit.commands.tune import TuneOptions, tune

from helpers import MODEL, tiny, write_clip

SOURCE = "a red circle moving right on a black background"


def _tune(tmp_path, model=MODEL, frames=4, steps=3, **kw):
    clip = write_clip(tmp_path / "clip.mp4", frames=2 * frames)
    return tune(TuneOptions(video=str(clip), prompt=SOURCE, frames=frames, stride=2, steps=steps, lr=1e-3,
                            out=str(tmp_path / "run"), model=model, device="cpu", checkpointing=False, **kw)).run_dir


def _spy(monkeypatch, comps):
    """Log every UNet call's timestep, and which store keys are written and read during which call."""
    calls, writes, reads = [], [], []
    comps.unet.register_forward_pre_hook(lambda module, args: calls.append(int(args[1])))
    put_self, get_self, get_cross = FusionStore.put_self, FusionStore.self_attention, FusionStore.cross_query

    def logged_put(store, layer, step, q, k):
        writes.append((len(calls) - 1, step))
        return put_self(store, layer, step, q, k)

    def logged_self(store, layer, step):
        reads.append(("self", len(calls) - 1, step))
        return get_self(store, layer, step)

    def logged_cross(store, layer, step):
        reads.append(("cross", len(calls) - 1, step))
        return get_cross(store, layer, step)
    monkeypatch.setattr(FusionStore, "put_self", logged_put)
    monkeypatch.setattr(FusionStore, "self_attention", logged_self)
    monkeypatch.setattr(FusionStore, "cross_query", logged_cross)
    return calls, writes, reads


@pytest.mark.parametrize("inversion", ["ddim", "direct"])
def test_fusion_windows_and_the_step_pairing(tmp_path, runs, monkeypatch, inversion):
    _tune(tmp_path)
    comps = tiny()
    calls, writes, reads = _spy(monkeypatch, comps)
    T = 6
    edit(EditOptions(prompts=["a blue circle moving right on a black background"], steps=T, device="cpu",
                     inversion=inversion, self_fusion=0.5, cross_fusion=1 / 3, blend=False, out=str(tmp_path / "e")),
         comps=comps)
    # The reference: diffusers' own DDIM timesteps. Sampling step i runs at timesteps[i]; inversion
    # step j at timesteps[T-1-j]; the direct replay's step i at timesteps[i].
    reference = DDIMScheduler.from_config(comps.scheduler_config)
    reference.set_timesteps(T)
    timesteps = reference.timesteps.tolist()
    source_calls = T if inversion == "ddim" else 2 * T  # inversion, then (direct) the source replay
    sampling = calls[source_calls:]
    assert sampling == timesteps
    # what was recorded under key i was recorded at sampling step i's timestep
    recorded = {step: calls[call] for call, step in writes}
    assert recorded == {i: timesteps[i] for i in range(3)}  # the windows' union: max(3, 2) steps
    if inversion == "ddim":
        assert {step: call for call, step in writes} == {i: T - 1 - i for i in range(3)}  # inversion step T-1-i
    # each sampling step i reads key i, self-attention for i < 3, cross-attention for i < 2
    for kind, window in (("self", 3), ("cross", 2)):
        read = {(call - source_calls, step) for k, call, step in reads if k == kind}
        assert read == {(i, i) for i in range(window)}, kind


@pytest.mark.slow
def test_direct_inversion_reconstructs_the_source_under_guidance(tmp_path, runs):
    """The embedded model, guidance 7.5: sampling the source prompt returns the inverted latents,
    so the frames equal the VAE round trip of source.mp4 (to float error); plain DDIM drifts."""
    run = _tune(tmp_path, model="tiny", frames=4, steps=2)
    comps = load_components("tiny", "cpu", torch.float32)
    source = vio.read_video(run / "source.mp4", frames=4, stride=1).frames
    with torch.no_grad():
        round_trip = vio.to_frames(decode_latents(comps.vae, encode_latents(comps.vae, vio.to_tensor(source))))

    def psnr(frames):
        mse = [np.mean((a.astype(float) - b.astype(float)) ** 2) for a, b in zip(frames, source)]
        return float(np.mean([10 * np.log10(255**2 / max(m, 1e-10)) for m in mse]))

    def reconstruction(inversion, prompts=(SOURCE,), name=None, **kw):  # one inversion serves every prompt
        result = edit(EditOptions(prompts=list(prompts), run=str(run), guidance=7.5, inversion=inversion, format="frames",
                                  steps=10, out=str(tmp_path / (name or inversion)), device="cpu", **kw), comps=comps)
        assert result.record["settings"]["inversion"] == inversion
        frames = [vio.read_video(path, frames=4, stride=1).frames for path in result.files]
        return frames if len(prompts) > 1 else frames[0]

    blue = "a blue circle moving right on a black background"
    direct, plain = reconstruction("direct", prompts=(SOURCE, blue))
    from contextedit.fileio import load_safetensors

    with torch.no_grad():  # the run's own latents, decoded: what an exact reconstruction gives
        decoded = vio.to_frames(decode_latents(comps.vae, load_safetensors(run / "latents.safetensors")["latents"]))
    assert np.abs(direct.astype(int) - decoded.astype(int)).max() <= 1  # uint8 rounding of equal floats
    # the adapter's bias guided like the noise: the source branch uses it too, so still exact ...
    guided_bias, guided = reconstruction("direct", prompts=(SOURCE, blue), name="direct-cg", context_guidance=4.0)
    assert np.abs(guided_bias.astype(int) - decoded.astype(int)).max() <= 1
    # ... while a target prompt's edit moves with it (the base adapter reads the text)
    assert np.abs(plain.astype(int) - guided.astype(int)).max() > 0
    # source.mp4 went through the codec after encoding, so the round trip of its frames differs a little
    assert psnr(direct) == pytest.approx(psnr(round_trip), abs=0.5)
    assert psnr(reconstruction("ddim", blend=False)) < psnr(round_trip) - 1.0  # the drift direct inversion removes


def _object_masks(run, frames=8):
    clip = vio.read_video(run / "source.mp4", frames=frames, stride=1).frames
    return np.stack([r["mask"] for r in shapes.oracle_clip(clip)])


def _latent_mask(mask: torch.Tensor) -> np.ndarray:
    """(F, 1, 16, 16) latent mask → (F, 64, 64) pixels."""
    return mask[:, 0].repeat_interleave(4, 1).repeat_interleave(4, 2).numpy() > 0.5


@pytest.mark.slow
def test_the_region_is_the_object_for_an_attribute_edit_and_the_rest_for_a_background_edit(tmp_path, runs, monkeypatch):
    run = _tune(tmp_path, model="tiny", frames=8, steps=2)
    controls = []
    build = edit_module.prompt_control
    monkeypatch.setattr(edit_module, "prompt_control", lambda *a, **k: controls.append(build(*a, **k)) or controls[-1])
    edit(EditOptions(prompts=["a blue circle moving right on a black background",
                              "a red circle moving right on a white background"], run=str(run), steps=10,
                     format="frames", out=str(tmp_path / "e"), device="cpu"))
    objects = _object_masks(run)
    colour, background = (_latent_mask(c.blend.mask()) for c in controls)
    assert not controls[0].blend.words.invert and controls[1].blend.words.invert
    near, core = shapes.grow_mask(objects, 8), ~shapes.grow_mask(~objects, 2)  # a latent cell (4 px) of slack, twice; the object's core
    # attribute edit: the mask covers the object and stays near it (it is grown by one latent cell)
    assert (colour & objects).sum() / objects.sum() > 0.9
    assert (colour & ~near).sum() / (~near).sum() < 0.1  # measured 0.07: spots on the frame border
    # background edit: the editable region is the background, and spares the object's core
    assert (background & core).sum() / core.sum() < 0.1
    assert (background & ~near).sum() / (~near).sum() > 0.9
    assert controls[0].local_blend("auto") and controls[1].local_blend("auto")  # the object kept, the seam healed after decoding
    assert [g.side for g in controls[0].groups] == ["inside"] and [g.side for g in controls[1].groups] == ["outside"]


@pytest.mark.slow
def test_user_mask_limits_the_edit_to_its_region(tmp_path, runs):
    run = _tune(tmp_path)
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[:, :32] = 255  # the left half may change
    from PIL import Image

    Image.fromarray(mask).save(tmp_path / "mask.png")
    opts = dict(prompts=["a blue square moving right on a white background"], run=str(run), steps=4, format="frames",
                device="cpu", local_blend="on")
    plain = edit(EditOptions(**opts, out=str(tmp_path / "a"), blend=False))
    masked = edit(EditOptions(**opts, out=str(tmp_path / "b"), mask=str(tmp_path / "mask.png")))
    recon = edit(EditOptions(**{**opts, "prompts": [SOURCE]}, out=str(tmp_path / "c"), blend=False))
    read = lambda r: vio.read_video(r.files[0], frames=4, stride=1).frames.astype(int)  # noqa: E731
    a, b, c = read(plain), read(masked), read(recon)
    # outside the mask the masked edit is the reconstruction (the source), inside it the edit may differ
    assert np.abs(b[:, :, 40:] - c[:, :, 40:]).mean() < np.abs(a[:, :, 40:] - c[:, :, 40:]).mean()
    assert masked.record["outputs"][0]["control"]["mask"] == "user"
    with pytest.raises(InputError, match="`mask`"):
        edit(EditOptions(**opts, out=str(tmp_path / "d"), mask=str(tmp_path / "missing.png")))


def test_reweight_names_a_word_of_the_prompt(tmp_path, runs):
    run = _tune(tmp_path)
    with pytest.raises(InputError, match="not in the target prompt"):
        edit(EditOptions(prompts=["a blue circle"], run=str(run), steps=2, device="cpu", reweight=["green=2"],
                         out=str(tmp_path / "e")))
    result = edit(EditOptions(prompts=["a blue circle"], run=str(run), steps=2, device="cpu", reweight=["blue=2"],
                              out=str(tmp_path / "e")))
    assert result.record["settings"]["reweight"] == ["blue=2"]


@pytest.mark.slow
def test_the_model_folder_recommends_defaults_and_flags_override_them(tmp_path, runs):
    # the embedded trained model: which region a changed word edits is read from the model itself
    folder = save_components(load_components("tiny", "cpu", torch.float32), tmp_path / "model")
    (folder / "contextedit.json").write_text(json.dumps({"edit": {"guidance": 3.0, "inversion": "ddim",
                                                                  "background_guidance": 6.0, "region_attention": "less"}}))
    run = _tune(tmp_path, model=str(folder))
    common = dict(prompts=["a blue circle"], run=str(run), steps=2, device="cpu")
    recommended = edit(EditOptions(**common, out=str(tmp_path / "a"))).record["settings"]
    assert (recommended["guidance"], recommended["inversion"]) == (3.0, "ddim")
    # a background edit takes the background setting, an attribute edit the general one
    kinds = edit(EditOptions(**{**common, "steps": 10, "prompts": ["a blue circle moving right on a black background",
                                                      "a red circle moving right on a white background"]},
                             out=str(tmp_path / "kinds"))).record["outputs"]
    assert [o["guidance"] for o in kinds] == [3.0, 6.0]
    flagged = edit(EditOptions(**common, guidance=5.0, out=str(tmp_path / "b"))).record["settings"]
    assert (flagged["guidance"], flagged["inversion"]) == (5.0, "ddim")
    (folder / "contextedit.json").write_text(json.dumps({"edit": {"guidance_scale": 3.0}}))
    with pytest.raises(UsageError, match="guidance_scale"):
        edit(EditOptions(**common, out=str(tmp_path / "c")))


@pytest.mark.slow
def test_null_text_is_cached_in_the_run(tmp_path, runs):
    run = _tune(tmp_path)
    opts = dict(prompts=["a blue circle"], run=str(run), steps=3, device="cpu", inversion="null-text", null_text_steps=2)
    first = edit(EditOptions(**opts, out=str(tmp_path / "a"), format="frames"))
    cached = list(run.glob("null-text-*.safetensors"))
    assert len(cached) == 1 and "null_text_s" in first.record["timings"]
    second = edit(EditOptions(**opts, out=str(tmp_path / "b"), format="frames"))
    assert "null_text_s" not in second.record["timings"]  # read back, not optimised again
    a, b = (vio.read_video(r.files[0], frames=4, stride=1).frames for r in (first, second))
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_a_background_edit_takes_its_own_cross_fusion_window(tmp_path, runs, monkeypatch):
    """--background-cross-fusion: the cross-attention window of an edit whose changed words edit the
    rest of the frame; any other edit keeps --cross-fusion (issue 27: per-region settings). With the
    full prompt sampled: the background's words alone have no word swap to fuse."""
    from contextedit.pipelines.prompt_control import PromptControl

    run, comps = _tune(tmp_path), tiny()
    fused, real = [], edit_module.FusionPlan
    monkeypatch.setattr(edit_module, "FusionPlan", lambda **kw: fused.append(kw["cross_attention"]) or real(**kw))
    T = 6
    for background, window in ((False, 2), (True, 4)):  # 1/3 of 6 steps is 2, 2/3 is 4, from the noisy end
        monkeypatch.setattr(PromptControl, "background", property(lambda self, b=background: b))  # the side, fixed
        fused.clear()
        result = edit(EditOptions(prompts=["a blue circle moving right on a black background"], run=str(run), steps=T,
                                  device="cpu", cross_fusion=1 / 3, background_cross_fusion=2 / 3,
                                  background_prompt="full", out=str(tmp_path / f"e{window}")), comps=comps)
        assert fused == [i < window for i in range(T)], background
    assert result.record["settings"]["background_cross_fusion"] == pytest.approx(2 / 3)
