"""Contextual DDPM: ancestral sampling from the biased posterior (Eq. 3 with x̂0, i.e. Eq. 7).

``ContextualDDPMScheduler`` is diffusers' ``DDPMScheduler`` (config, ``set_timesteps``,
``previous_timestep``) with a ``step`` that takes the adapter as ``context(x0_hat, timestep)``.
With ``context=None`` and the same generator it equals diffusers' step, noise included, and it is
called as diffusers calls it: ``step(model_output, timestep, sample, generator, context=None,
return_dict=True)``.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..errors import UsageError
from .ddim import Context, ContextualSchedulerMixin, ContextualSchedulerOutput, _output
from .maths import ddpm_posterior_mean, ddpm_posterior_variance, predict_x0_eps

SUPPORTED_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")


class ContextualDDPMScheduler(ContextualSchedulerMixin, DDPMScheduler):
    """DDPM whose reverse kernel is q_φ(x_s | x_t, x̂0, c): mean Eq. 7, variance of Eq. 3."""

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
             generator: torch.Generator | None = None, context: Context = None,
             return_dict: bool = True) -> ContextualSchedulerOutput | tuple[Tensor, Tensor]:
        """x_t → x_s ~ N(mean, var) with the model output at (x_t, t) and r_φ evaluated on x̂0.

        diffusers' ``DDPMScheduler.step`` with ``context`` added before ``return_dict``."""
        if self.config.variance_type not in SUPPORTED_VARIANCE_TYPES:
            raise UsageError(f"variance_type {self.config.variance_type!r} is not supported by the contextual "
                             f"DDPM sampler; use a scheduler config with one of {SUPPORTED_VARIANCE_TYPES}")
        # 1. levels: t and the previous timestep s of the sub-sequence (ᾱ_s = 1 after the last)
        t = int(timestep)
        s = int(self.previous_timestep(t))
        # 2. ᾱ_t and ᾱ_s
        alpha_bar_t, alpha_bar_s = self.schedule.alpha_bar(t), self.schedule.alpha_bar(s)
        # 3. predicted x0 from the model output (docs/concepts/design.md §2), clipped or thresholded as diffusers does
        x0_hat, _ = predict_x0_eps(model_output, sample, alpha_bar_t, self.config.prediction_type)
        x0_hat = self._clip_x0(x0_hat)
        # 4. context biases at both levels: b_t = k_t r_φ(x̂0, c, t), b_s = k_s r_φ(x̂0, c, s)
        b_t, b_s = self._bias(context, x0_hat, t), self._bias(context, x0_hat, s)
        # 5. mean = √ᾱ_s β_t/(1−ᾱ_t) x̂0 + √α_t (1−ᾱ_s)/(1−ᾱ_t) (x_t − b_t) + b_s (Eq. 7)
        x_s = ddpm_posterior_mean(sample, x0_hat, alpha_bar_t, alpha_bar_s, b_t, b_s)
        # 6. add noise with the Eq. 3 variance for t > 0, drawn exactly as diffusers draws it
        if t > 0:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=model_output.dtype)
            x_s = x_s + self._noise_std(alpha_bar_t, alpha_bar_s).to(noise.device, noise.dtype) * noise
        return _output(x_s, x0_hat, return_dict)

    def _noise_std(self, alpha_bar_t: Tensor, alpha_bar_s: Tensor) -> Tensor:
        """σ of the added noise for the configured ``variance_type`` (float64)."""
        if self.config.variance_type == "fixed_large":
            return (1 - alpha_bar_t / alpha_bar_s).sqrt()  # β_t
        # fixed_small (and its log form, the same number): the posterior variance, clamped as diffusers
        return ddpm_posterior_variance(alpha_bar_t, alpha_bar_s).clamp(min=1e-20).sqrt()
