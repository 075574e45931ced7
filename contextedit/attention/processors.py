"""Attention processors for the inflated spatio-temporal UNet (docs/concepts/design.md §5.3).

A clip runs through the ordinary 2-D ``UNet2DConditionModel`` with its frames as the batch
(index ``b * F + f``); the frame count reaches the processors as
``cross_attention_kwargs={"num_frames": F}``. Behaviour changes only by swapping processors,
never by editing diffusers' classes:

- :class:`InflatedSelfAttnProcessor` (on every transformer block's ``attn1``): sparse-causal
  attention — frame i's queries attend to the keys/values of frame 0 and frame i−1.
- :class:`TemporalAttention`: attention across frames, a submodule of each ``attn1`` whose
  output projection starts at zero (:func:`add_temporal_layer`); weights live in modules,
  behaviour in processors.
- :class:`CrossAttnProcessor` (on ``attn2``, and on any other attention): plain SDPA attention.

Both expose the same steps — ``run(..., attend=...)`` with a replaceable ``attend(attn, q, k, v,
mask, num_frames)`` — so that recording and fusion (``fusion.py``) reuse this maths instead of
copying it. With ``num_frames=1`` and zero temporal layers both equal diffusers' AttnProcessor2_0.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

# attend(attn, q, k, v, mask, num_frames) -> (batch, tokens, inner_dim); q/k/v are after to_q/to_k/to_v.
AttendFn = Callable[..., torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Shared maths: head split/merge, SDPA, explicit probabilities, the sparse-causal gather
# ---------------------------------------------------------------------------------------------
def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads * d) -> (batch, heads, tokens, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, d) -> (batch, tokens, heads * d)."""
    return x.transpose(1, 2).flatten(2)


