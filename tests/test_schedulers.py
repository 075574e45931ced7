"""Contextual DDIM/DDPM against diffusers (no context), the DESIGN §3 formulas computed by hand
(float64), an exact-model round trip, and a Monte Carlo check of the Eq. 1 marginal."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

from contextedit.errors import UsageError
from contextedit.schedulers import (
    ContextualDDIMScheduler,
    ContextualDDPMScheduler,
    Schedule,
    k_t,
    q_sample,
    training_target,
)

# Stable Diffusion's scheduler folder ships a PNDM config.
SD = dict(_class_name="PNDMScheduler", num_train_timesteps=1000, beta_schedule="scaled_linear",
          beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False, steps_offset=1,
          skip_prk_steps=True, clip_sample=False, trained_betas=None)
CLIPPED = {**SD, "clip_sample": True, "clip_sample_range": 1.5}
THRESHOLD = {**SD, "thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 2.0}
ALPHA_ONE = {**SD, "set_alpha_to_one": True}
SHAPE = (2, 4, 6, 6)
TIGHT = dict(rtol=1e-5, atol=1e-5)  # float32 vs diffusers: coefficients differ by rounding only
EXACT = dict(rtol=1e-10, atol=1e-10)  # float64 against a float64 reference
# diffusers' DDPM forms β_t = 1 − ᾱ_t/ᾱ_s in float32; with 1000 steps β_t ≈ 1e-4 near t = 0 and that
# cancellation costs it ~1e-4 absolute, which this module avoids by working in float64.
DDPM_1000 = dict(rtol=1e-4, atol=5e-4)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def pair(cls, ref_cls, config, n, prediction_type):
    ours, ref = cls.from_config({**config, "prediction_type": prediction_type}), ref_cls.from_config(
        {**config, "prediction_type": prediction_type})
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    return ours, ref


def alphas(config) -> torch.Tensor:
    """ᾱ as diffusers defines it, in float64, for the hand-computed references."""
    return DDIMScheduler.from_config(config).alphas_cumprod.double()


def r_phi(x0: torch.Tensor, t: int) -> torch.Tensor:
    """A stand-in adapter output that depends on x0 and t."""
    return torch.tanh(x0) * 2 + 1e-3 * t * x0**2 - 0.5


# --- context=None is diffusers -------------------------------------------------------------

@pytest.mark.parametrize("config", [SD, CLIPPED, THRESHOLD], ids=["sd", "clip", "threshold"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("n", [20, 50])
def test_ddim_without_context_is_diffusers(config, prediction_type, n):
    ours, ref = pair(ContextualDDIMScheduler, DDIMScheduler, config, n, prediction_type)
    assert torch.equal(ours.timesteps, ref.timesteps)
    for i, t in enumerate(ours.timesteps):
        x, out = randn(*SHAPE, seed=2 * i) * 3, randn(*SHAPE, seed=2 * i + 1)
        for clipped in (False, True):
            got = ours.step(out, t, x, use_clipped_model_output=clipped)
            want = ref.step(out, t, x, use_clipped_model_output=clipped)
            torch.testing.assert_close(got.prev_sample, want.prev_sample, **TIGHT)
            torch.testing.assert_close(got.pred_original_sample, want.pred_original_sample, **TIGHT)


@pytest.mark.parametrize("config", [SD, CLIPPED], ids=["sd", "clip"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_without_context_is_diffusers(config, prediction_type):
    ours, ref = pair(ContextualDDIMScheduler, DDIMInverseScheduler, config, 20, prediction_type)
    for i, t in enumerate(ours.timesteps.flip(0)):  # the forward scheduler's timesteps (steps_offset kept)
        x, out = randn(*SHAPE, seed=2 * i), randn(*SHAPE, seed=2 * i + 1)
        torch.testing.assert_close(ours.invert_step(out, t, x), ref.step(out, t, x).prev_sample, **TIGHT)


def test_ddim_stochastic_without_context_is_diffusers_and_refused_with_context():
    ours, ref = pair(ContextualDDIMScheduler, DDIMScheduler, SD, 20, "epsilon")
    x, out, t = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2), ours.timesteps[3]
    got = ours.step(out, t, x, eta=0.7, generator=torch.Generator().manual_seed(5)).prev_sample
    want = ref.step(out, t, x, eta=0.7, generator=torch.Generator().manual_seed(5)).prev_sample
    torch.testing.assert_close(got, want, **TIGHT)
    with pytest.raises(UsageError):
        ours.step(out, t, x, lambda x0, s: x0, eta=0.7)


@pytest.mark.parametrize("config,n,prediction_type,variance_type", [
    (SD, 20, "epsilon", "fixed_small"),
    (SD, 20, "v_prediction", "fixed_small_log"),
    ({**SD, "clip_sample": True}, 50, "epsilon", "fixed_large"),
    (THRESHOLD, 20, "v_prediction", "fixed_small"),
    ({}, 1000, "epsilon", "fixed_small"),  # DDPMScheduler's defaults: linear betas, clip_sample
])
def test_ddpm_without_context_is_diffusers(config, n, prediction_type, variance_type):
    config = {**config, "variance_type": variance_type}
    ours, ref = pair(ContextualDDPMScheduler, DDPMScheduler, config, n, prediction_type)
    g_ours, g_ref = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = randn(*SHAPE, seed=1)
    for i, t in enumerate(ours.timesteps):
        out = randn(*SHAPE, seed=i + 2)
        got, want = ours.step(out, t, x, generator=g_ours), ref.step(out, t, x, generator=g_ref)
        torch.testing.assert_close(got.prev_sample, want.prev_sample, **(DDPM_1000 if n == 1000 else TIGHT))
        torch.testing.assert_close(got.pred_original_sample, want.pred_original_sample, **TIGHT)
        x = want.prev_sample


def test_ddpm_learned_variance_is_refused():
    s = ContextualDDPMScheduler.from_config({**SD, "variance_type": "learned_range"})
    s.set_timesteps(10)
    with pytest.raises(UsageError, match="variance_type"):
        s.step(randn(*SHAPE), s.timesteps[0], randn(*SHAPE))


# --- with context: the DESIGN §3 formulas, by hand in float64 ----------------------------

def eps_and_x0(out, x, ab, prediction_type):
    if prediction_type == "epsilon":
        return out, (x - (1 - ab) ** 0.5 * out) / ab**0.5
    return ab**0.5 * out + (1 - ab) ** 0.5 * x, ab**0.5 * x - (1 - ab) ** 0.5 * out


def k(ab):
    return ab**0.5 * (1 - ab**0.5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("index", [0, 7, 19])  # 19: the last step, where ᾱ_s = final_alpha_cumprod
def test_ddim_step_with_context_matches_eq11(prediction_type, index):
    s = ContextualDDIMScheduler.from_config({**SD, "prediction_type": prediction_type})
    s.set_timesteps(20)
    ab, t = alphas(SD), int(s.timesteps[index])
    prev = t - 50
    ab_t, ab_s = ab[t], ab[prev] if prev >= 0 else ab[0]
    x, out = randn(*SHAPE, seed=1, dtype=torch.float64), randn(*SHAPE, seed=2, dtype=torch.float64)
    calls = []

    def context(x0_hat, level):
        calls.append(level)
        return r_phi(x0_hat, level)

    got = s.step(out, torch.tensor(t), x, context)
    eps, x0 = eps_and_x0(out, x, ab_t, prediction_type)
    b_t, b_s = k(ab_t) * r_phi(x0, t), k(ab_s) * r_phi(x0, max(prev, 0))
    x_tilde = ab_s**0.5 * x0 + (1 - ab_s) ** 0.5 * (x - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5
    want = x_tilde - b_t * (1 - ab_s) ** 0.5 / (1 - ab_t) ** 0.5 + b_s
    torch.testing.assert_close(got.prev_sample, want, **EXACT)
    torch.testing.assert_close(got.pred_original_sample, x0, **EXACT)
    assert calls == [t, max(prev, 0)] and all(type(c) is int for c in calls)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("index", [0, 7, 19])  # 19: the first inversion step, from the clean latent
def test_ddim_invert_step_with_context_matches_design(prediction_type, index):
    s = ContextualDDIMScheduler.from_config({**SD, "prediction_type": prediction_type})
    s.set_timesteps(20)
    ab, t = alphas(SD), int(s.timesteps[index])
    prev = t - 50
    ab_t, ab_s = ab[t], ab[prev] if prev >= 0 else ab[0]
    x, out = randn(*SHAPE, seed=3, dtype=torch.float64), randn(*SHAPE, seed=4, dtype=torch.float64)
    clean = randn(*SHAPE, seed=5, dtype=torch.float64)
    got = s.invert_step(out, t, x, lambda _, level: r_phi(clean, level))  # r_φ on the true latents
    eps, x0 = eps_and_x0(out, x, ab_s, prediction_type)
    b_t, b_s = k(ab_t) * r_phi(clean, t), k(ab_s) * r_phi(clean, max(prev, 0))
    d = eps - b_s / (1 - ab_s) ** 0.5
    want = ab_t**0.5 * x0 + (1 - ab_t) ** 0.5 * d + b_t
    got = getattr(got, "prev_sample", got)
    torch.testing.assert_close(got, want, **EXACT)


def test_context_is_skipped_where_k_is_zero():
    s = ContextualDDIMScheduler.from_config(ALPHA_ONE)  # ᾱ_s = 1 after the last step: k_s = 0
    s.set_timesteps(20)
    calls = []
    s.step(randn(*SHAPE), s.timesteps[-1], randn(*SHAPE), lambda x0, level: calls.append(level) or x0)
    assert calls == [int(s.timesteps[-1])]


@pytest.mark.parametrize("index", [0, 10, 19])
def test_ddpm_step_with_context_matches_eq7(index):
    s = ContextualDDPMScheduler.from_config(SD)
    s.set_timesteps(20)
    ab, t = alphas(SD), int(s.timesteps[index])
    prev = t - 50
    ab_t, ab_s = ab[t], ab[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
    x, out = randn(*SHAPE, seed=1, dtype=torch.float64), randn(*SHAPE, seed=2, dtype=torch.float64)
    got = s.step(out, t, x, r_phi, generator=torch.Generator().manual_seed(9))
    _, x0 = eps_and_x0(out, x, ab_t, "epsilon")
    b_t, b_s = k(ab_t) * r_phi(x0, t), k(ab_s) * r_phi(x0, max(prev, 0))
    alpha_t, beta_t = ab_t / ab_s, 1 - ab_t / ab_s
    mean = (ab_s**0.5 * beta_t / (1 - ab_t) * x0 + alpha_t**0.5 * (1 - ab_s) / (1 - ab_t) * (x - b_t) + b_s)
    var = ((1 - ab_s) * beta_t / (1 - ab_t)).clamp(min=1e-20)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    torch.testing.assert_close(got.prev_sample, mean + var**0.5 * noise, **EXACT)


# --- properties --------------------------------------------------------------------------

def test_step_undoes_invert_step_when_r_is_zero():
    s = ContextualDDIMScheduler.from_config(SD)
    s.set_timesteps(20)
    zero = lambda x0, level: torch.zeros_like(x0)  # noqa: E731
    for i, t in enumerate(s.timesteps):
        x_s, out = randn(*SHAPE, seed=i, dtype=torch.float64), randn(*SHAPE, seed=99, dtype=torch.float64)
        x_t = s.invert_step(out, t, x_s, zero)
        torch.testing.assert_close(s.step(out, t, getattr(x_t, "prev_sample", x_t), zero).prev_sample, x_s, **EXACT)


@pytest.mark.parametrize("config", [SD, ALPHA_ONE], ids=["final_alpha", "alpha_one"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_exact_model_inverts_onto_the_eq1_curve_and_samples_back(config, prediction_type):
    """With the true ε̃, DDIM stays on x = √ᾱ x0 + b + √(1−ᾱ) n both ways (Eq. 1, Eq. 11)."""
    s = ContextualDDIMScheduler.from_config({**config, "prediction_type": prediction_type})
    s.set_timesteps(20)
    sched = Schedule.from_scheduler(s)
    x0, n = randn(*SHAPE, seed=1, dtype=torch.float64), randn(*SHAPE, seed=2, dtype=torch.float64)
    on_curve = lambda level: q_sample(sched, x0, n, level, r_phi(x0, max(level, 0)))  # noqa: E731

    def oracle(x, level):
        ab = sched.alpha_bar(level)
        eps = n if ab == 1 else (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        return eps if prediction_type == "epsilon" else ab**0.5 * eps - (1 - ab) ** 0.5 * x0

    stride = 1000 // 20
    start = on_curve(-1)  # the clean latent at the level below the first timestep
    x = start
    for t in s.timesteps.flip(0).tolist():
        x = s.invert_step(oracle(x, t - stride), t, x, lambda _, level: r_phi(x0, level))
        x = getattr(x, "prev_sample", x)
        torch.testing.assert_close(x, on_curve(t), **EXACT)
    for t in s.timesteps.tolist():
        x = s.step(oracle(x, t), t, x, r_phi).prev_sample
    torch.testing.assert_close(x, start, **EXACT)
    if config is ALPHA_ONE:
        torch.testing.assert_close(x, x0, **EXACT)


@pytest.mark.parametrize("index", [2, 12])
def test_ddpm_step_with_true_target_has_the_eq1_marginal(index):
    s = ContextualDDPMScheduler.from_config(SD)
    s.set_timesteps(20)
    sched, t = Schedule.from_scheduler(s), int(s.timesteps[index])
    prev = int(s.previous_timestep(t))
    batch, gen = 40_000, torch.Generator().manual_seed(index)
    x0 = torch.linspace(-1.5, 1.5, 4, dtype=torch.float64).expand(batch, 4)
    noise = torch.randn(batch, 4, generator=gen, dtype=torch.float64)
    x_t = q_sample(sched, x0, noise, t, r_phi(x0, t))
    eps_tilde = training_target(sched, x0, x_t, t, "epsilon")
    x_s = s.step(eps_tilde, t, x_t, r_phi, generator=gen).prev_sample
    ab_s = sched.alpha_bar(prev)
    mean_want = ab_s**0.5 * x0[0] + k(ab_s) * r_phi(x0[0], prev)
    se_mean, se_var = ((1 - ab_s) / batch) ** 0.5, (1 - ab_s) * (2 / batch) ** 0.5
    assert (x_s.mean(0) - mean_want).abs().max() < 5 * se_mean
    assert (x_s.var(0) - (1 - ab_s)).abs().max() < 5 * se_var


# --- forward process and training target ---------------------------------------------------

def test_q_sample_and_targets_broadcast_a_batch_of_timesteps():
    ref = DDPMScheduler.from_config(SD)
    x0, noise, r = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2), randn(*SHAPE, seed=3)
    t = torch.tensor([10, 700])
    torch.testing.assert_close(q_sample(ref, x0, noise, t), ref.add_noise(x0, noise, t), **TIGHT)
    ab = alphas(SD)[t].float().view(-1, 1, 1, 1)
    x_t = q_sample(ref, x0, noise, t, r)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + k(ab) * r + (1 - ab).sqrt() * noise, **TIGHT)
    eps_tilde = training_target(ref, x0, x_t, t)
    torch.testing.assert_close(eps_tilde, noise + k(ab) * r / (1 - ab).sqrt(), **TIGHT)
    v = training_target(ref, x0, x_t, t, "v_prediction")
    torch.testing.assert_close(v, ab.sqrt() * eps_tilde - (1 - ab).sqrt() * x0, **TIGHT)
    # a scalar t applies to the whole batch (one clip's frames)
    torch.testing.assert_close(q_sample(ref, x0, noise, 700, r)[1], x_t[1], **TIGHT)


def test_k_vanishes_at_both_ends():
    assert k_t(torch.tensor(1.0, dtype=torch.float64)) == 0 and k_t(torch.tensor(0.0)) == 0
    assert Schedule.from_config(SD).k(500) > 0


def test_gradients_reach_the_adapter_through_x_t_and_the_target():
    sched = Schedule.from_config(SD)
    x0, noise = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    r = torch.zeros(SHAPE, requires_grad=True)
    x_t = q_sample(sched, x0, noise, torch.tensor([300, 600]), r)
    pred = 0.5 * x_t  # a stand-in model that sees x_t
    ((pred - training_target(sched, x0, x_t, torch.tensor([300, 600]))) ** 2).mean().backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
