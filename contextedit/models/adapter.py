"""The context-aware adapter r_φ(x0, c, t) (docs/concepts/design.md §4; paper §3).

A small relational transformer over the patches of the clean latents x0 and the text states c.
Each block looks within a frame (spatial self-attention), back over a causal window of frames
(frame i sees i−2..i at each patch position), and at the text (cross-attention), then an MLP;
all residual with pre-LayerNorm. The timestep enters as a sinusoidal embedding → MLP added to
the tokens; 2-D sinusoidal positions are computed on the fly, so any latent size works. The
output head is zero-initialised: an untrained adapter returns exactly 0 and the base model is
unchanged (ContextDiff reduces to DDPM/DDIM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..attention.processors import merge_heads, split_heads

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def config_for_unet(unet: nn.Module) -> dict:
    """:class:`ContextAdapter` arguments sized to its UNet: width ≈ 0.8 × the UNet's first block,
    32..256, so it stays a few percent of the UNet on SD and on the tiny models alike."""
    first = int(unet.config.block_out_channels[0])
    dim = max(32, min(256, 32 * round(0.8 * first / 32)))
    return {"latent_channels": int(unet.config.in_channels), "text_dim": int(unet.config.cross_attention_dim),
            "dim": dim, "heads": 8 if dim >= 128 else 4}


class Attention(nn.Module):
    """Multi-head attention with SDPA; keys/values from ``context`` when given."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (self.to_q(x), k, v))
        return self.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


def causal_window_mask(num_frames: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean (F, F) mask: frame i may attend to frames i−window+1 .. i."""
    i = torch.arange(num_frames, device=device)
    lag = i[:, None] - i[None, :]
    return (lag >= 0) & (lag < window)


def sincos_2d(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """(height·width, dim) sinusoidal position embedding; half the channels for rows, half for columns."""
    def axis(n: int) -> torch.Tensor:
        return get_timestep_embedding(torch.arange(n, device=device), dim // 2, flip_sin_to_cos=True, downscale_freq_shift=0)

    rows, cols = axis(height), axis(width)
    return torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], dim=-1).flatten(0, 1)


class ContextBlock(nn.Module):
    """Spatial self-attention → temporal causal attention → text cross-attention → MLP."""

    def __init__(self, d: int, heads: int, text_dim: int, mlp_ratio: int):
        super().__init__()
        self.norm_spatial, self.spatial = nn.LayerNorm(d), Attention(d, heads)
        self.norm_temporal, self.temporal = nn.LayerNorm(d), Attention(d, heads)
        self.norm_cross, self.cross = nn.LayerNorm(d), Attention(d, heads, context_dim=text_dim)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * d, d))

    def forward(self, x: torch.Tensor, text: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """x: (clips, frames, tokens, dim); text: (clips·frames, L, text_dim)."""
        clips, frames, tokens, dim = x.shape
        x = x + self.spatial(self.norm_spatial(x.flatten(0, 1))).view_as(x)
        per_position = x.transpose(1, 2).reshape(clips * tokens, frames, dim)
        per_position = self.temporal(self.norm_temporal(per_position), mask=frame_mask)
        x = x + per_position.view(clips, tokens, frames, dim).transpose(1, 2)
        x = x + self.cross(self.norm_cross(x.flatten(0, 1)), context=text).view_as(x)
        return x + self.mlp(self.norm_mlp(x))


class ContextAdapter(ModelMixin, ConfigMixin):
    """r_φ(x0, c, t): latents (clips·frames, C, H, W) → a bias of the same shape.

    A diffusers model: ``save_pretrained`` / ``from_pretrained`` write and read a folder of
    config.json + diffusion_pytorch_model.safetensors. The defaults fit SD-1.x (≈5 M parameters,
    ≈2 % of the UNet's FLOPs at 64×64 latents); ``window`` is the number of frames the temporal
    causal attention sees, the current one included; ``text_dim`` is the UNet's cross_attention_dim.
    """

    config_name = CONFIG_NAME

    @register_to_config
    def __init__(self, latent_channels: int = 4, text_dim: int = 768, dim: int = 256, num_blocks: int = 4,
                 heads: int = 8, patch_size: int = 2, window: int = 3, mlp_ratio: int = 4):
        super().__init__()
        if dim % heads or dim % 4:
            raise ValueError(f"adapter dim {dim} must be divisible by heads {heads} and by 4")
        p, c, d = patch_size, latent_channels, dim
        self.stem = nn.Conv2d(c, d, kernel_size=p, stride=p)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(ContextBlock(d, heads, text_dim, mlp_ratio) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, p * p * c)
        nn.init.zeros_(self.head.weight)  # untrained adapter ≡ 0: the base model unchanged
        nn.init.zeros_(self.head.bias)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x0: torch.Tensor, text_states: torch.Tensor, timestep: int | torch.Tensor,
                num_frames: int = 1) -> torch.Tensor:
        """x0: (B·F, C, H, W), frames contiguous per clip; text_states: (B | B·F | 1, L, text_dim);
        timestep: int, 0-d, (B,) or (B·F,). Returns r with x0's shape."""
        batch, _, height, width = x0.shape
        if num_frames < 1 or batch % num_frames:
            raise ValueError(f"adapter got {batch} latents, not a whole number of clips of {num_frames} frames")
        p = self.config.patch_size
        padded = F.pad(x0, (0, -width % p, 0, -height % p), mode="replicate")
        grid = self.stem(padded.to(self.stem.weight.dtype))  # (B·F, dim, h, w)
        h, w = grid.shape[-2:]
        tokens = grid.flatten(2).transpose(1, 2) + sincos_2d(h, w, self.config.dim, x0.device).to(grid.dtype)
        tokens = tokens + self.time_mlp(self._time_embedding(timestep, batch, num_frames, grid))[:, None]

        x = tokens.unflatten(0, (-1, num_frames))
        text = per_frame(text_states, batch, num_frames).to(x.dtype)
        mask = causal_window_mask(num_frames, self.config.window, x0.device)
        for block in self.blocks:
            x = block(x, text, mask)

        patches = self.head(self.norm_out(x.flatten(0, 1)))  # (B·F, h·w, p·p·C)
        r = patches.view(batch, h, w, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(batch, -1, h * p, w * p)
        return r[..., :height, :width].to(x0.dtype)

    def _time_embedding(self, timestep, batch: int, num_frames: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=like.device).flatten()
        if t.numel() == batch // num_frames and t.numel() != batch:
            t = t.repeat_interleave(num_frames)
        elif t.numel() not in (1, batch):
            raise ValueError(f"adapter timestep has {t.numel()} values for {batch // num_frames} clips of {num_frames} frames")
        emb = get_timestep_embedding(t.expand(batch), self.config.dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        return emb.to(like.dtype)


def per_frame(text_states: torch.Tensor, batch: int, num_frames: int) -> torch.Tensor:
    """Text states (1 | clips | clips·frames, L, D) → one row per frame (clips·frames, L, D)."""
    rows = text_states.shape[0]
    if rows == batch:
        return text_states
    if rows == 1:
        return text_states.expand(batch, -1, -1)
    if rows == batch // num_frames:
        return text_states.repeat_interleave(num_frames, dim=0)
    raise ValueError(f"adapter text states have {rows} rows for {batch // num_frames} clips of {num_frames} frames")