def _heads_qk(attn, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split q and k into heads and apply the module's optional q/k norms (as AttnProcessor2_0)."""
    q, k = split_heads(q, attn.heads), split_heads(k, attn.heads)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    return q, k


def sdpa(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v with torch's fused kernel (flash / memory-efficient on CUDA);
    never materialises the attention map."""
    q, k = _heads_qk(attn, q, k)
    v = split_heads(v, attn.heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    return merge_heads(out).to(q.dtype)


def attention_probs(attn, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The explicit map softmax(q kᵀ · scale + mask): (batch, heads, queries, keys), softmax in fp32.

    Only for short key sequences (cross-attention to 77 text tokens), where fusion must edit it.
    """
    q, k = _heads_qk(attn, q, k)
    scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scale
    if mask is not None:
        scores = scores + mask.float()
    return scores.softmax(dim=-1).to(q.dtype)


def apply_probs(attn, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """probs @ v with heads merged: (batch, queries, inner_dim)."""
    return merge_heads(probs @ split_heads(v, attn.heads))


def sparse_causal_kv(x: torch.Tensor, num_frames: int, dim: int = 1) -> torch.Tensor:
    """Gather, for frame i, frame 0's and frame i−1's entries (frame 0 gets [0, 0]).

    ``x`` has the frames as its batch (``b * F + f``); the two frames are concatenated along
    ``dim`` (the token axis of keys/values, or the key axis of a mask). A single frame attends to
    itself (frame 0 twice is the same softmax, so it is left out for an exact 2-D result).
    """
    if num_frames == 1:
        return x
    clips = x.unflatten(0, (-1, num_frames))  # (b, F, ...)
    first = clips[:, :1].expand_as(clips)
    previous = torch.cat([clips[:, :1], clips[:, :-1]], dim=1)
    axis = dim + 1 if dim >= 0 else dim
    return torch.cat([first, previous], dim=axis).flatten(0, 1)


def check_frames(batch: int, num_frames: int) -> None:
    if num_frames < 1 or batch % num_frames:
        raise UsageError(f"batch of {batch} is not a whole number of clips of {num_frames} frames; "
                         "pass latents as (clips * frames, C, H, W) and the right num_frames")


# ---------------------------------------------------------------------------------------------
# The processor skeleton: AttnProcessor2_0's steps around a replaceable ``attend``
# ---------------------------------------------------------------------------------------------
def attention_forward(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
                      attention_mask: torch.Tensor | None, temb: torch.Tensor | None,
                      attend: AttendFn, num_frames: int) -> torch.Tensor:
    """diffusers' Attention wrapper steps (spatial/group norm, 4-D inputs, to_out, residual,
    rescale) around ``attend``, which maps the projected q, k, v to the pre-``to_out`` output."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch, _, _ = hidden_states.shape
    check_frames(batch, num_frames)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    context = attention_context(attn, hidden_states, encoder_hidden_states)
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

    out = attend(attn, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), attention_mask, num_frames)
    out = attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout

    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def attention_context(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> torch.Tensor:
    """What keys and values are computed from: the tokens themselves, or the (normed) text states."""
    if encoder_hidden_states is None:
        return hidden_states
    if attn.norm_cross:
        return attn.norm_encoder_hidden_states(encoder_hidden_states)
    return encoder_hidden_states


# ---------------------------------------------------------------------------------------------
# Processors
# ---------------------------------------------------------------------------------------------
class CrossAttnProcessor:
    """Plain SDPA attention that accepts ``num_frames`` (so nothing warns); frames are independent.

    Installed on cross-attention (``attn2``) and on any attention that is not inflated.
    """

    def attend(self, attn, q, k, v, mask, num_frames: int = 1) -> torch.Tensor:
        return sdpa(attn, q, k, v, mask)

    def run(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
            num_frames: int = 1, attend: AttendFn | None = None) -> torch.Tensor:
        return attention_forward(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 attend or self.attend, num_frames)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 num_frames: int = 1) -> torch.Tensor:
        return self.run(attn, hidden_states, encoder_hidden_states, attention_mask, temb, num_frames)


class TemporalAttention(nn.Module):
    """Attention across the frames of a clip at each spatial position: (B·F, N, D) → (B·N, F, D).

    ``to_out`` starts at zero (weight and bias), so a freshly inflated UNet is the 2-D UNet.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        check_frames(x.shape[0], num_frames)
        _, tokens, dim = x.shape
        seq = x.unflatten(0, (-1, num_frames)).transpose(1, 2).reshape(-1, num_frames, dim)  # (B·N, F, D)
        q, k, v = (split_heads(proj(seq), self.heads) for proj in (self.to_q, self.to_k, self.to_v))
        out = self.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return out.unflatten(0, (-1, tokens)).transpose(1, 2).reshape(x.shape)


class InflatedSelfAttnProcessor:
    """Sparse-causal spatio-temporal self-attention: frame i's queries attend to the keys/values of
    frame 0 and frame i−1. Attention behaviour only: the tuned temporal layer is a submodule of the
    ``Attention`` itself (``attn1.temporal``, added by :func:`add_temporal_layer`), so swapping
    processors (``set_attn_processor``) keeps its weights and its output.
    """

    def attend(self, attn, q, k, v, mask, num_frames: int = 1) -> torch.Tensor:
        if num_frames > 1 and mask is None:
            return self._attend_first_two_once(attn, q, k, v, num_frames)
        k, v = sparse_causal_kv(k, num_frames), sparse_causal_kv(v, num_frames)
        if mask is not None:
            mask = sparse_causal_kv(mask, num_frames, dim=-1)
        return sdpa(attn, q, k, v, mask)

    def _attend_first_two_once(self, attn, q, k, v, num_frames: int) -> torch.Tensor:
        """The same attention, cheaper: frames 0 and 1 both see [frame 0, frame 0], and a key/value
        pair listed twice leaves the softmax unchanged, so they attend to frame 0 once (N keys,
        not 2N). Only frames ≥ 2 pay for two key frames."""
        q, k, v = (x.unflatten(0, (-1, num_frames)) for x in (q, k, v))  # (b, F, N, D)
        rest, tokens = num_frames - 2, q.shape[2]
        # frames 0 and 1 as one query sequence of 2N against frame 0's N keys: no copies
        head = sdpa(attn, q[:, :2].flatten(1, 2), k[:, 0], v[:, 0], None)
        if rest == 0:
            return head.unflatten(1, (2, tokens)).flatten(0, 1)
        kv_rest = (torch.cat([x[:, :1].expand(-1, rest, -1, -1), x[:, 1:-1]], dim=2).flatten(0, 1) for x in (k, v))
        tail = sdpa(attn, q[:, 2:].flatten(0, 1), *kv_rest, None)
        return torch.cat([head.unflatten(1, (2, tokens)), tail.unflatten(0, (-1, rest))], dim=1).flatten(0, 1)

    def run(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
            num_frames: int = 1, attend: AttendFn | None = None) -> torch.Tensor:
        return attention_forward(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 attend or self.attend, num_frames)

    # Attention.forward forwards only the keyword arguments that __call__ declares.
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 num_frames: int = 1) -> torch.Tensor:
        return self.run(attn, hidden_states, encoder_hidden_states, attention_mask, temb, num_frames)


# ---------------------------------------------------------------------------------------------
# The temporal layer: a real submodule, added to attn1's output by a forward hook
# ---------------------------------------------------------------------------------------------
def add_temporal_layer(attn: nn.Module) -> TemporalAttention:
    """Give a transformer block's self-attention its temporal layer (``attn.temporal``), once.

    BasicTransformerBlock adds attn1's output to its residual stream ``h``, so with the hook::

        h ← h + attn1(norm1(h)) + TemporalAttention(norm1(h))

    the temporal branch runs in parallel on the same normed tokens, whatever processor is installed,
    and is zero at init. A module (weights in ``state_dict``) plus a hook (no weights), so
    ``set_attn_processor`` (and diffusers' default reset after it) cannot drop it.
    """
    if getattr(attn, "temporal", None) is None:
        weight = attn.to_q.weight
        attn.temporal = TemporalAttention(attn.query_dim, attn.heads).to(device=weight.device, dtype=weight.dtype)
        attn.register_forward_hook(_add_temporal, with_kwargs=True)
    return attn.temporal


def _add_temporal(attn, args, kwargs, output):
    hidden_states = args[0] if args else kwargs["hidden_states"]
    if hidden_states.ndim != 3:
        raise ValueError("temporal attention needs token inputs (batch, tokens, dim); inflate transformer blocks only")
    return output + attn.temporal(hidden_states, kwargs.get("num_frames", 1))


def attention_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """Every diffusers ``Attention`` of ``unet`` by module name, but those inside AnimateDiff motion
    modules (``….motion_module.…``, :mod:`contextedit.models.motion`): they keep diffusers' processors."""
    from diffusers.models.attention_processor import Attention

    return {name: module for name, module in unet.named_modules()
            if isinstance(module, Attention) and ".motion_module." not in name}


def base_processor(processor) -> CrossAttnProcessor | InflatedSelfAttnProcessor:
    """``processor`` itself when it is one of ours, else a plain one (for an un-inflated UNet)."""
    if isinstance(processor, (CrossAttnProcessor, InflatedSelfAttnProcessor)):
        return processor
    return CrossAttnProcessor()
