"""ContextDiff's contextual diffusion as small functions of tensors (docs/concepts/design.md §1–3).

Notation: ᾱ_t = ``alpha_bar_t``; s is the previous level of the sampled sub-sequence;
b_t = k_t · r_φ(x0, c, t) with k_t = √ᾱ_t (1 − √ᾱ_t) (Eq. 1). Every function takes the bias
already scaled (``b_t``), or ``None`` for no bias, so that with no context each reduces to the
plain DDPM / DDIM formula of diffusers.

Schedule quantities live in float64 (as improved-diffusion keeps them) and are cast to the
sample's dtype and device only where they multiply a sample (``_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

Level = Union[int, Tensor]  # one timestep, or a (B,) batch of them broadcast over the sample dims
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class Schedule:
    """The noise schedule of a base model, in float64.

    ``alphas_cumprod`` is the ᾱ_t that diffusers defines for the config (any ``beta_schedule``,
    ``trained_betas``, ``rescale_betas_zero_snr``); ``final_alpha_cumprod`` is the ᾱ used for a
    level below 0 (DDIM's ``final_alpha_cumprod``; 1 for DDPM).
    """

    alphas_cumprod: Tensor
    final_alpha_cumprod: Tensor
    prediction_type: str = "epsilon"

    @classmethod
    def from_scheduler(cls, scheduler: Any, final_alpha_cumprod: float | Tensor | None = None) -> Schedule:
        """Read ᾱ from a diffusers scheduler (DDIM's ``final_alpha_cumprod`` unless one is given)."""
        if final_alpha_cumprod is None:
            final_alpha_cumprod = getattr(scheduler, "final_alpha_cumprod", 1.0)
        return cls(
            alphas_cumprod=scheduler.alphas_cumprod.detach().cpu().double(),
            final_alpha_cumprod=torch.as_tensor(final_alpha_cumprod).detach().cpu().double(),
            prediction_type=scheduler.config.get("prediction_type", "epsilon"),
        )

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        """Build from any diffusers scheduler config, using diffusers' own beta computation."""
        from diffusers import DDIMScheduler

        return cls.from_scheduler(DDIMScheduler.from_config(config))

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def alpha_bar(self, t: Level) -> Tensor:
        """ᾱ at level(s) t (float64); ``final_alpha_cumprod`` where t < 0."""
        t = torch.as_tensor(t).long()
        inside = self.alphas_cumprod.to(t.device)[t.clamp(min=0)]
        return torch.where(t >= 0, inside, self.final_alpha_cumprod.to(t.device))

    def k(self, t: Level) -> Tensor:
        """k_t, the scale of the context bias at level(s) t (Eq. 1)."""
        return k_t(self.alpha_bar(t))


def as_schedule(schedule_or_scheduler: Any) -> Schedule:
    """Accept a ``Schedule``, a contextual scheduler (its ``.schedule``) or any diffusers scheduler."""
    if isinstance(schedule_or_scheduler, Schedule):
        return schedule_or_scheduler
    own = getattr(schedule_or_scheduler, "schedule", None)
    return own if isinstance(own, Schedule) else Schedule.from_scheduler(schedule_or_scheduler)


def _at(coef: Tensor | float, like: Tensor) -> Tensor:
    """Cast a float64 coefficient (scalar or per-batch (B,)) to ``like``'s dtype/device, broadcastable."""
    coef = torch.as_tensor(coef, dtype=torch.float64)
    if coef.ndim == 0 and coef.device.type == "cpu" and like.device.type != "cpu":
        return float(coef)  # a Python scalar needs no host-to-device copy (which would stall CUDA)
    if coef.ndim == 1:
        coef = coef.reshape(-1, *([1] * (like.ndim - 1)))
    return coef.to(device=like.device, dtype=like.dtype)


def k_t(alpha_bar_t: Tensor) -> Tensor:
    """k_t = √ᾱ_t · (1 − √ᾱ_t): the bias vanishes at both ends of the chain (Eq. 1)."""
    root = alpha_bar_t.sqrt()
    return root * (1 - root)


# Forward process and training target ------------------------------------------------------


def q_sample(schedule: Any, x0: Tensor, noise: Tensor, t: Level, r: Tensor | None = None) -> Tensor:
    """Draw x_t ~ q_φ(x_t | x0, c) by reparameterisation (Eq. 1 / Eq. 8).

    x_t = √ᾱ_t x0 + k_t r_φ(x0, c, t) + √(1 − ᾱ_t) ε. ``r`` is the adapter's raw output (shape of
    x0) or None; gradients reach it through x_t, so adapter and UNet train jointly (docs/concepts/design.md §2).
    """
    alpha_bar = as_schedule(schedule).alpha_bar(t)
    x_t = _at(alpha_bar.sqrt(), x0) * x0 + _at((1 - alpha_bar).sqrt(), x0) * noise
    if r is not None:
        x_t = x_t + _at(k_t(alpha_bar), r) * r
    return x_t


def training_target(schedule: Any, x0: Tensor, x_t: Tensor, t: Level,
                    prediction_type: str | None = None) -> Tensor:
    """The regression target that carries the bias (docs/concepts/design.md §2; Eq. 6 with λ_t = ᾱ_t/(1−ᾱ_t)).

    ε̃ = (x_t − √ᾱ_t x0)/√(1 − ᾱ_t) = ε + b_t/√(1 − ᾱ_t); for v: √ᾱ_t ε̃ − √(1 − ᾱ_t) x0; for
    "sample": x0. Computed from x_t (not detached) so that ‖ε_θ − ε̃‖² is exactly the x0 loss
    of Eq. 6 and its gradient reaches r_φ through the target as well as through the model input.
    """
    schedule = as_schedule(schedule)
    prediction_type = prediction_type or schedule.prediction_type
    alpha_bar = schedule.alpha_bar(t)
    sqrt_ab, sqrt_one_minus_ab = _at(alpha_bar.sqrt(), x0), _at((1 - alpha_bar).sqrt(), x0)
    eps_tilde = (x_t - sqrt_ab * x0) / sqrt_one_minus_ab
    if prediction_type == "epsilon":
        return eps_tilde
    if prediction_type == "v_prediction":
        return sqrt_ab * eps_tilde - sqrt_one_minus_ab * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")


# Reverse process ------------------------------------------------------------------------


def predict_x0_eps(model_output: Tensor, x_t: Tensor, alpha_bar_t: Tensor,
                   prediction_type: str) -> tuple[Tensor, Tensor]:
    """x̂0 and ε̂ from the model output at x_t, as diffusers derives them (docs/concepts/design.md §2).

    x̂0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t carries no bias term: the bias is inside ε̃, the ε target.
    A v prediction is converted: x̂0 = √ᾱ_t x_t − √(1−ᾱ_t) v, ε̂ = √ᾱ_t v + √(1−ᾱ_t) x_t.
    """
    a, sigma = _at(alpha_bar_t.sqrt(), x_t), _at((1 - alpha_bar_t).sqrt(), x_t)
    if prediction_type == "epsilon":
        return (x_t - sigma * model_output) / a, model_output
    if prediction_type == "v_prediction":
        return a * x_t - sigma * model_output, a * model_output + sigma * x_t
    if prediction_type == "sample":
        return model_output, (x_t - a * model_output) / sigma
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")


def _ddim_move(x0_hat: Tensor, eps: Tensor, alpha_bar_from: Tensor, alpha_bar_to: Tensor,
               b_from: Tensor | None, b_to: Tensor | None) -> Tensor:
    """Deterministic DDIM move along x = √ᾱ x̂0 + b + √(1−ᾱ) n between two levels (η = 0).

    n = ε̂ − b_from/√(1−ᾱ_from) is the unbiased noise direction; the result is
    √ᾱ_to x̂0 + √(1−ᾱ_to) n + b_to. A None bias (k = 0) contributes nothing, even where
    √(1−ᾱ) = 0.
    """
    x = _at(alpha_bar_to.sqrt(), x0_hat) * x0_hat + _at((1 - alpha_bar_to).sqrt(), eps) * eps
    if b_from is not None:
        x = x - _at(((1 - alpha_bar_to) / (1 - alpha_bar_from)).sqrt(), b_from) * b_from
    if b_to is not None:
        x = x + b_to
    return x


def ddim_step(x0_hat: Tensor, eps: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor,
              b_t: Tensor | None = None, b_s: Tensor | None = None) -> Tensor:
    """Contextual DDIM sampling step x_t → x_s, η = 0 (Eq. 11).

    x̃_s = √ᾱ_s x̂0 + √(1−ᾱ_s) ε̂,   x_s = x̃_s − b_t √(1−ᾱ_s)/√(1−ᾱ_t) + b_s.
    ε̂ stands for (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t), which it equals when x̂0 is not clipped.
    """
    return _ddim_move(x0_hat, eps, alpha_bar_t, alpha_bar_s, b_t, b_s)


def ddim_invert(x0_hat: Tensor, eps: Tensor, alpha_bar_s: Tensor, alpha_bar_t: Tensor,
                b_s: Tensor | None = None, b_t: Tensor | None = None) -> Tensor:
    """Contextual DDIM inversion step x_s → x_t, the inverse of Eq. 11 (docs/concepts/design.md §3.2).

    With x̂0, ε̂ from the model at x_s: d = ε̂ − b_s/√(1−ᾱ_s), x_t = √ᾱ_t x̂0 + √(1−ᾱ_t) d + b_t.
    An exact model keeps x on x = √ᾱ x0 + b + √(1−ᾱ) n, which Eq. 11 then walks back.
    """
    return _ddim_move(x0_hat, eps, alpha_bar_s, alpha_bar_t, b_s, b_t)


def ddpm_posterior_mean(x_t: Tensor, x0_hat: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor,
                        b_t: Tensor | None = None, b_s: Tensor | None = None) -> Tensor:
    """Mean of q_φ(x_s | x_t, x̂0, c) (Eq. 3), used as the reverse mean with x̂0 (Eq. 7).

    α_t = ᾱ_t/ᾱ_s, β_t = 1 − α_t:
    mean = √ᾱ_s β_t/(1−ᾱ_t) x̂0 + √α_t (1−ᾱ_s)/(1−ᾱ_t) (x_t − b_t) + b_s.
    """
    alpha_t = alpha_bar_t / alpha_bar_s
    coef_x0 = alpha_bar_s.sqrt() * (1 - alpha_t) / (1 - alpha_bar_t)
    coef_xt = alpha_t.sqrt() * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    if b_t is not None:
        x_t = x_t - b_t
    mean = _at(coef_x0, x0_hat) * x0_hat + _at(coef_xt, x_t) * x_t
    return mean + b_s if b_s is not None else mean


def ddpm_posterior_variance(alpha_bar_t: Tensor, alpha_bar_s: Tensor) -> Tensor:
    """Variance of q_φ(x_s | x_t, x0, c): (1−ᾱ_s) β_t/(1−ᾱ_t), unchanged by the bias (Eq. 3)."""
    return (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)
