"""The source pass of an edit (docs/concepts/design.md §3.4, §5.5): DDIM inversion, and what makes it hold under
classifier-free guidance.

Plain DDIM inversion gives the noise of the *unguided* model, so guided sampling drifts away
from the source. The modes (``contextedit edit --inversion``):

- ``ddim``: inversion only; the source attention is recorded during inversion (step j is
  fused into sampling step T−1−j, which sees the same timestep).
- ``negative-prompt``: the same inversion; sampling uses the source prompt's states as the
  unconditional branch (Miyake et al. 2023).
- ``null-text``: per sampling step, an unconditional embedding optimised so that guided sampling
  with the source prompt retraces the inversion trajectory (Mokady et al. 2023; Video-P2P).
- ``direct``: the guided source branch is evaluated on the inversion trajectory itself; the
  difference between where its step lands and the trajectory's next level is an offset added
  after each sampling step (Ju et al. 2023, "PnP Inversion"), and its attention is what the
  target fuses. Sampling the source prompt then returns the source latents exactly.

For ``null-text`` and ``direct`` the source attention comes from that guided replay at the same
level and timestep as the target's step (the conditional half), not from the inversion.

``direct-one-pass`` needs no second pass (:func:`guided_inversion`): the UNet is evaluated on each
level at that level's own timestep, where sampling will evaluate it, with both halves in one call;
the conditional half takes the inversion step, and the pair is the source branch's output there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..attention.fusion import FusionStore, record_attention
from .loop import Denoiser, context_for, invert
from .inversion_modes import names

INVERSIONS = names()  # the registered modes (:mod:`.inversion_modes`)


@dataclass
class SourcePass:
    """The inverted source: ``levels[k]`` is the latent at the k-th level (levels[0] = x0,
    levels[T] = x_T); sampling step i goes from level T−i to T−i−1."""

    levels: list[torch.Tensor]
    store: FusionStore | None                        # None: a live source branch (:mod:`.source_branch`)
    outputs: list | dict | None = None               # direct: the source branch's (uncond, cond) per step
    null_text: list[torch.Tensor] | None = None      # null-text: unconditional states of step i
    context: object = None                           # r_φ of the source branch (on x̂0, source prompt)
    seconds: dict = field(default_factory=dict)
    branch: object = None                            # live: the :class:`~.source_branch.LiveBranch`
    _offsets: dict = field(default_factory=dict)

    @property
    def x_T(self) -> torch.Tensor:
        return self.levels[-1]

    def level_after(self, i: int) -> torch.Tensor:
        return self.levels[len(self.levels) - 2 - i]

    def offsets(self, scheduler, guidance: float) -> list[torch.Tensor] | None:
        """Direct inversion's offsets at ``guidance`` (None for the other modes), computed once each."""
        if self.outputs is None:
            return None
        if isinstance(self.outputs, dict):  # live: the source branch's step i fills outputs[i] before step i ends
            return LazyOffsets(scheduler, self.levels, self.outputs, guidance, self.context)
        if guidance not in self._offsets:
            self._offsets[guidance] = direct_offsets(scheduler, self.levels, self.outputs, guidance, self.context)
        return self._offsets[guidance]


@dataclass(frozen=True)
class Recording:
    """Which sampling steps need the source's self-attention and which its cross-attention."""

    self_steps: frozenset[int] = frozenset()
    cross_steps: frozenset[int] = frozenset()

    def scope(self, unet, store: FusionStore | None, step: int, cond_only: bool = False):
        wants_self, wants_cross = step in self.self_steps, step in self.cross_steps
        if store is None or not (wants_self or wants_cross):
            return contextlib.nullcontext()
        return record_attention(unet, store, step=step, cond_only=cond_only, self_attention=wants_self,
                                cross_attention=wants_cross)


def ddim_inversion(unet, scheduler, x0: torch.Tensor, source_text: torch.Tensor, *, adapter=None,
                   store: FusionStore | None = None, record: Recording = Recording(),
                   callback=None) -> list[torch.Tensor]:
    """Contextual DDIM inversion of x0 (frames as batch); returns every level x_0 … x_T.

    Inversion step j records its attention under sampling step T−1−j, as ``record`` asks.
    """
    steps, frames = len(scheduler.timesteps), x0.shape[0]

    levels: list[torch.Tensor] = []
    invert(scheduler, Denoiser(unet, source_text, num_frames=frames), x0,
           context=context_for(adapter, x0, source_text, frames, fixed=True),
           step_context=lambda j, t: record.scope(unet, store, steps - 1 - j),
           callback=callback, trajectory=levels)
    return levels


