"""Contextual samplers (ContextDiff Eq. 1, 3, 7, 11) and the maths they and training share."""

from .ddim import Context, ContextualDDIMScheduler, ContextualSchedulerOutput
from .ddpm import ContextualDDPMScheduler
from .maths import (
    Schedule,
    as_schedule,
    ddim_invert,
    ddim_step,
    ddpm_posterior_mean,
    ddpm_posterior_variance,
    k_t,
    predict_x0_eps,
    q_sample,
    training_target,
)

__all__ = [
    "Context",
    "ContextualDDIMScheduler",
    "ContextualDDPMScheduler",
    "ContextualSchedulerOutput",
    "Schedule",
    "as_schedule",
    "ddim_invert",
    "ddim_step",
    "ddpm_posterior_mean",
    "ddpm_posterior_variance",
    "k_t",
    "predict_x0_eps",
    "q_sample",
    "training_target",
]
