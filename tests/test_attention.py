"""Inflated UNet (sparse-causal + temporal attention), tuned-weight round trip, and attention fusion."""

import pytest
import torch

from contextedit.attention import (
    CrossAttnProcessor,
    FusionPlan,
    FusionStore,
    InflatedSelfAttnProcessor,
    fuse_attention,
    record_attention,
    prompt_edit,
    sparse_causal_kv,
)
from diffusers.models.attention_processor import AttnProcessor2_0

from contextedit.attention.control import PromptEdit
from contextedit.attention.fusion import FusingProcessor
from contextedit.errors import InputError, UsageError
from contextedit.fileio import load_safetensors, save_safetensors
from contextedit.models.inflate import inflate_unet, is_inflated, load_tuned, mark_trainable, trainable_parameters, tuned_state_dict
from contextedit.testing.tiny import tiny_unet

FRAMES = 3


def inputs(frames: int = FRAMES, identical: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1 if identical else frames, 4, 16, 16, generator=g).expand(frames, -1, -1, -1).contiguous()
    text = torch.randn(1, 77, 32, generator=g).expand(frames, -1, -1)
    return latents, text


def predict(unet, latents, text, frames=FRAMES):
    with torch.no_grad():
        return unet(latents, 500, text, cross_attention_kwargs={"num_frames": frames}).sample


def randomise_temporal(unet, seed: int = 3):
    """Stand-in for tuning: non-zero temporal output projections."""
    torch.manual_seed(seed)
    for name, p in trainable_parameters(unet).items():
        if "temporal.to_out" in name:
            torch.nn.init.normal_(p, std=0.05)


@pytest.fixture(scope="module")
def plain():
    return tiny_unet()


@pytest.fixture
def inflated():
    return inflate_unet(tiny_unet())


def test_sparse_causal_gather_picks_first_and_previous_frame():
    x = torch.arange(6.0).view(6, 1, 1)  # 2 clips of 3 frames, one token each
    gathered = sparse_causal_kv(x, 3).squeeze(-1).tolist()
    assert gathered == [[0, 0], [0, 0], [0, 1], [3, 3], [3, 3], [3, 4]]
    assert sparse_causal_kv(x, 1) is x


@pytest.mark.parametrize("frames", [2, 3, 4, 6])
def test_sparse_causal_attention_equals_the_gathered_keys(frames):
    """Frames 0 and 1 attend to frame 0 once instead of twice: the same softmax, fewer keys."""
    from diffusers.models.attention_processor import Attention

    from contextedit.attention.processors import sdpa

    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=8).double()
    q, k, v = (torch.randn(2 * frames, 10, 32, dtype=torch.float64) for _ in range(3))
    reference = sdpa(attn, q, sparse_causal_kv(k, frames), sparse_causal_kv(v, frames))
    out = InflatedSelfAttnProcessor().attend(attn, q, k, v, None, frames)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)


def test_processors_installed_and_weights_unchanged(plain, inflated):
    processors = inflated.attn_processors
    assert all(isinstance(p, InflatedSelfAttnProcessor) for n, p in processors.items() if "attn1" in n)
    assert all(isinstance(p, CrossAttnProcessor) for n, p in processors.items() if "attn2" in n)
    assert is_inflated(inflated) and not is_inflated(plain)
    # every 2-D weight keeps its name and shape: pretrained weights load before inflation
    assert inflated.load_state_dict(plain.state_dict(), strict=False).unexpected_keys == []


def test_single_frame_equals_the_2d_unet(plain, inflated):
    latents, text = inputs(frames=1)
    with torch.no_grad():
        reference = plain(latents, 500, text).sample
    torch.testing.assert_close(predict(inflated, latents, text, frames=1), reference, rtol=0, atol=1e-5)


def test_identical_frames_give_the_2d_output_per_frame(plain, inflated):
    latents, text = inputs(identical=True)
    with torch.no_grad():
        reference = plain(latents[:1], 500, text[:1]).sample
    out = predict(inflated, latents, text)
    torch.testing.assert_close(out, reference.expand_as(out), rtol=0, atol=1e-5)


def test_frame_zero_ignores_later_frames(inflated):
    latents, text = inputs()
    changed = latents.clone()
    changed[1:] = torch.randn_like(changed[1:])
    base, other = predict(inflated, latents, text), predict(inflated, changed, text)
    torch.testing.assert_close(other[0], base[0], rtol=0, atol=1e-5)
    assert not torch.allclose(other[2], base[2], atol=1e-4)


def test_temporal_layers_mix_frames_once_tuned(inflated):
    randomise_temporal(inflated)
    latents, text = inputs()
    changed = latents.clone()
    changed[2] += 1.0
    assert not torch.allclose(predict(inflated, changed, text)[0], predict(inflated, latents, text)[0], atol=1e-5)