@torch.no_grad()
def replay_source(unet, scheduler, levels: list[torch.Tensor], source_text: torch.Tensor, uncond, *,
                  store: FusionStore | None = None, record: Recording = Recording(),
                  callback=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The source branch on the inversion trajectory: step i evaluated on level T−i, both halves
    of the guided batch in one call, its conditional attention recorded under step i. Returns the
    (unconditional, conditional) outputs of every step: :func:`direct_offsets` turns them into
    direct inversion's offsets for any guidance scale.

    ``uncond`` is one tensor, or one per step (null-text).
    """
    frames = levels[0].shape[0]
    outputs = []
    for i, t in enumerate(scheduler.timesteps):
        u = uncond[i] if isinstance(uncond, list) else uncond
        with record.scope(unet, store, i, cond_only=True):
            outputs.append(Denoiser(unet, source_text, u, num_frames=frames).halves(levels[len(levels) - 1 - i], t))
        if callback is not None:
            # where the source branch's step i lands: level T−i−1 of the trajectory (direct inversion)
            callback({"i": i, "t": int(t), "x": levels[len(levels) - 2 - i], "denoised": None})
    return outputs


@torch.no_grad()
def guided_inversion(unet, scheduler, x0: torch.Tensor, source_text: torch.Tensor, uncond: torch.Tensor, *,
                     adapter=None, store: FusionStore | None = None, record: Recording = Recording(),
                     callback=None) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Direct inversion's source pass in one pass (issue 31): the levels x_0 … x_T and the source
    branch's (unconditional, conditional) output of every sampling step, as :func:`replay_source`
    gives them, for T·2F + F frames of UNet work instead of T·F + T·2F.

    Level j ≥ 1 is evaluated at its own timestep, the one sampling step T−j sees there (plain
    inversion evaluates it at the next level's): the guided pair is step T−j's source output and
    its attention is recorded under that step, and its conditional half takes the inversion step
    (a DDIM inverse step with ε of the level it leaves, as exact as plain inversion's). Level 0
    needs only the conditional half; level T, the pair (sampling step 0)."""
    steps, frames = len(scheduler.timesteps), x0.shape[0]
    levels: list[torch.Tensor] = []
    outputs: list = [None] * steps
    pair = Denoiser(unet, source_text, uncond, num_frames=frames)

    def source_branch(i: int, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with record.scope(unet, store, i, cond_only=True):
            outputs[i] = pair.halves(latents, scheduler.timesteps[i])
        return outputs[i]

    def model(latents: torch.Tensor, t) -> torch.Tensor:
        j = len(levels) - 1  # invert() has appended levels 0 … j
        if j == 0:
            return Denoiser(unet, source_text, num_frames=frames)(latents, t)
        return source_branch(steps - j, latents)[1]

    invert(scheduler, model, x0, context=context_for(adapter, x0, source_text, frames, fixed=True),
           callback=callback, trajectory=levels)
    source_branch(0, levels[-1])
    return levels, outputs


@torch.no_grad()
def direct_offsets(scheduler, levels: list[torch.Tensor], outputs: list[tuple[torch.Tensor, torch.Tensor]],
                   guidance: float, context=None) -> list[torch.Tensor]:
    """Direct inversion's offsets at ``guidance``: level(T−i−1) minus where the guided source step
    from level T−i lands. No UNet call: the source branch's outputs are kept."""
    return [direct_offset(scheduler, levels, i, t_int, out, guidance, context)
            for i, (t_int, out) in enumerate(zip(scheduler.timesteps.tolist(), outputs))]


def direct_offset(scheduler, levels, i: int, t_int: int, output: tuple[torch.Tensor, torch.Tensor], guidance, context=None):
    """Step i's offset: level T−i−1 minus where the guided source step from level T−i lands."""
    uncond, cond = output
    x_t = levels[len(levels) - 1 - i]
    x_s = scheduler.step(uncond + guidance * (cond - uncond), t_int, x_t, context=context).prev_sample
    return levels[len(levels) - 2 - i] - x_s


@dataclass
class LazyOffsets:
    """Direct inversion's offsets of a live source branch: step i's from ``outputs[i]``, which the
    source part of sampling step i's own UNet call has just filled."""

    scheduler: object
    levels: list
    outputs: dict
    guidance: object
    context: object = None

    def __getitem__(self, i: int) -> torch.Tensor:
        t_int = int(self.scheduler.timesteps[i])
        return direct_offset(self.scheduler, self.levels, i, t_int, self.outputs[i], self.guidance, self.context)


def null_text_optimisation(unet, scheduler, levels: list[torch.Tensor], source_text: torch.Tensor,
                           uncond: torch.Tensor, guidance: float, *, adapter=None, inner_steps: int = 10,
                           lr: float = 1e-2, callback=None) -> list[torch.Tensor]:
    """Null-text inversion (Mokady et al. 2023, Alg. 1): for each sampling step i, optimise the
    unconditional states ∅_i with Adam so that the guided step from the current latent lands on
    level T−i−1 of the inversion; then take that step with ∅_i and go on from where it lands."""
    frames = levels[0].shape[0]
    context = context_for(adapter, None, source_text, frames)
    x = levels[-1]
    null, out = uncond.detach().clone(), []
    steps = len(scheduler.timesteps)
    for i, (t, t_int) in enumerate(zip(scheduler.timesteps, scheduler.timesteps.tolist())):
        target = levels[len(levels) - 2 - i]
        with torch.no_grad():
            cond = Denoiser(unet, source_text, num_frames=frames)(x, t)
        null = null.detach().requires_grad_(True)
        opt = torch.optim.Adam([null], lr=lr * (1.0 - i / (2 * steps)))
        for _ in range(inner_steps):
            with torch.enable_grad():
                u = Denoiser(unet, null, num_frames=frames)(x, t)
                guided = u + guidance * (cond - u)
                x_s = scheduler.step(guided, t_int, x, context=context).prev_sample
                loss = torch.nn.functional.mse_loss(x_s.float(), target.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if float(loss.detach()) < 1e-5:
                break
        null = null.detach()
        out.append(null.clone())
        with torch.no_grad():
            u = Denoiser(unet, null, num_frames=frames)(x, t)
            x, denoised = scheduler.step(u + guidance * (cond - u), t_int, x, context=context, return_dict=False)
        if callback is not None:
            callback({"i": i, "t": t_int, "x": x, "denoised": denoised})
    return out
