"""Contextual DDIM/DDPM against diffusers (no context), the docs/concepts/design.md §3 formulas computed by hand
(float64), an exact-model round trip, a Monte Carlo check of the Eq. 1 marginal, and the drop-in
contract: diffusers' signatures and outputs, inside diffusers' own StableDiffusionPipeline."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler
from diffusers.utils import BaseOutput

from contextedit.errors import UsageError
from contextedit.schedulers import (
    ContextualDDIMScheduler,
    ContextualDDPMScheduler,
    Schedule,
    k_t,
    q_sample,
    training_target,
)

from helpers import f32_tol

# Stable Diffusion's scheduler folder ships a PNDM config.
SD = dict(_class_name="PNDMScheduler", num_train_timesteps=1000, beta_schedule="scaled_linear",
          beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False, steps_offset=1,
          skip_prk_steps=True, clip_sample=False, trained_betas=None)
CLIPPED = {**SD, "clip_sample": True, "clip_sample_range": 1.5}
THRESHOLD = {**SD, "thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 2.0}
ALPHA_ONE = {**SD, "set_alpha_to_one": True}
SHAPE = (2, 4, 6, 6)
EXACT = dict(rtol=1e-10, atol=1e-10)  # float64 against a float64 reference
# Against diffusers (float32 both): atol = f32_tol(summands, ops), ops the float32 operations on the
# longest chain of either implementation (diffusers', the longer, counted in its step code):
X0_OPS = 6  # x̂0 = (x − √(1−ᾱ)·ε)/√ᾱ: √ᾱ, 1−ᾱ, √(1−ᾱ), ·ε, x−·, ÷√ᾱ (v: fewer)
THRESHOLD_OPS = X0_OPS + 4  # dynamic thresholding divides x̂0 by a quantile s ≥ 1 of |x̂0| that carries x̂0's
#   error again (so at most twice it), plus the quantile's interpolation (3) and the division (1)
DDIM_OPS = 5  # then x_s = √ᾱ_s·x̂0 + √(1−ᾱ_s−σ²)·ε̂: 1−ᾱ_s, −σ², √, ·ε̂, + (5) on the coefficient's chain;
#   x̂0's chain gains ·√ᾱ_s, + (2), or with ε̂ re-derived from x̂0: ·√ᾱ, x−, ÷√(1−ᾱ), ·, + (5)
DDPM_OPS = 4  # then x_s = c0·x̂0 + c1·x + σ·n: x̂0's chain gains ·c0, +, + (3); c0 = √ᾱ_s·β/(1−ᾱ_t) with
#   β = 1 − ᾱ_t/ᾱ_s is 6 ops (+3 = 9 ≤ 6 + 4), σ 7 (+2); β's own cancellation is in ddpm_terms


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


def x0_eps_terms(x, out, alpha_bar, prediction_type):
    """The summands of x̂0 and of ε̂ at ᾱ (docs/concepts/design.md §2): float32 rounds relative to these, not to
    x̂0, whose summands cancel where √ᾱ is small (x̂0 = x/√ᾱ − √(1−ᾱ)/√ᾱ·ε ≈ ±1 from terms ≈ 500)."""
    a, s = float(alpha_bar) ** 0.5, float(1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return [x / a, s / a * out], [out]
    return [a * x, s * out], [a * out, s * x]


def assert_f32_close(got, want, terms, ops):
    torch.testing.assert_close(got, want, rtol=0, atol=f32_tol(*terms, ops=ops))


# --- context=None is diffusers -------------------------------------------------------------

@pytest.mark.parametrize("config", [SD, CLIPPED, THRESHOLD], ids=["sd", "clip", "threshold"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("n", [20, 50])
def test_ddim_without_context_is_diffusers(config, prediction_type, n):
    ours, ref = pair(ContextualDDIMScheduler, DDIMScheduler, config, n, prediction_type)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x0_ops = THRESHOLD_OPS if config.get("thresholding") else X0_OPS
    for i, t in enumerate(ours.timesteps):
        x, out = randn(*SHAPE, seed=2 * i) * 3, randn(*SHAPE, seed=2 * i + 1)
        ab_t, ab_s = ours.schedule.alpha_bar(int(t)), ours.schedule.alpha_bar(int(t) - 1000 // n)
        x0_terms, eps_terms = x0_eps_terms(x, out, ab_t, prediction_type)
        for clipped in (False, True):
            got = ours.step(out, t, x, use_clipped_model_output=clipped)
            want = ref.step(out, t, x, use_clipped_model_output=clipped)
            if clipped:  # ε̂ = (x − √ᾱ x̂0)/√(1−ᾱ), carrying x̂0's error scaled by √ᾱ/√(1−ᾱ)
                a_over_s = (ab_t / (1 - ab_t)).sqrt().item()
                eps_terms = [x / (1 - ab_t).sqrt().item(), a_over_s * want.pred_original_sample,
                             *(a_over_s * term for term in x0_terms)]
            prev_terms = [ab_s.sqrt().item() * term for term in x0_terms] + [(1 - ab_s).sqrt().item() * term for term in eps_terms]
            assert_f32_close(got.prev_sample, want.prev_sample, prev_terms, x0_ops + DDIM_OPS)
            assert_f32_close(got.pred_original_sample, want.pred_original_sample, x0_terms, x0_ops)


@pytest.mark.parametrize("config", [SD, CLIPPED], ids=["sd", "clip"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_without_context_is_diffusers(config, prediction_type):
    ours, ref = pair(ContextualDDIMScheduler, DDIMInverseScheduler, config, 20, prediction_type)
    for i, t in enumerate(ours.timesteps.flip(0)):  # the forward scheduler's timesteps (steps_offset kept)
        x, out = randn(*SHAPE, seed=2 * i), randn(*SHAPE, seed=2 * i + 1)
        ab_s, ab_t = ours.schedule.alpha_bar(int(t) - 50), ours.schedule.alpha_bar(int(t))
        x0_terms, eps_terms = x0_eps_terms(x, out, ab_s, prediction_type)
        terms = [ab_t.sqrt().item() * term for term in x0_terms] + [(1 - ab_t).sqrt().item() * term for term in eps_terms]
        got, want = ours.invert_step(out, t, x), ref.step(out, t, x)
        assert_f32_close(got.prev_sample, want.prev_sample, terms, X0_OPS + DDIM_OPS)
        assert_f32_close(got.pred_original_sample, want.pred_original_sample, x0_terms, X0_OPS)


def test_ddim_stochastic_without_context_is_diffusers_and_refused_with_context():
    ours, ref = pair(ContextualDDIMScheduler, DDIMScheduler, SD, 20, "epsilon")
    x, out, t = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2), ours.timesteps[3]
    got = ours.step(out, t, x, eta=0.7, generator=torch.Generator().manual_seed(5)).prev_sample
    want = ref.step(out, t, x, eta=0.7, generator=torch.Generator().manual_seed(5)).prev_sample
    assert torch.equal(got, want)  # η > 0 runs diffusers' own step
    with pytest.raises(UsageError):
        ours.step(out, t, x, eta=0.7, context=lambda x0, s: x0)


def ddpm_terms(s, t, x, out, x0_hat, noise, prediction_type):
    """(summands of diffusers' DDPM x_s, the terms its float32 β_t conditions) for f32_tol.

    x_s = c0·x̂0 + c1·x + σ·n with c0 ∝ β_t and σ ∝ √β_t. diffusers forms β_t = 1 − ᾱ_t/ᾱ_s in
    float32: exact to eps/2 absolute only, a relative error eps/(2β_t) in c0 and eps/(4β_t) in σ
    (fixed_small_log's log and exp, good to an ulp each, add up to eps·|log σ²|/2 to σ). With
    1000 steps β_t ≈ 1e-4 near t = 0, where diffusers is off by ~5e-4; this module forms β_t in
    float64, so the bound is tight elsewhere (β_t ≈ 0.01–0.1).
    """
    ab_t, ab_s = s.schedule.alpha_bar(t), s.schedule.alpha_bar(int(s.previous_timestep(t)))
    beta = 1 - ab_t / ab_s
    c0 = (ab_s.sqrt() * beta / (1 - ab_t)).item()
    c1 = ((1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t)).item()
    variance = beta if s.config.variance_type == "fixed_large" else (1 - ab_s) / (1 - ab_t) * beta
    noise_term = variance.clamp(min=1e-20).sqrt().item() * noise if t > 0 else torch.zeros(())
    x0_terms, _ = x0_eps_terms(x, out, ab_t, prediction_type)
    summands = [c0 * term for term in x0_terms] + [c1 * x, noise_term]
    log_factor = variance.clamp(min=1e-20).log().abs().item() / 2 if s.config.variance_type == "fixed_small_log" else 0
    conditioned = [c0 * x0_hat / (2 * beta.item()), noise_term * (1 / (4 * beta.item()) + log_factor)]
    return x0_terms, summands, conditioned


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
    x0_ops = THRESHOLD_OPS if config.get("thresholding") else X0_OPS
    g_ours, g_ref = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = randn(*SHAPE, seed=1)
    for i, t in enumerate(ours.timesteps):
        out = randn(*SHAPE, seed=i + 2)
        noise = torch.randn(SHAPE, generator=torch.Generator().set_state(g_ref.get_state()))  # what the step draws
        got, want = ours.step(out, t, x, generator=g_ours), ref.step(out, t, x, generator=g_ref)
        x0_terms, summands, conditioned = ddpm_terms(ours, int(t), x, out, want.pred_original_sample, noise, prediction_type)
        atol = f32_tol(*summands, ops=x0_ops + DDPM_OPS) + f32_tol(*conditioned, ops=1)
        torch.testing.assert_close(got.prev_sample, want.prev_sample, rtol=0, atol=atol)
        assert_f32_close(got.pred_original_sample, want.pred_original_sample, x0_terms, x0_ops)
        x = want.prev_sample


def test_ddpm_learned_variance_is_refused():
    s = ContextualDDPMScheduler.from_config({**SD, "variance_type": "learned_range"})
    s.set_timesteps(10)
    with pytest.raises(UsageError, match="variance_type"):
        s.step(randn(*SHAPE), s.timesteps[0], randn(*SHAPE))


# --- with context: the docs/concepts/design.md §3 formulas, by hand in float64 ----------------------------

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

    got = s.step(out, torch.tensor(t), x, context=context)
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
    got = s.invert_step(out, t, x, context=lambda _, level: r_phi(clean, level))  # r_φ on the true latents
    eps, x0 = eps_and_x0(out, x, ab_s, prediction_type)
    b_t, b_s = k(ab_t) * r_phi(clean, t), k(ab_s) * r_phi(clean, max(prev, 0))
    d = eps - b_s / (1 - ab_s) ** 0.5
    want = ab_t**0.5 * x0 + (1 - ab_t) ** 0.5 * d + b_t
    torch.testing.assert_close(got.prev_sample, want, **EXACT)
    torch.testing.assert_close(got.pred_original_sample, x0, **EXACT)


def test_context_is_skipped_where_k_is_zero():
    s = ContextualDDIMScheduler.from_config(ALPHA_ONE)  # ᾱ_s = 1 after the last step: k_s = 0
    s.set_timesteps(20)
    calls = []
    s.step(randn(*SHAPE), s.timesteps[-1], randn(*SHAPE), context=lambda x0, level: calls.append(level) or x0)
    assert calls == [int(s.timesteps[-1])]


@pytest.mark.parametrize("index", [0, 10, 19])
def test_ddpm_step_with_context_matches_eq7(index):
    s = ContextualDDPMScheduler.from_config(SD)
    s.set_timesteps(20)
    ab, t = alphas(SD), int(s.timesteps[index])
    prev = t - 50
    ab_t, ab_s = ab[t], ab[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
    x, out = randn(*SHAPE, seed=1, dtype=torch.float64), randn(*SHAPE, seed=2, dtype=torch.float64)
    got = s.step(out, t, x, generator=torch.Generator().manual_seed(9), context=r_phi)
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
        x_t = s.invert_step(out, t, x_s, context=zero).prev_sample
        torch.testing.assert_close(s.step(out, t, x_t, context=zero).prev_sample, x_s, **EXACT)


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
        x = s.invert_step(oracle(x, t - stride), t, x, context=lambda _, level: r_phi(x0, level)).prev_sample
        torch.testing.assert_close(x, on_curve(t), **EXACT)
    for t in s.timesteps.tolist():
        x = s.step(oracle(x, t), t, x, context=r_phi).prev_sample
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
    x_s = s.step(eps_tilde, t, x_t, generator=gen, context=r_phi).prev_sample
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
    ab = alphas(SD)[t].float().view(-1, 1, 1, 1)  # diffusers' float32 ᾱ: the references compute in float32
    a, s = ab.sqrt(), (1 - ab).sqrt()
    # ops: √ᾱ, ·x0, 1−ᾱ, √·, ·n, + in diffusers' add_noise (6); k = √ᾱ(1−√ᾱ) and ·r add 3. The float32
    # √ᾱ in the reference's k (error eps/2·√ᾱ, then 1−√ᾱ cancels) is off by eps/2·ᾱ·|r|: the term ᾱ·r.
    torch.testing.assert_close(q_sample(ref, x0, noise, t), ref.add_noise(x0, noise, t), rtol=0,
                               atol=f32_tol(a * x0, s * noise, ops=6))
    x_t = q_sample(ref, x0, noise, t, r)
    assert_f32_close(x_t, a * x0 + k(ab) * r + s * noise, [a * x0, k(ab) * r, s * noise, ab * r], 9)
    # ε̃ = (x_t − √ᾱ x0)/√(1−ᾱ) on our x_t (its q_sample error included: 9 + 3 ops), against ε + k·r/√(1−ᾱ)
    eps_tilde = training_target(ref, x0, x_t, t)
    assert_f32_close(eps_tilde, noise + k(ab) * r / s, [x_t / s, a * x0 / s, noise, k(ab) * r / s, ab * r / s], 12)
    v = training_target(ref, x0, x_t, t, "v_prediction")
    assert_f32_close(v, a * eps_tilde - s * x0, [a * eps_tilde, s * x0], 4)
    # a scalar t applies to the whole batch (one clip's frames): the same arithmetic
    assert torch.equal(q_sample(ref, x0, noise, 700, r)[1], x_t[1])


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


# --- drop-in: diffusers' calling convention and diffusers' own pipeline ---------------------

@pytest.mark.parametrize("ours_cls,ref_cls,method", [
    (ContextualDDIMScheduler, DDIMScheduler, "step"),
    (ContextualDDPMScheduler, DDPMScheduler, "step"),
    (ContextualDDIMScheduler, DDIMInverseScheduler, "invert_step"),
], ids=["ddim", "ddpm", "ddim-inverse"])
def test_signature_is_diffusers_with_context_before_return_dict(ours_cls, ref_cls, method):
    ours = list(inspect.signature(getattr(ours_cls, method)).parameters)
    ref = list(inspect.signature(ref_cls.step).parameters)
    assert ours == ref[:-1] + ["context", "return_dict"] and ref[-1] == "return_dict"


@pytest.mark.parametrize("cls,method,kwargs", [
    (ContextualDDIMScheduler, "step", {}),
    (ContextualDDIMScheduler, "step", {"eta": 0.5}),
    (ContextualDDIMScheduler, "step", {"context": r_phi}),
    (ContextualDDIMScheduler, "invert_step", {"context": r_phi}),
    (ContextualDDPMScheduler, "step", {"context": r_phi}),
], ids=["ddim", "ddim-eta", "ddim-context", "invert-context", "ddpm-context"])
def test_output_is_a_base_output_or_a_tuple(cls, method, kwargs):
    s = cls.from_config(SD)
    s.set_timesteps(10)
    x, out, t = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2), s.timesteps[4]
    seeded = {"generator": torch.Generator().manual_seed(3)} if cls is ContextualDDPMScheduler or "eta" in kwargs else {}
    as_dict = getattr(s, method)(out, t, x, **kwargs, **seeded)
    if seeded:
        seeded = {"generator": torch.Generator().manual_seed(3)}
    as_tuple = getattr(s, method)(out, t, x, **kwargs, **seeded, return_dict=False)
    assert isinstance(as_dict, BaseOutput) and isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert torch.equal(as_dict[0], as_dict.prev_sample) and as_dict.pred_original_sample is not None
    for a, b in zip(as_tuple, as_dict.to_tuple(), strict=True):
        assert torch.equal(a, b)


PROMPT = "a red circle moving right on a black background"


def ddim_bound(scheduler, model_output, t, sample, invert: bool = False) -> float:
    """f32_tol of one DDIM step (η = 0, no clipping) from its inputs, as in the unit tests above:
    x̂0 at the level ``sample`` is at (t; s when inverting), the result at the other one."""
    levels = (int(t), int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps)
    ab_from, ab_to = (scheduler.schedule.alpha_bar(level) for level in (levels[::-1] if invert else levels))
    x0_terms, eps_terms = x0_eps_terms(sample, model_output, ab_from, "epsilon")
    terms = [ab_to.sqrt().item() * term for term in x0_terms] + [(1 - ab_to).sqrt().item() * term for term in eps_terms]
    return f32_tol(*terms, ops=X0_OPS + DDIM_OPS)


def propagated_tolerance(run, bounds: list[float], like: torch.Tensor) -> float:
    """What per-step rounding of at most ``bounds[k]`` after step k can change in ``run``'s result.

    The scheduler's step is analysed (``ddim_bound``); the UNet and VAE after it are not, so their
    first-order response is measured: ``run(k, δ)`` reruns the reference with ``δ`` added to the
    latents after step k, δ a seeded ±bounds[k] pattern — rounding-like signs at the largest size
    rounding reaches, where the real rounding differences are mostly much smaller. The sum over
    steps bounds the sum of the responses (first order: they add)."""
    base = run(None, None)
    total = 0.0
    for k, bound in enumerate(bounds):
        signs = torch.randint(0, 2, like.shape, generator=torch.Generator().manual_seed(k), dtype=like.dtype) * 2 - 1
        total += float((run(k, bound * signs) - base).abs().max())
    return total


def sd_pipeline(comps, scheduler):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=comps.vae, unet=comps.unet, text_encoder=comps.text_encoder,
                                   tokenizer=comps.tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny_comps():
    """The embedded trained tiny model (``--model tiny``), float32 on the CPU."""
    from contextedit.models.loading import load_components

    return load_components("tiny", "cpu", torch.float32)


def test_contextual_ddim_drops_into_diffusers_stable_diffusion_pipeline(tiny_comps):
    """With no adapter, ContextualDDIMScheduler inside diffusers' own StableDiffusionPipeline (which
    calls ``scheduler.step(noise_pred, t, latents, eta=, generator=, return_dict=False)[0]``) on the
    embedded tiny model gives DDIMScheduler's image, to float32 rounding."""
    comps = tiny_comps
    steps = 4  # with 3 every step happens to round alike: 4 leave a difference for the tolerance to judge
    ours, ref = (cls.from_config(comps.scheduler_config) for cls in (ContextualDDIMScheduler, DDIMScheduler))
    calls = []
    step = ours.step

    @functools.wraps(step)  # the pipeline reads step's signature to decide on eta and generator
    def recording_step(model_output, timestep, sample, *args, **kwargs):
        out = step(model_output, timestep, sample, *args, **kwargs)
        calls.append((model_output, timestep, sample, kwargs, out))
        return out

    ours.step = recording_step

    def image(pipe, perturb_step=None, delta=None):
        def perturb(_, i, t, kwargs):
            return {"latents": kwargs["latents"] + delta} if i == perturb_step else {}
        return torch.from_numpy(pipe(PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                                     output_type="np", callback_on_step_end=perturb).images)

    got = image(sd_pipeline(comps, ours))
    ref_pipe = sd_pipeline(comps, ref)
    want = image(ref_pipe)
    assert len(calls) == steps and all(kw.get("return_dict") is False and kw.get("eta") == 0.0 for *_, kw, _ in calls)
    # each step, on the very inputs the pipeline gave it, is diffusers' step to f32_tol
    ref.set_timesteps(steps)
    bounds = []
    for model_output, t, sample, kwargs, out in calls:
        bounds.append(ddim_bound(ours, model_output, t, sample))
        want_step = ref.step(model_output, t, sample, return_dict=False)
        torch.testing.assert_close(out[0], want_step[0], rtol=0, atol=bounds[-1])
    # and the image: those per-step differences carried through the UNet and the decoder
    atol = propagated_tolerance(lambda k, delta: image(ref_pipe, k, delta), bounds, calls[0][2])
    assert 0 < atol < 1 / 255  # a sub-quantum tolerance: the same image in 8 bits, save for a rounding tie
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


def test_invert_loop_without_context_is_diffusers_inverse_scheduler(tiny_comps):
    """``loop.invert`` over ContextualDDIMScheduler (no adapter) walks the latents up as a loop over
    diffusers' DDIMInverseScheduler does, to float32 rounding, and its callback gets one dict a
    step (k-diffusion's style: ``{"i", "t", "x", "denoised"}``)."""
    from contextedit.pipelines.loop import Denoiser, invert

    comps, steps = tiny_comps, 4
    ids = comps.tokenizer(PROMPT, padding="max_length", max_length=comps.tokenizer.model_max_length,
                          return_tensors="pt").input_ids
    with torch.no_grad():
        model = Denoiser(comps.unet, comps.text_encoder(ids)[0])
    ours = ContextualDDIMScheduler.from_config(comps.scheduler_config)
    # from the forward scheduler's config, and its timesteps checked: an inverse scheduler without
    # the forward one's steps_offset would evaluate every step one timestep off and still look fine
    ref = DDIMInverseScheduler.from_config(ours.config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    assert torch.equal(ref.timesteps, ours.timesteps.flip(0))
    x0 = randn(1, 4, 16, 16, seed=7)
    seen, levels = [], []
    got = invert(ours, model, x0, callback=seen.append, trajectory=levels)

    inputs = []

    @torch.no_grad()
    def reference(k, delta):
        x = x0
        for j, t in enumerate(ref.timesteps):
            out = model(x, t)
            if k is None:
                inputs.append((out, t, x))
            x = ref.step(out, t, x).prev_sample
            x = x + delta if j == k else x
        return x

    want = reference(None, None)
    bounds = [ddim_bound(ours, out, t, x, invert=True) for out, t, x in inputs]
    for (out, t, x), bound in zip(inputs, bounds):  # each step on the reference's inputs
        torch.testing.assert_close(ours.invert_step(out, t, x).prev_sample, ref.step(out, t, x).prev_sample, rtol=0, atol=bound)
    torch.testing.assert_close(got, want, rtol=0, atol=propagated_tolerance(reference, bounds, x0))

    assert [sorted(d) for d in seen] == [["denoised", "i", "t", "x"]] * steps
    assert [(d["i"], d["t"]) for d in seen] == list(enumerate(ref.timesteps.tolist()))
    assert all(d["x"] is level for d, level in zip(seen, levels[1:], strict=True)) and seen[-1]["x"] is got
    assert all(d["denoised"].shape == x0.shape for d in seen)


@pytest.mark.parametrize("cls", [ContextualDDIMScheduler, ContextualDDPMScheduler])
def test_sample_loop_callback_is_one_dict_a_step(cls):
    from contextedit.pipelines.loop import sample

    s = cls.from_config(SD)
    s.set_timesteps(5)
    seen = []
    x_T = randn(*SHAPE, seed=1)
    got = sample(s, lambda x, t: 0.1 * x, x_T, generator=torch.Generator().manual_seed(0), callback=seen.append,
                 context=lambda x0, t: torch.zeros_like(x0))
    assert [(d["i"], d["t"]) for d in seen] == list(enumerate(s.timesteps.tolist())) and seen[-1]["x"] is got
    # "denoised" is the step's x̂0: the first step's, recomputed from x_T
    x0_first = s.step(0.1 * x_T, s.timesteps[0], x_T, generator=torch.Generator().manual_seed(0)).pred_original_sample
    torch.testing.assert_close(seen[0]["denoised"], x0_first, rtol=0, atol=0)