def test_trainable_parameters_are_queries_and_temporal_layers(inflated):
    names = list(mark_trainable(inflated))
    assert names and all(n.endswith("to_q.weight") or ".attn1.temporal." in n for n in names)
    assert any(".attn1.to_q." in n for n in names) and any(".attn2.to_q." in n for n in names)
    assert any("temporal.to_out.bias" in n for n in names)
    trainable = {n for n, p in inflated.named_parameters() if p.requires_grad}
    assert trainable == set(names)


def test_tuned_weights_round_trip_exactly(tmp_path, inflated):
    randomise_temporal(inflated)
    for name, p in trainable_parameters(inflated).items():
        if name.endswith("attn2.to_q.weight"):
            p.data.add_(0.01)
    save_safetensors(tuned_state_dict(inflated), tmp_path / "tuned.safetensors")

    fresh = inflate_unet(tiny_unet())
    load_tuned(fresh, load_safetensors(tmp_path / "tuned.safetensors"))
    latents, text = inputs()
    assert torch.equal(predict(fresh, latents, text), predict(inflated, latents, text))


def test_load_tuned_refuses_a_mismatching_artifact(inflated):
    state = tuned_state_dict(inflated)
    with pytest.raises(InputError):
        load_tuned(inflated, {k: v for k, v in list(state.items())[1:]})
    with pytest.raises(InputError):
        load_tuned(inflate_unet(tiny_unet(), temporal=False), state)


