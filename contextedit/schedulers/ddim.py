"""Contextual DDIM: sampling (Eq. 11) and inversion (docs/concepts/design.md §3) with the context-aware bias.

``ContextualDDIMScheduler`` is diffusers' ``DDIMScheduler`` (config, ``set_timesteps``,
``timesteps``, ``scale_model_input``) with a ``step`` and an ``invert_step`` that take the adapter
as ``context(x0_hat, timestep) -> r_φ``. With ``context=None`` both equal diffusers' DDIM and
DDIM inversion, and they are called as diffusers calls them: ``step(model_output, timestep,
sample, eta, ..., return_dict=True)`` with ``context`` after diffusers' own arguments, returning a
``BaseOutput`` (or ``(prev_sample, pred_original_sample)`` with ``return_dict=False``), so the
scheduler drops into any diffusers pipeline. This module also holds what the DDPM sampler
shares: the output type and the x̂0-clipping and bias stages.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from diffusers import DDIMScheduler
from diffusers.utils import BaseOutput
from torch import Tensor

from ..errors import UsageError
from .maths import Schedule, ddim_invert, ddim_step, predict_x0_eps

# The adapter seen by a sampler: r_φ(x̂0, c, t) for a predicted x̂0 and an int timestep ≥ 0.
Context = Optional[Callable[[Tensor, int], Tensor]]


@dataclass
class ContextualSchedulerOutput(BaseOutput):
    """One step's result, as diffusers' ``DDIMSchedulerOutput``: the next sample (x_s when
    sampling, x_t when inverting) and the x̂0 it was computed from. ``out[0]`` and
    ``out.to_tuple()`` work as for any diffusers output."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


def _output(prev_sample: Tensor, pred_original_sample: Tensor,
            return_dict: bool) -> ContextualSchedulerOutput | tuple[Tensor, Tensor]:
    """diffusers' convention: the output object, or ``(prev_sample, pred_original_sample)``."""
    if not return_dict:
        return prev_sample, pred_original_sample
    return ContextualSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


class ContextualSchedulerMixin:
    """Stages shared by the contextual samplers; mixed into a diffusers scheduler class."""

    @functools.cached_property
    def schedule(self) -> Schedule:
        """ᾱ in float64 (DDIM's ``final_alpha_cumprod`` below 0, or 1 where the class has none)."""
        return Schedule.from_scheduler(self)

    def _clip_x0(self, x0_hat: Tensor) -> Tensor:
        """Threshold or clip x̂0 exactly as diffusers does, before any context sees it."""
        if self.config.thresholding:
            return self._threshold_sample(x0_hat)
        if self.config.clip_sample:
            return x0_hat.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return x0_hat

    def _bias(self, context: Context, x0_hat: Tensor, level: int) -> Tensor | None:
        """b = k_level · r_φ(x̂0, c, level) (Eq. 1); None without context or where k is 0."""
        k = self.schedule.k(level)
        if context is None or k == 0:
            return None
        r = context(x0_hat, max(level, 0))  # the level below the first timestep asks for t = 0
        return (k.to(device=r.device, dtype=r.dtype) * r).to(x0_hat.dtype)  # keep the sample's dtype


