"""A live source branch (``edit --source live``): the source runs in the target's own UNet batch.

PnP Inversion's way (Ju et al. 2023): at every sampling step the batch is
``[source part, target part]``. In each attention layer the source part runs first, its queries
and keys are recorded into a scratch :class:`~.fusion.FusionStore` of that one layer and call,
and the target part is fused from it at once (the same :class:`~.fusion.RecordingProcessor` and
:class:`~.fusion.FusingProcessor` maths as the stored branch, so the two give the same frames).
The scratch store is dropped when the layer returns: no fusion store outlives a call.
"""

from __future__ import annotations

import torch

from .fusion import FusingProcessor, FusionPlan, FusionStore, RecordingProcessor, _wrapped_processors


class LiveProcessor:
    """Record the first ``n_source`` items of the batch, fuse the rest from them, in one call."""

    def __init__(self, inner, layer: str, step: int, plan: FusionPlan | None, n_source: int, *,
                 cond_only: bool, self_attention: bool, cross_attention: bool):
        self.inner, self.layer, self.step, self.plan, self.n_source = inner, layer, step, plan, n_source
        self.flags = dict(cond_only=cond_only, self_attention=self_attention, cross_attention=cross_attention)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 num_frames: int = 1) -> torch.Tensor:
        n = self.n_source
        cut = lambda x, part: None if x is None else x[part]  # noqa: E731
        src, tgt = slice(0, n), slice(n, None)
        store = FusionStore(offload="device")  # this layer's, this call's
        recorder = RecordingProcessor(self.inner, store, self.layer, self.step, **self.flags)
        source = recorder(attn, hidden_states[src], cut(encoder_hidden_states, src), cut(attention_mask, src), temb,
                          num_frames)
        target = (FusingProcessor(self.inner, store, self.layer, self.step, self.plan) if self.plan is not None
                  else self.inner)
        out = target(attn, hidden_states[tgt], cut(encoder_hidden_states, tgt), cut(attention_mask, tgt), temb, num_frames)
        return torch.cat([source, out])


def live_attention(unet: torch.nn.Module, step: int, plan: FusionPlan | None, n_source: int, *, cond_only: bool,
                   self_attention: bool, cross_attention: bool):
    """Context manager for one sampling step whose UNet batch starts with ``n_source`` source items:
    their attention (self, cross or both, as recorded for ``step``) fused into the rest as ``plan``
    says (None: recorded for the caller's use only, the target attends to itself)."""
    return _wrapped_processors(unet, lambda inner, name: LiveProcessor(
        inner, name, step, plan, n_source, cond_only=cond_only, self_attention=self_attention,
        cross_attention=cross_attention))
