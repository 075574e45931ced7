"""Attention fusion for editing (docs/concepts/design.md §5.5–5.6, after FateZero and Prompt-to-Prompt).

The source pass — DDIM inversion, or the guided source branch replayed on the inversion
trajectory — is recorded by :func:`record_attention`: per attention layer and sampling step, the
self-attention queries and keys and the cross-attention queries (plus the source prompt's text
states). :func:`fuse_attention` replays them while the target is sampled, as a
:class:`FusionPlan` says:

- self-attention: SDPA(Q_src, K_src, V_current) — the source's attention pattern applied to the
  current values, with the usual sparse-causal key gather; memory stays linear in tokens;
  inside a blend mask the target keeps its own pattern (MaskBlend);
- cross-attention, conditional half only: the source's probabilities (from Q_src and
  K_src = to_k(source text states)) mapped to the target's tokens by a
  :class:`~contextedit.attention.control.PromptEdit` (refine, word swap, reweight), × V_current.
  Maps are only (tokens × 77), so they are materialised.

Both context managers wrap the processors already installed (inflated or plain), reuse their
maths through ``run(..., attend=...)``, and restore them on exit, even on error. Everything the
fusion keeps lives in the :class:`FusionStore` passed in: the processors hold no global state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..errors import RunFailure, UsageError
from .control import BlendMask, PromptEdit
from .processors import apply_probs, attention_context, attention_modules, attention_probs, base_processor

OFFLOAD_MODES = ("auto", "cpu", "device")


class FusionStore:
    """What the source pass recorded, keyed by (attention layer name, inversion step index).

    ``offload``: ``"device"`` keeps tensors where they were made, ``"cpu"`` moves them to host
    memory, ``"auto"`` keeps them on the GPU while its free memory stays above ``reserve_bytes``
    and moves everything after that to the CPU.
    """

    def __init__(self, offload: str = "auto", reserve_bytes: int = 2 << 30):
        if offload not in OFFLOAD_MODES:
            raise UsageError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not {offload!r}")
        self.offload = offload
        self.reserve_bytes = reserve_bytes
        self.self_qk: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.cross_q: dict[tuple[str, int], torch.Tensor] = {}
        self.source_text_states: torch.Tensor | None = None
        self._on_cpu = offload == "cpu"

    # -- writing ------------------------------------------------------------------------------
    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if self.offload == "auto" and not self._on_cpu and tensor.is_cuda:
            free, _ = torch.cuda.mem_get_info(tensor.device)
            self._on_cpu = free < tensor.nbytes + self.reserve_bytes  # once full, stay on the CPU
        return tensor.cpu() if self._on_cpu else tensor

    def put_self(self, layer: str, step: int, query: torch.Tensor, key: torch.Tensor) -> None:
        self.self_qk[(layer, step)] = (self._keep(query), self._keep(key))

    def put_cross(self, layer: str, step: int, query: torch.Tensor) -> None:
        self.cross_q[(layer, step)] = self._keep(query)

    def set_source_text(self, text_states: torch.Tensor) -> None:
        """The source prompt's encoder states, from which the source cross-attention keys are recomputed."""
        self.source_text_states = self._keep(text_states)

    # -- reading ------------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return sorted({step for _, step in (*self.self_qk, *self.cross_q)})

    @property
    def nbytes(self) -> int:
        tensors = [t for pair in self.self_qk.values() for t in pair] + list(self.cross_q.values())
        if self.source_text_states is not None:
            tensors.append(self.source_text_states)
        return sum(t.nbytes for t in tensors)

    def _get(self, table: dict, layer: str, step: int):
        try:
            return table[(layer, step)]
        except KeyError:
            raise RunFailure(f"no recorded source attention for layer {layer} at inversion step {step}; "
                             "record every step you fuse (same step indices and frame count)") from None

    def self_attention(self, layer: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._get(self.self_qk, layer, step)

    def cross_query(self, layer: str, step: int) -> torch.Tensor:
        return self._get(self.cross_q, layer, step)

    def has_cross(self, layer: str, step: int) -> bool:
        return (layer, step) in self.cross_q


def match_batch(stored: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``stored`` on ``like``'s device/dtype, repeated to its batch (e.g. over the CFG halves)."""
    stored = stored.to(device=like.device, dtype=like.dtype)
    have, want = stored.shape[0], like.shape[0]
    if have == want:
        return stored
    if want % have:
        raise RunFailure(f"fusion: sampling batch {want} does not match the recorded batch {have}; "
                         "invert and sample with the same frame count")
    return stored.repeat(want // have, *([1] * (stored.ndim - 1)))


# -------------------------------------------------------------------------------------------------
# Processors that wrap the installed ones
# -------------------------------------------------------------------------------------------------
@dataclass
class FusionPlan:
    """What one sampling step fuses (FateZero / Prompt-to-Prompt controls).

    - ``self_attention``: the source's self-attention queries and keys replace the current ones,
      in layers with at most ``max_tokens`` tokens per frame (None: every layer), on the
      conditional half only (``self_half="cond"``) or on both halves of the guided batch;
    - ``cross_attention``: the cross-attention map is the source's, mapped by ``edit`` (word swap,
      refine) — else the target's own; ``edit``'s reweighting applies either way;
    - ``blend``: the mask of the changed words; inside it the self-attention is the target's own
      (MaskBlend), and every cross-attention layer adds its maps to it.
    """

    self_attention: bool = True
    cross_attention: bool = True
    self_half: str = "cond"
    max_tokens: int | None = None
    edit: PromptEdit | None = None
    blend: BlendMask | None = None
    guided: bool = True


class _Wrapper:
    """Common call path: pick the self- or cross-attention hook, run the wrapped processor with it."""

    def __init__(self, inner, store: FusionStore, layer: str, step: int):
        self.inner, self.store, self.layer, self.step = inner, store, layer, step

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 num_frames: int = 1) -> torch.Tensor:
        cross = encoder_hidden_states is not None
        self.before(cross, encoder_hidden_states)
        attend = self.attend_cross if cross else self.attend_self
        return self.inner.run(attn, hidden_states, encoder_hidden_states, attention_mask, temb, num_frames, attend=attend)

    def before(self, cross: bool, encoder_hidden_states: torch.Tensor | None) -> None:
        pass


class RecordingProcessor(_Wrapper):
    """The wrapped processor's output, unchanged; its projected queries/keys go to the store.

    ``cond_only``: under guidance ([uncond, cond] batch) keep only the conditional half.
    """

    def __init__(self, inner, store, layer, step, cond_only: bool = False, self_attention: bool = True,
                 cross_attention: bool = True):
        super().__init__(inner, store, layer, step)
        self.cond_only, self.self_attention, self.cross_attention = cond_only, self_attention, cross_attention

    def _half(self, x: torch.Tensor) -> torch.Tensor:
        return x[x.shape[0] // 2:] if self.cond_only else x

    def before(self, cross, encoder_hidden_states):
        if cross and self.store.source_text_states is None:
            self.store.set_source_text(self._half(encoder_hidden_states)[:1])

    def attend_self(self, attn, q, k, v, mask, num_frames=1):
        if self.self_attention:
            self.store.put_self(self.layer, self.step, self._half(q), self._half(k))
        return self.inner.attend(attn, q, k, v, mask, num_frames)

    def attend_cross(self, attn, q, k, v, mask, num_frames=1):
        if self.cross_attention:
            self.store.put_cross(self.layer, self.step, self._half(q))
        return self.inner.attend(attn, q, k, v, mask, num_frames)


class FusingProcessor(_Wrapper):
    """Source attention patterns applied to the current values (see :class:`FusionPlan`)."""

    def __init__(self, inner, store, layer, step, plan: FusionPlan):
        super().__init__(inner, store, layer, step)
        self.plan = plan

    def _split(self, batch: int, recorded: int | None) -> slice:
        """The part of the batch that is fused: all of it, or the conditional half under guidance."""
        if recorded is not None and batch not in (recorded, 2 * recorded):
            raise RunFailure(f"fusion: sampling batch {batch} is neither the recorded batch {recorded} nor twice it "
                             "(classifier-free guidance); invert and sample with the same frame count")
        n = recorded if recorded is not None else (batch // 2 if self.plan.guided else batch)
        return slice(batch - n, batch)

    def attend_self(self, attn, q, k, v, mask, num_frames=1):
        plan, tokens = self.plan, q.shape[1]
        if not plan.self_attention or (plan.max_tokens is not None and tokens > plan.max_tokens):
            return self.inner.attend(attn, q, k, v, mask, num_frames)
        source_q, source_k = self.store.self_attention(self.layer, self.step)
        part = self._split(q.shape[0], source_q.shape[0]) if plan.self_half == "cond" else slice(0, q.shape[0])
        sub = lambda x: None if x is None else x[part]  # noqa: E731
        source_q, source_k = match_batch(source_q, q[part]), match_batch(source_k, q[part])
        fused = self.inner.attend(attn, source_q, source_k, v[part], sub(mask), num_frames)
        inside = plan.blend.tokens(tokens) if plan.blend is not None else None
        if inside is not None:  # MaskBlend: the edited region keeps its own self-attention
            own = self.inner.attend(attn, q[part], k[part], v[part], sub(mask), num_frames)
            inside = match_batch(inside, fused)
            fused = inside * own + (1 - inside) * fused
        if part.start == 0:
            return fused
        rest = slice(0, part.start)
        return torch.cat([self.inner.attend(attn, q[rest], k[rest], v[rest], None if mask is None else mask[rest], num_frames), fused])

    def attend_cross(self, attn, q, k, v, mask, num_frames=1):
        plan = self.plan
        maps = plan.blend is not None and plan.blend.from_attention
        if not (plan.cross_attention or maps or (plan.edit is not None and plan.edit.reweights)):
            return self.inner.attend(attn, q, k, v, mask, num_frames)
        recorded = self.store.has_cross(self.layer, self.step)
        source_q = self.store.cross_query(self.layer, self.step) if recorded else None
        cond = self._split(q.shape[0], None if source_q is None else source_q.shape[0])
        cond_mask = None if mask is None else mask[cond]
        probs = attention_probs(attn, q[cond], k[cond], cond_mask)
        source_probs = None
        if source_q is not None and (plan.cross_attention or maps):
            source_q = match_batch(source_q, q[cond])
            text = match_batch(self.store.source_text_states, source_q)
            source_probs = attention_probs(attn, source_q, attn.to_k(attention_context(attn, source_q, text)))
        if maps:
            plan.blend.add(source_probs, probs, frames=probs.shape[0])
        if plan.cross_attention and source_probs is not None:
            probs = plan.edit.apply(source_probs, probs) if plan.edit is not None else source_probs
        elif plan.edit is not None:
            probs = plan.edit.reweight(probs)
        fused = apply_probs(attn, probs, v[cond])
        if cond.start == 0:
            return fused
        uncond = slice(0, cond.start)
        plain = self.inner.attend(attn, q[uncond], k[uncond], v[uncond], None if mask is None else mask[uncond], num_frames)
        return torch.cat([plain, fused])


@contextlib.contextmanager
def _wrapped_processors(unet: torch.nn.Module, wrap: Callable[[object, str], object]) -> Iterator[None]:
    """Install ``wrap(base processor, layer name)`` on every attention; restore the originals on exit."""
    attentions = attention_modules(unet)
    saved = {name: attn.processor for name, attn in attentions.items()}
    try:
        for name, attn in attentions.items():
            attn.set_processor(wrap(base_processor(saved[name]), name))
        yield
    finally:
        for name, attn in attentions.items():
            attn.set_processor(saved[name])


def record_attention(unet: torch.nn.Module, store: FusionStore, step: int, *, cond_only: bool = False,
                     self_attention: bool = True, cross_attention: bool = True):
    """Context manager for one source step: outputs unchanged, source attention (self, cross or
    both) recorded under ``step``."""
    return _wrapped_processors(unet, lambda inner, name: RecordingProcessor(inner, store, name, step, cond_only,
                                                                            self_attention, cross_attention))


def fuse_attention(unet: torch.nn.Module, store: FusionStore, step: int, plan: FusionPlan | None = None, *,
                   self_attention: bool = True, cross_attention: bool = True):
    """Context manager for one sampling step: the source attention recorded under ``step`` fused in
    as ``plan`` says (default: self- and cross-attention, every layer, the words the prompts share)."""
    plan = plan or FusionPlan(self_attention=self_attention, cross_attention=cross_attention, self_half="both")
    return _wrapped_processors(unet, lambda inner, name: FusingProcessor(inner, store, name, step, plan))