class ContextualDDIMScheduler(ContextualSchedulerMixin, DDIMScheduler):
    """DDIM (η = 0) whose trajectory carries the context-aware bias b_t = k_t r_φ (Eq. 11)."""

    def _levels(self, timestep: int | Tensor) -> tuple[int, int]:
        """The current level t and the previous one s = t − T/n, as diffusers' DDIM steps."""
        if self.num_inference_steps is None:
            raise UsageError("the scheduler has no timesteps yet: call set_timesteps(n) before stepping")
        t = int(timestep)
        return t, t - self.config.num_train_timesteps // self.num_inference_steps

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: Tensor | None = None, context: Context = None,
             return_dict: bool = True) -> ContextualSchedulerOutput | tuple[Tensor, Tensor]:
        """x_t → x_s with the model output at (x_t, t) and the adapter evaluated on x̂0.

        diffusers' ``DDIMScheduler.step`` with ``context`` added before ``return_dict``."""
        if eta != 0:
            return self._stochastic_step(model_output, timestep, sample, context, eta,
                                         use_clipped_model_output, generator, variance_noise, return_dict)
        # 1. levels: t and the previous level s of the sub-sequence
        t, s = self._levels(timestep)
        # 2. ᾱ_t and ᾱ_s (final_alpha_cumprod below the first timestep)
        alpha_bar_t, alpha_bar_s = self.schedule.alpha_bar(t), self.schedule.alpha_bar(s)
        # 3. predicted x0 and ε from the model output (docs/concepts/design.md §2; DDIM formula (12))
        x0_hat, eps = predict_x0_eps(model_output, sample, alpha_bar_t, self.config.prediction_type)
        # 4. clip or threshold x̂0; optionally re-derive ε = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) from it
        x0_hat = self._clip_x0(x0_hat)
        if use_clipped_model_output:
            eps = predict_x0_eps(x0_hat, sample, alpha_bar_t, "sample")[1]
        # 5. context biases at both levels: b_t = k_t r_φ(x̂0, c, t), b_s = k_s r_φ(x̂0, c, s)
        b_t, b_s = self._bias(context, x0_hat, t), self._bias(context, x0_hat, s)
        # 6. x_s = x̃_s − b_t √(1−ᾱ_s)/√(1−ᾱ_t) + b_s (Eq. 11)
        x_s = ddim_step(x0_hat, eps, alpha_bar_t, alpha_bar_s, b_t, b_s)
        return _output(x_s, x0_hat, return_dict)

    def invert_step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
                    context: Context = None, return_dict: bool = True) -> ContextualSchedulerOutput | tuple[Tensor, Tensor]:
        """x_s → x_t: ``sample`` is the latent at s = t − T/n (the clean latent at the first step),
        ``model_output`` the prediction evaluated on it. Returns the latent at level t as
        ``prev_sample`` (the name diffusers' ``DDIMInverseScheduler.step`` gives it) with the x̂0
        it came from, or ``(x_t, x̂0)`` with ``return_dict=False``.

        ``timestep`` is t, a timestep of the forward scheduler (``timesteps.flip(0)``, with its
        ``steps_offset``): with ``context=None`` this equals ``DDIMInverseScheduler.step`` on the
        same timesteps.
        """
        # 1. levels: the target t and the source s (ᾱ_s = final_alpha_cumprod below the first timestep)
        t, s = self._levels(timestep)
        # 2. ᾱ_s and ᾱ_t
        alpha_bar_s, alpha_bar_t = self.schedule.alpha_bar(s), self.schedule.alpha_bar(t)
        # 3. x̂0 = (x_s − √(1−ᾱ_s) ε_θ)/√ᾱ_s and ε̂ from the output at x_s (docs/concepts/design.md §3.2)
        x0_hat, eps = predict_x0_eps(model_output, sample, alpha_bar_s, self.config.prediction_type)
        # 4. clip or threshold x̂0, as diffusers' DDIMInverseScheduler clips it
        x0_hat = self._clip_x0(x0_hat)
        # 5. context biases b_s, b_t; the pipeline's context evaluates r_φ on the true clean latents
        b_s, b_t = self._bias(context, x0_hat, s), self._bias(context, x0_hat, t)
        # 6. d = ε̂ − b_s/√(1−ᾱ_s); x_t = √ᾱ_t x̂0 + √(1−ᾱ_t) d + b_t (inverse of Eq. 11)
        return _output(ddim_invert(x0_hat, eps, alpha_bar_s, alpha_bar_t, b_s, b_t), x0_hat, return_dict)

    def _stochastic_step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
                         context: Context, eta: float, use_clipped_model_output: bool,
                         generator: torch.Generator | None, variance_noise: Tensor | None,
                         return_dict: bool) -> ContextualSchedulerOutput | tuple[Tensor, Tensor]:
        """η > 0 is plain diffusers DDIM: Eq. 11 is derived for σ_t = 0 only."""
        if context is not None:
            raise UsageError(f"contextual DDIM supports eta=0 only (got eta={eta}); "
                             "use eta=0 or the DDPM sampler for stochastic sampling")
        out = super().step(model_output, int(timestep), sample, eta=eta,
                           use_clipped_model_output=use_clipped_model_output,
                           generator=generator, variance_noise=variance_noise)
        return _output(out.prev_sample, out.pred_original_sample, return_dict)
