"""Attention fusion for editing (DESIGN §5.5, after FateZero): record the source pass, fuse it in.

During DDIM inversion :func:`record_attention` keeps, per attention layer and inversion step, the
source's self-attention queries and keys and its cross-attention queries (plus the source
prompt's text states). During the noisy half of sampling :func:`fuse_attention` replays them:

- self-attention: SDPA(Q_src, K_src, V_current) — the source's attention pattern applied to the
  current values, with the usual sparse-causal key gather; memory stays linear in tokens;
- cross-attention, conditional half only: for target tokens whose word the source prompt
  shares, the source's probabilities (from Q_src and K_src = to_k(source text states)) replace
  the current ones; then × V_current. Maps are only (tokens × 77), so they are materialised.

Both context managers wrap the processors already installed (inflated or plain), reuse their
maths through ``run(..., attend=...)``, and restore them on exit, even on error. Everything the
fusion keeps lives in the :class:`FusionStore` passed in: the processors hold no global state.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Callable, Iterator, Sequence

import torch

from ..errors import RunFailure, UsageError
from .processors import apply_probs, attention_context, attention_modules, attention_probs, base_processor

OFFLOAD_MODES = ("auto", "cpu", "device")


def token_alignment(source_ids: Sequence[int], target_ids: Sequence[int]) -> list[int]:
    """For each target token position, the source position of the same token, else −1.

    difflib.SequenceMatcher over the two id lists; BOS maps to BOS. On padded lists the
    EOS/padding run matches as one block, so padding maps position-by-position (as
    prompt-to-prompt's mapper does).
    """
    source, target = [int(i) for i in source_ids], [int(i) for i in target_ids]
    mapping = [-1] * len(target)
    for block in difflib.SequenceMatcher(None, source, target, autojunk=False).get_matching_blocks():
        for offset in range(block.size):
            mapping[block.b + offset] = block.a + offset
    if source and target:
        mapping[0] = 0
    return mapping


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
        self.alignment: torch.Tensor | None = None
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

    def set_alignment(self, source_ids: Sequence[int], target_ids: Sequence[int]) -> None:
        """Align the target prompt's tokens to the source's (see :func:`token_alignment`)."""
        self.alignment = torch.tensor(token_alignment(source_ids, target_ids), dtype=torch.long)

    def clear(self) -> None:
        """Forget the recorded source pass (the alignment, which belongs to the target, stays)."""
        self._on_cpu = self.offload == "cpu"
        self.self_qk.clear()
        self.cross_q.clear()
        self.source_text_states = None

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

    def self_attention(self, layer: str, step: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query, key = self._get(self.self_qk, layer, step)
        return match_batch(query, like), match_batch(key, like)

    def cross_query(self, layer: str, step: int) -> torch.Tensor:
        return self._get(self.cross_q, layer, step)

    def blend_cross(self, probs: torch.Tensor, source_probs: torch.Tensor) -> torch.Tensor:
        """Current cross-attention probabilities with matched tokens' columns taken from the source."""
        if self.alignment is None:
            raise UsageError("call store.set_alignment(source_ids, target_ids) before fusing cross-attention")
        tokens = probs.shape[-1]
        align = torch.full((tokens,), -1, dtype=torch.long)
        n = min(tokens, len(self.alignment))
        align[:n] = self.alignment[:n]
        align[align >= source_probs.shape[-1]] = -1
        align = align.to(probs.device)
        taken = source_probs.index_select(-1, align.clamp(min=0))
        return torch.where(align >= 0, taken, probs)


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
    """The wrapped processor's output, unchanged; its projected queries/keys go to the store."""

    def before(self, cross, encoder_hidden_states):
        if cross and self.store.source_text_states is None:
            self.store.set_source_text(encoder_hidden_states)

    def attend_self(self, attn, q, k, v, mask, num_frames=1):
        self.store.put_self(self.layer, self.step, q, k)
        return self.inner.attend(attn, q, k, v, mask, num_frames)

    def attend_cross(self, attn, q, k, v, mask, num_frames=1):
        self.store.put_cross(self.layer, self.step, q)
        return self.inner.attend(attn, q, k, v, mask, num_frames)


class FusingProcessor(_Wrapper):
    """Source attention patterns applied to the current values (see the module docstring)."""

    def __init__(self, inner, store, layer, step, self_attention: bool = True, cross_attention: bool = True):
        super().__init__(inner, store, layer, step)
        self.fuse_self, self.fuse_cross = self_attention, cross_attention

    def attend_self(self, attn, q, k, v, mask, num_frames=1):
        if self.fuse_self:
            q, k = self.store.self_attention(self.layer, self.step, like=q)
        return self.inner.attend(attn, q, k, v, mask, num_frames)

    def attend_cross(self, attn, q, k, v, mask, num_frames=1):
        if not self.fuse_cross:
            return self.inner.attend(attn, q, k, v, mask, num_frames)
        source_q = self.store.cross_query(self.layer, self.step)
        batch, n_cond = q.shape[0], source_q.shape[0]
        if batch not in (n_cond, 2 * n_cond):
            raise RunFailure(f"fusion: sampling batch {batch} is neither the recorded batch {n_cond} nor twice it "
                             "(classifier-free guidance); invert and sample with the same frame count")
        source_q = match_batch(source_q, q[:n_cond])
        text = match_batch(self.store.source_text_states, source_q)
        source_k = attn.to_k(attention_context(attn, source_q, text))
        cond = slice(batch - n_cond, batch)  # [uncond..., cond...] under guidance
        cond_mask = None if mask is None else mask[cond]
        probs = self.store.blend_cross(attention_probs(attn, q[cond], k[cond], cond_mask),
                                       attention_probs(attn, source_q, source_k))
        fused = apply_probs(attn, probs, v[cond])
        if batch == n_cond:
            return fused
        uncond = slice(0, batch - n_cond)
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


def record_attention(unet: torch.nn.Module, store: FusionStore, step: int):
    """Context manager for one inversion step: outputs unchanged, source attention recorded."""
    return _wrapped_processors(unet, lambda inner, name: RecordingProcessor(inner, store, name, step))


def fuse_attention(unet: torch.nn.Module, store: FusionStore, step: int, *, self_attention: bool = True,
                   cross_attention: bool = True):
    """Context manager for one sampling step: the source attention of inversion step ``step`` fused in."""
    return _wrapped_processors(
        unet, lambda inner, name: FusingProcessor(inner, store, name, step, self_attention, cross_attention)
    )