def test_processor_swaps_keep_the_temporal_layers(inflated):
    """Temporal layers are submodules, not processor state: diffusers' processor swaps keep their
    weights (state_dict keys unchanged) and their output; re-inflating restores sparse-causal."""
    randomise_temporal(inflated)
    keys = list(inflated.state_dict())
    x, t, text = torch.randn(4, 4, 16, 16), torch.tensor(10), torch.randn(4, 77, 32)
    kwargs = {"num_frames": 4}
    with torch.no_grad():
        before = inflated(x, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample
        inflated.set_attn_processor(AttnProcessor2_0())  # diffusers refuses to reset processors it does not know
        assert list(inflated.state_dict()) == keys
        inflated.set_default_attn_processor()
        assert list(inflated.state_dict()) == keys
        plain = inflated(x, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample
        inflate_unet(inflated)
        assert list(inflated.state_dict()) == keys
        after = inflated(x, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample
    torch.testing.assert_close(after, before)
    assert not torch.allclose(plain, before)  # sparse-causal attention is the processors' behaviour


def test_shared_copy_shares_frozen_weights_and_leaves_the_original(plain):
    from contextedit.models.inflate import shared_copy

    keys = set(plain.state_dict())
    plain.requires_grad_(True)  # the caller's flags, whatever they are, stay theirs
    video = inflate_unet(shared_copy(plain))
    mark_trainable(video)
    assert set(plain.state_dict()) == keys and not is_inflated(plain)
    assert all(p.requires_grad for p in plain.parameters())
    plain.requires_grad_(False)
    assert video.conv_in.weight.data_ptr() == plain.conv_in.weight.data_ptr()  # shared storage, own Parameter
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert video.get_parameter(q) is not plain.get_parameter(q)


def test_gradient_checkpointing_backward_reaches_tuned_parameters(inflated):
    tuned = mark_trainable(inflated)
    inflated.enable_gradient_checkpointing()
    inflated.train()
    randomise_temporal(inflated)
    latents, text = inputs()
    out = inflated(latents, 500, text, cross_attention_kwargs={"num_frames": FRAMES}).sample
    out.square().mean().backward()
    assert all(p.grad is not None for p in tuned.values())
    for kind in ("attn1.to_q", "attn2.to_q", "temporal.to_out", "temporal.to_q"):
        assert any(p.grad.abs().sum() > 0 for n, p in tuned.items() if kind in n), kind


# --------------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------------
def test_prompt_edit_maps_shared_words_swaps_and_refines():
    # BOS a big cat EOS pad pad  vs  BOS a dog EOS pad pad pad: "big cat" → "dog" is an insertion of another length
    source = [100, 1, 7, 3, 101, 101, 101]
    target = [100, 1, 4, 101, 101, 101, 101]
    edit = prompt_edit(source, target)
    assert edit.mapping.tolist() == [0, 1, -1, 4, 5, 6, -1] and edit.new == [2, 6] and edit.swapped == []  # 6: the extra padding
    assert edit.source_changed == [2, 3]
    assert prompt_edit(source, source).mapping.tolist() == list(range(7))
    # BOS a red circle EOS vs BOS a blue circle EOS: a word swap, same place, same length
    swap = prompt_edit([100, 1, 5, 9, 101], [100, 1, 6, 9, 101], new_word_weight=2.0)
    assert swap.mapping.tolist() == [0, 1, 2, 3, 4] and swap.swapped == [2] and swap.source_changed == [2]
    assert swap.weights.tolist() == [1, 1, 2, 1, 1]


def test_word_swap_gives_the_target_token_exactly_the_source_tokens_map():
    g = torch.Generator().manual_seed(0)
    source_probs = torch.rand(2, 4, 16, 5, generator=g).softmax(-1)
    target_probs = torch.rand(2, 4, 16, 5, generator=g).softmax(-1)
    swap = prompt_edit([100, 1, 5, 9, 101], [100, 1, 6, 9, 101])
    fused = swap.apply(source_probs, target_probs)
    assert torch.equal(fused[..., 2], source_probs[..., 2])  # "blue" takes "red"'s map
    assert torch.equal(fused, source_probs)  # every token is matched or swapped here
    insert = prompt_edit([100, 1, 9, 101, 101], [100, 1, 6, 9, 101])  # "a circle" → "a blue circle"
    fused = insert.apply(source_probs, target_probs)
    assert torch.equal(fused[..., 2], target_probs[..., 2])  # refine: the new word keeps its own map
    assert torch.equal(fused[..., 3], source_probs[..., 2])  # "circle" moved one place right
    weighted = prompt_edit([100, 1, 5, 9, 101], [100, 1, 6, 9, 101], reweight={2: 3.0}).apply(source_probs, target_probs)
    assert torch.equal(weighted[..., 2], 3.0 * source_probs[..., 2])


def test_record_then_fuse_on_the_same_pass_changes_nothing(inflated):
    randomise_temporal(inflated)
    latents, text = inputs()
    originals = dict(inflated.attn_processors)
    reference = predict(inflated, latents, text)

    store = FusionStore(offload="cpu")
    with record_attention(inflated, store, step=0):
        recorded = predict(inflated, latents, text)
    assert torch.equal(recorded, reference)
    assert store.nbytes > 0 and store.steps == [0]

    with fuse_attention(inflated, store, step=0):
        assert all(isinstance(p, FusingProcessor) for p in inflated.attn_processors.values())
        fused = predict(inflated, latents, text)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
    assert all(inflated.attn_processors[n] is p for n, p in originals.items())
    assert set(trainable_parameters(inflated)) == set(mark_trainable(inflated))  # temporal layers re-registered


def test_fusion_under_guidance_edits_only_the_conditional_half(inflated):
    latents, text = inputs()
    store = FusionStore(offload="device")
    with record_attention(inflated, store, step=4):
        predict(inflated, latents, text)

    # guidance batch [uncond..., cond...]: the uncond half repeats the recorded pass exactly,
    # the cond half has another prompt and other latents
    target = torch.randn(1, 77, 32).expand(FRAMES, -1, -1)
    batch, texts = torch.cat([latents, latents + 0.5]), torch.cat([text, target])
    plain = predict(inflated, batch, texts)
    with fuse_attention(inflated, store, step=4):
        fused = predict(inflated, batch, texts)
    torch.testing.assert_close(fused[:FRAMES], plain[:FRAMES], rtol=0, atol=1e-5)
    assert not torch.allclose(fused[FRAMES:], plain[FRAMES:], atol=1e-4)

    # no shared words and no self-attention fusion: nothing to fuse
    nothing_shared = PromptEdit(mapping=torch.full((77,), -1), weights=torch.ones(77))
    with fuse_attention(inflated, store, step=4, plan=FusionPlan(self_attention=False, edit=nothing_shared)):
        untouched = predict(inflated, batch, texts)
    torch.testing.assert_close(untouched, plain, rtol=0, atol=1e-5)


def test_encoder_attention_mask_matches_the_2d_unet(plain, inflated):
    latents, text = inputs(frames=1)
    mask = torch.zeros(1, 77)
    mask[:, :5] = 1  # attend to the first five text tokens only
    with torch.no_grad():
        reference = plain(latents, 500, text, encoder_attention_mask=mask).sample
        out = inflated(latents, 500, text, encoder_attention_mask=mask, cross_attention_kwargs={"num_frames": 1}).sample
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    assert not torch.allclose(out, predict(inflated, latents, text, frames=1), atol=1e-4)


def test_processors_restored_after_an_error(inflated):
    originals = dict(inflated.attn_processors)
    store = FusionStore()
    with pytest.raises(RuntimeError):
        with fuse_attention(inflated, store, step=0):
            raise RuntimeError("boom")
    assert all(inflated.attn_processors[n] is p for n, p in originals.items())


def test_fusion_on_the_plain_unet(plain):
    latents, text = inputs(frames=1)
    with torch.no_grad():
        reference = plain(latents, 500, text).sample
    store = FusionStore(offload="auto")
    with record_attention(plain, store, step=1), torch.no_grad():
        plain(latents, 500, text)
    with fuse_attention(plain, store, step=1), torch.no_grad():
        fused = plain(latents, 500, text).sample
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
    assert not any(isinstance(p, FusingProcessor) for p in plain.attn_processors.values())


def test_offload_mode_is_checked():
    with pytest.raises(UsageError):
        FusionStore(offload="disk")
