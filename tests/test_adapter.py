"""The context-aware adapter r_φ: zero at init, causal over a window of frames, any size."""

import json

import pytest
import torch

from contextedit.models.adapter import ContextAdapter, causal_window_mask
from contextedit.models.flops import adapter_flop_share, count_parameters, flops
from contextedit.testing.tiny import tiny_unet

TEXT_DIM = 32


def small_adapter(trained: bool = False, seed: int = 0) -> ContextAdapter:
    torch.manual_seed(seed)
    adapter = ContextAdapter(text_dim=TEXT_DIM, dim=32, heads=4, num_blocks=2).eval()
    if trained:  # stand-in for tuning: a non-zero head
        torch.nn.init.normal_(adapter.head.weight, std=0.1)
    return adapter


def clip(frames: int, height: int = 16, width: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(frames, 4, height, width, generator=torch.Generator().manual_seed(seed))


TEXT = torch.randn(1, 7, TEXT_DIM, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("size", [(16, 16), (16, 24), (15, 13)])
def test_untrained_adapter_is_exactly_zero_for_any_size_and_frame_count(frames, size):
    x0 = clip(frames, *size)
    with torch.no_grad():
        r = small_adapter()(x0, TEXT, 500, num_frames=frames)
    assert r.shape == x0.shape
    assert torch.equal(r, torch.zeros_like(x0))


def test_frame_i_sees_frames_i_minus_2_to_i_only():
    adapter, x0 = small_adapter(trained=True), clip(6)
    with torch.no_grad():
        base = adapter(x0, TEXT, 300, num_frames=6)
        later = x0.clone()
        later[4:] += torch.randn_like(later[4:])
        changed_later = adapter(later, TEXT, 300, num_frames=6)
        prev = x0.clone()
        prev[2] += 1.0
        changed_prev = adapter(prev, TEXT, 300, num_frames=6)
    assert base.abs().max() > 0
    torch.testing.assert_close(changed_later[:4], base[:4], rtol=0, atol=1e-6)  # future frames unseen
    assert not torch.allclose(changed_prev[3], base[3])  # frame i−1 seen
    assert not torch.allclose(changed_prev[4], base[4])  # frame i−2 seen (window 3)
    torch.testing.assert_close(changed_prev[:2], base[:2], rtol=0, atol=1e-6)


def test_clips_in_a_batch_are_independent_and_inputs_broadcast():
    adapter, x0 = small_adapter(trained=True), clip(6)
    text = torch.randn(2, 7, TEXT_DIM)
    with torch.no_grad():
        both = adapter(x0, text, torch.tensor([100, 700]), num_frames=3)
        first = adapter(x0[:3], text[:1], 100, num_frames=3)
        per_frame = adapter(x0, text.repeat_interleave(3, 0), torch.tensor([100] * 3 + [700] * 3), num_frames=3)
    torch.testing.assert_close(both[:3], first, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both, per_frame, rtol=1e-5, atol=1e-6)


def test_text_and_timestep_change_the_output():
    adapter, x0 = small_adapter(trained=True), clip(2)
    with torch.no_grad():
        base = adapter(x0, TEXT, 300, num_frames=2)
        assert not torch.allclose(adapter(x0, TEXT + 1, 300, num_frames=2), base)
        assert not torch.allclose(adapter(x0, TEXT, 900, num_frames=2), base)


def test_causal_window_mask():
    mask = causal_window_mask(5, 3, torch.device("cpu"))
    assert mask[4].tolist() == [False, False, True, True, True]
    assert mask[0].tolist() == [True, False, False, False, False]


def test_bad_frame_count_is_a_value_error():
    with pytest.raises(ValueError):
        small_adapter()(clip(5), TEXT, 1, num_frames=3)


def test_config_round_trips_through_json():
    adapter = small_adapter(trained=True)
    config = json.loads(json.dumps(adapter.config))
    clone = ContextAdapter.from_config(config)
    clone.load_state_dict(adapter.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(clip(2), TEXT, 5, 2), adapter(clip(2), TEXT, 5, 2))


def test_gradients_reach_the_whole_adapter():
    adapter = small_adapter(trained=True).train()
    adapter(clip(3), TEXT, 10, num_frames=3).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


def test_parameter_and_flop_helpers():
    adapter, unet = small_adapter(), tiny_unet()
    assert count_parameters(adapter) == sum(p.numel() for p in adapter.parameters())
    linear = torch.nn.Linear(8, 4, bias=False)
    assert flops(linear, torch.zeros(3, 8)) == 2 * 3 * 8 * 4
    share = adapter_flop_share(adapter, unet, (4, 16, 16), text_len=7, num_frames=2)
    assert 0 < share < 10


def test_default_config_is_small():
    adapter = ContextAdapter()
    assert 1_000_000 < count_parameters(adapter) < 10_000_000


def test_forward_process_is_float32_under_bf16_autocast():
    """x_t and the target come out in float32 and agree with a float64 reference to float32
    rounding even when latents, noise and adapter output are bf16 under a bf16 autocast."""
    from diffusers import DDPMScheduler

    from contextedit.pipelines.training import forward_process
    from contextedit.schedulers import q_sample, training_target

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    x0, noise, r = (torch.randn(4, 4, 8, 8, generator=g).bfloat16() for _ in range(3))
    t = torch.tensor([0, 50, 500, 999])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_t, target = forward_process(scheduler, x0, noise, t, r)
    assert x_t.dtype == target.dtype == torch.float32
    ref_x_t = q_sample(scheduler, x0.double(), noise.double(), t, r.double())
    ref_target = training_target(scheduler, x0.double(), ref_x_t, t)
    eps = torch.finfo(torch.float32).eps
    # a few float32 operations on terms of magnitude ≤ max|x0|+max|noise|+max|r|, divided by √(1−ᾱ) ≥ 0.03 at t = 0
    scale = float(x0.abs().max() + noise.abs().max() + r.abs().max())
    assert (x_t.double() - ref_x_t).abs().max() <= 8 * eps * scale
    assert (target.double() - ref_target).abs().max() <= 8 * eps * scale / (1 - scheduler.alphas_cumprod[0]).sqrt()
    # what bf16 arithmetic would give instead: far off at t = 0, where ε̃ divides by √(1−ᾱ_0) ≈ 0.03
    bf16_target = training_target(scheduler, x0, q_sample(scheduler, x0, noise, t, r), t)
    assert (bf16_target.double() - ref_target).abs().max() > 100 * (target.double() - ref_target).abs().max()
