"""The one denoising loop (edit and generate) and its inverse (DDIM inversion for edit).

Read like k-diffusion's samplers: a loop over timesteps calling the model (with guidance), the
scheduler's step and a callback. Everything specific — the adapter context, attention fusion,
progress — comes in as arguments.

Both loops (and the source replay and null-text loops of :mod:`.inversion`) call ``callback``
after each step with one dict, as k-diffusion's samplers do: ``{"i": step index, "t": int
timestep, "x": the latents after the step, "denoised": the x̂0 the step computed}``
(``"denoised"`` is None where a loop computes none).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import torch

Context = Optional[Callable[[torch.Tensor, int], torch.Tensor]]
StepContext = Optional[Callable[[int, int], ContextManager]]
Callback = Optional[Callable[[dict], None]]  # callback({"i", "t", "x", "denoised"}) after each step
AfterStep = Optional[Callable[[int, torch.Tensor], torch.Tensor]]


@dataclass
class Denoiser:
    """ε_θ (or v_θ) of latents (B·F, C, H, W) with classifier-free guidance in one UNet call.

    ``num_frames`` is None for the plain image UNet and F for the inflated video UNet, whose
    processors read it from ``cross_attention_kwargs``.
    """

    unet: torch.nn.Module
    text: torch.Tensor                     # (1, L, D) conditional text states
    uncond: torch.Tensor | None = None     # (1, L, D) unconditional / negative text states
    guidance: float | torch.Tensor = 1.0   # a tensor (F, 1, h, w): a guidance scale per latent cell
    num_frames: int | None = None

    @property
    def guided(self) -> bool:
        return self.uncond is not None and (isinstance(self.guidance, torch.Tensor) or self.guidance != 1.0)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        if not self.guided:
            return self._forward(x, t, [self.text])
        uncond, cond = self.halves(x, t)
        return uncond + self.guidance * (cond - uncond)

    def halves(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional and the conditional output, from one batched UNet call."""
        return self._forward(x, t, [self.uncond, self.text]).chunk(2)

    def _forward(self, x: torch.Tensor, t, states: list[torch.Tensor]) -> torch.Tensor:
        per_item = x.shape[0]
        states = torch.cat([s.expand(per_item, -1, -1) for s in states])
        x_in = torch.cat([x] * (len(states) // per_item))
        kwargs = {"num_frames": self.num_frames} if self.num_frames is not None else None
        return self.unet(x_in, t, encoder_hidden_states=states.to(x.dtype), cross_attention_kwargs=kwargs, return_dict=False)[0]


def _timesteps(timesteps: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Each timestep as the tensor the UNet takes and the int the rest wants, read back once:
    ``int(t)`` of a CUDA tensor every step would stall the host on the GPU (one sync per step)."""
    return list(zip(timesteps, timesteps.tolist()))


def _step_scope(step_context: StepContext, i: int, t: int) -> ContextManager:
    return step_context(i, t) if step_context is not None else contextlib.nullcontext()


def context_for(adapter, x0, text, frames, fixed: bool = False, uncond=None, scale: float = 1.0):
    """r_φ as the schedulers want it (a ``Context``): on the true source latents (inversion) or
    on x̂0 (sampling: edit, and generate with one frame).

    With ``uncond`` and ``scale`` ≠ 1 the bias is guided like the noise (``--context-guidance``):
    r_u + scale·(r_c − r_u), which scales the part of r_φ that the prompt decides."""
    if adapter is None:
        return None
    guided = uncond is not None and scale != 1.0

    def context(x0_hat: torch.Tensor, t: int) -> torch.Tensor:
        x = x0 if fixed else x0_hat
        level = torch.tensor([t], device=x.device)
        if not guided:
            return adapter(x.float(), text.float(), level, num_frames=frames).to(x0_hat.dtype)
        both = adapter(torch.cat([x, x]).float(), torch.cat([uncond.expand_as(text), text]).float(), level,
                       num_frames=frames).chunk(2)
        return (both[0] + scale * (both[1] - both[0])).to(x0_hat.dtype)
    return context


@torch.no_grad()
def sample(scheduler, model: Callable, latents: torch.Tensor, *, context: Context = None,
           generator: torch.Generator | None = None, step_context: StepContext = None,
           after_step: AfterStep = None, callback: Callback = None) -> torch.Tensor:
    """Reverse process over ``scheduler.timesteps`` (contextual DDIM or DDPM).

    ``after_step(i, latents)`` may correct the latents after step i (direct inversion's offset,
    LocalBlend)."""
    for i, (t, t_int) in enumerate(_timesteps(scheduler.timesteps)):
        with _step_scope(step_context, i, t_int):
            model_output = model(scheduler.scale_model_input(latents, t), t)
        latents, denoised = scheduler.step(model_output, t_int, latents, generator=generator, context=context,
                                           return_dict=False)
        if after_step is not None:
            latents = after_step(i, latents)
        if callback is not None:
            callback({"i": i, "t": t_int, "x": latents, "denoised": denoised})
    return latents


@torch.no_grad()
def invert(scheduler, model: Callable, latents: torch.Tensor, *, context: Context = None,
           step_context: StepContext = None, callback: Callback = None,
           trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Contextual DDIM inversion x_0 → x_T over the sampler's timesteps, reversed.

    Step j maps level s to level t (the exact inverse of sampling step T−1−j); the model is
    evaluated on x_s at timestep t, as Tune-A-Video and FateZero do, so inversion step j and
    sampling step T−1−j condition the UNet on the same timestep (fusion pairs them).
    ``trajectory``, when given, receives every level: x_0, x_{t_1}, …, x_T.
    """
    if trajectory is not None:
        trajectory.append(latents)
    for j, (t, t_int) in enumerate(_timesteps(scheduler.timesteps.flip(0))):
        with _step_scope(step_context, j, t_int):
            model_output = model(latents, t)
        latents, denoised = scheduler.invert_step(model_output, t_int, latents, context=context, return_dict=False)
        if trajectory is not None:
            trajectory.append(latents)
        if callback is not None:
            callback({"i": j, "t": t_int, "x": latents, "denoised": denoised})
    return latents
