"""Where the source attention an edit fuses comes from (``edit --source``).

- ``stored``: recorded once by the source pass (the inversion, or the guided replay of direct and
  null-text inversion, or ``direct-one-pass``'s one guided pass) into a
  :class:`~contextedit.attention.fusion.FusionStore` that every prompt reads;
- ``live``: the source branch runs in each sampling step's own UNet batch, PnP Inversion's way
  (:mod:`contextedit.attention.live`). No store is kept and direct inversion needs no replay: its
  offsets come from the same call (``direct-one-pass``'s from its inversion pass, so the source
  rides along only where a step fuses it). Each prompt pays the source's share of its batch again;
- ``auto``: ``stored`` while :func:`store_bytes` fits in half the device's free memory, else ``live``.

Both give the same frames: the source part of a live call is exactly the call the stored branch
recorded (same latents, timestep, text states), and the fusion maths is the same code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..attention.fusion import FusionPlan, FusionStore, fuse_attention
from ..attention.live import live_attention
from ..attention.processors import attention_modules
from .loop import Denoiser

STORE_SHARE = 0.5  # auto keeps the store while it needs at most this share of the free memory


def store_bytes(unet, frames: int, latent_hw: tuple[int, int], self_steps: int, cross_steps: int,
                dtype: torch.dtype) -> int:
    """What a stored branch records, without recording it: per fused step, every self-attention
    layer's Q and K and every cross-attention layer's Q, each (F, tokens, inner dim), tokens from
    the block's resolution (diffusers' UNet halves it per down block but the last)."""
    blocks = len(unet.config.down_block_types)
    h, w = latent_hw
    per_element = torch.finfo(dtype).bits // 8
    total = 0
    for name, attn in attention_modules(unet).items():
        part, _, rest = name.partition(".")
        index = int(rest.split(".")[0]) if part in ("down_blocks", "up_blocks") else blocks - 1
        level = index if part == "down_blocks" else blocks - 1 - index if part == "up_blocks" else blocks - 1
        tokens = (-(-h // 2 ** level)) * (-(-w // 2 ** level))
        inner = attn.to_q.out_features
        if attn.is_cross_attention:
            total += cross_steps * frames * tokens * inner * per_element
        else:
            total += self_steps * 2 * frames * tokens * inner * per_element
    return total


def free_bytes(device: torch.device) -> int:
    """Free memory where the store would live: the GPU's, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:  # psutil is optional: read Linux's own figure
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024


def choose_source(mode: str, needed: int, free: int) -> str:
    """``live`` or ``stored`` for ``--source mode``: auto keeps the store while it needs at most
    ``STORE_SHARE`` of ``free`` bytes (the rest is the sampling's own activations)."""
    if mode != "auto":
        return mode
    return "stored" if needed <= STORE_SHARE * free else "live"


@dataclass
class LiveBranch:
    """The source branch of a live edit: what sampling step i prepends to its batch.

    Step i's source part is the call the stored branch recorded under step i: for the replay
    modes the guided source on level T−i ([uncond_i, source text], conditional half recorded),
    else the inversion's own call (level T−1−i, source text alone, the timestep of sampling step i).
    """

    levels: list
    text: torch.Tensor
    uncond: object          # one tensor, or one per step (null-text); None: inversion's call
    record: object          # the stored branch's :class:`~.inversion.Recording`
    timesteps: torch.Tensor
    frames: int

    @property
    def guided(self) -> bool:
        return self.uncond is not None

    def inputs(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.guided:
            return self.levels[len(self.levels) - 2 - i], [self.text]
        u = self.uncond[i] if isinstance(self.uncond, list) else self.uncond
        return self.levels[len(self.levels) - 1 - i], [u, self.text]

    def scope(self, unet, i: int, plan: FusionPlan | None, *, with_source: bool):
        """The processors of sampling step i: the source part (when the batch carries one) recorded
        as the stored branch would, the target fused from it as ``plan`` says. Without a plan the
        processors stay: every clip of a batch attends to itself alone."""
        if plan is None:
            return contextlib.nullcontext()
        if not with_source:  # nothing recorded at this step: fused from an empty store, as the stored branch is
            return fuse_attention(unet, FusionStore(offload="device"), step=i, plan=plan)
        flags = dict(self_attention=i in self.record.self_steps, cross_attention=i in self.record.cross_steps)
        return live_attention(unet, i, plan, self.frames * (2 if self.guided else 1), cond_only=self.guided, **flags)

    @torch.no_grad()
    def recorded(self, unet, i: int) -> FusionStore:
        """Step i's source attention in a store of its own, from one call of the source part alone
        (for the region probes, which sample nothing)."""
        store = FusionStore(offload="device")
        x, states = self.inputs(i)
        with self.record.scope(unet, store, i, cond_only=self.guided):
            LiveDenoiser.forward_parts(unet, [(x, states)], self.timesteps[i], self.frames)
        return store


class LiveDenoiser(Denoiser):
    """A :class:`~.loop.Denoiser` whose UNet call also carries the live source part of its step
    (``parts``, set by the step's context); the source's outputs go to ``source_out``."""

    parts: tuple | None = None
    source_out: tuple | None = None

    def _forward(self, x, t, states):
        if self.parts is None:
            return super()._forward(x, t, states)
        source_x, source_states = self.parts
        outs = self.forward_parts(self.unet, [(source_x, source_states), (x, states)], t, self.num_frames)
        self.source_out = outs[0]
        return outs[1]

    @staticmethod
    def forward_parts(unet, parts, t, num_frames):
        """One UNet call over parts (latents, [text states …]), each repeated once per states
        tensor; returns each part's output, split back."""
        xs, ss, sizes = [], [], []
        for x, states in parts:
            xs += [x] * len(states)
            ss += [s.expand(x.shape[0], -1, -1) for s in states]
            sizes.append(x.shape[0] * len(states))
        x_in, s_in = torch.cat(xs), torch.cat(ss).to(xs[0].dtype)
        out = unet(x_in, t, encoder_hidden_states=s_in, cross_attention_kwargs={"num_frames": num_frames},
                   return_dict=False)[0]
        return tuple(out.split(sizes))


def source_attention(unet, source, step: int, plan: FusionPlan):
    """Fuse the source attention of ``step`` into a call that carries no source part (stored: the
    store's; live: recorded now by one call of the source part)."""
    store = source.store if source.branch is None else source.branch.recorded(unet, step)
    return fuse_attention(unet, store, step=step, plan=plan)
