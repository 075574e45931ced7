"""The one training step and loop shared by ``tune`` (video) and ``train-adapter`` (images).

The contextual forward process (Eq. 1) draws x_t with the adapter's bias inside, so gradients
reach r_φ through x_t and through the ε̃/v target (docs/concepts/design.md §2; Eq. 6 with λ_t = ᾱ_t/(1−ᾱ_t)).
Checkpoints hold the trained tensors and the AdamW state, and each step's randomness comes from
its own seed, so a resumed run ends on the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..device import cpu_generator
from ..errors import Interrupted
from ..fileio import load_safetensors, save_safetensors, safetensors_metadata
from ..schedulers import q_sample, training_target
from .tune_options import ADAPTER_INPUTS  # noqa: F401 — declared with the setting


@dataclass
class Batch:
    x0: torch.Tensor            # (B·F, C, h, w) scaled clean latents
    text: torch.Tensor          # (B, L, D) text states, one per clip / image
    num_frames: int | None      # F for the inflated video UNet, None for the image UNet



def contextual_loss(unet, adapter, scheduler, batch: Batch, step_seed: int, adapter_input: str = "clean") -> torch.Tensor:
    """‖model(x_t) − target‖² with x_t = √ᾱ_t x0 + k_t r_φ(x0, c, t) + √(1−ᾱ_t) ε (Eq. 1).

    ``adapter_input`` "predicted": on every other step (by the step's seed) the adapter reads the
    x̂0 the model predicts from the unbiased x_t, not the clean x0 — what it reads while sampling
    (docs/concepts/design.md §3). One more UNet call without gradients on those steps."""
    x0 = batch.x0
    per_clip = batch.num_frames or 1
    clips = x0.shape[0] // per_clip
    gen = cpu_generator(step_seed)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (clips,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(x0.device, x0.dtype)
    t_items = t.repeat_interleave(per_clip).to(x0.device)
    states = batch.text.repeat_interleave(per_clip, dim=0).to(x0.dtype)
    kwargs = {"num_frames": batch.num_frames} if batch.num_frames is not None else None

    def model(x_t: torch.Tensor) -> torch.Tensor:
        return unet(x_t.to(x0.dtype), t_items, encoder_hidden_states=states, cross_attention_kwargs=kwargs, return_dict=False)[0]

    r = None
    if adapter is not None:
        seen = x0.float()
        if adapter_input == "predicted" and step_seed % 2:
            seen = _predicted_x0(scheduler, model, x0, noise, t_items)
        r = adapter(seen, batch.text.float(), t.to(x0.device), num_frames=per_clip)
    x_t, target = forward_process(scheduler, x0, noise, t_items, r)
    return F.mse_loss(model(x_t).float(), target)


@torch.no_grad()
def _predicted_x0(scheduler, model, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    from ..schedulers.maths import as_schedule, predict_x0_eps

    schedule = as_schedule(scheduler)
    x_t, _ = forward_process(scheduler, x0, noise, t, None)
    return predict_x0_eps(model(x_t).float(), x_t, schedule.alpha_bar(t), schedule.prediction_type)[0].float()


@torch.no_grad()
def adapter_rel_scale(adapter, scheduler, batch: Batch, levels=(100, 500, 900)) -> dict[str, float]:
    """RMS of the bias k_t·r_φ(x0, c, t) over the noise scale σ_t = √(1−ᾱ_t), at each level t:
    how much the adapter moves the forward process (0 for an untrained, zero-headed adapter)."""
    from ..schedulers.maths import as_schedule

    schedule, out = as_schedule(scheduler), {}
    for level in levels:
        t = torch.tensor([level] * (batch.x0.shape[0] // (batch.num_frames or 1)), device=batch.x0.device)
        r = adapter(batch.x0.float(), batch.text.float(), t, num_frames=batch.num_frames or 1).double()
        bias = float(schedule.k(level)) * r
        out[str(level)] = float(bias.pow(2).mean().sqrt() / (1 - schedule.alpha_bar(level)).sqrt())
    return out


def forward_process(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, r: torch.Tensor | None):
    """x_t (Eq. 1) and the training target in float32, whatever the autocast and the model dtype:
    in bf16 their rounding (RMS 0.06 at t = 0) is as large as the adapter's whole bias."""
    with torch.autocast(x0.device.type, enabled=False):
        x0, noise = x0.float(), noise.float()
        x_t = q_sample(scheduler, x0, noise, t, None if r is None else r.float())
        return x_t, training_target(scheduler, x0, x_t, t)


ADAPTER_PREFIX = "adapter."


def adapter_param_groups(params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float = 1e-2) -> list[dict]:
    """The adapter's AdamW groups at its own ``lr``: its zero-initialised output head without
    weight decay (decay pulls the bias back to 0, the plain model), the rest with it."""
    head = [p for name, p in params.items() if name.split(".")[-2:-1] == ["head"]]
    body = [p for name, p in params.items() if name.split(".")[-2:-1] != ["head"]]
    return [{"params": body, "lr": lr, "weight_decay": weight_decay, "name": "adapter"},
            {"params": head, "lr": lr, "weight_decay": 0.0, "name": "adapter-head"}]


class Trainer:
    """AdamW over named parameters, with atomic safetensors checkpoints of weights and state.

    Parameters named ``adapter.*`` form their own groups at ``adapter_lr`` (default ``lr``): Adam
    moves a weight by about lr per step, so at the UNet's 1e-5 the zero-headed adapter would stay
    near 0 for a whole tune."""

    def __init__(self, params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float = 1e-2,
                 betas: tuple[float, float] = (0.9, 0.999), adapter_lr: float | None = None, sources: dict | None = None):
        self.params = params
        self.sources = sources  # what the frozen weights came from (ContextEditPipeline.sources), kept in checkpoints
        rest = [p for name, p in params.items() if not name.startswith(ADAPTER_PREFIX)]
        adapter = {name[len(ADAPTER_PREFIX):]: p for name, p in params.items() if name.startswith(ADAPTER_PREFIX)}
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "model"}]
        if adapter:
            groups += adapter_param_groups(adapter, lr if adapter_lr is None else adapter_lr, weight_decay)
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, weight_decay=weight_decay)
        self.step = 0
        self.losses: list[float] = []  # the loss of every step from the first, kept across --resume

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"param/{name}": p.data for name, p in self.params.items()}
        for name, p in self.params.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                out[f"opt/{name}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        return out

    def save(self, path: Path) -> None:
        meta = {"step": str(self.step), "losses": json.dumps(self.losses)}
        if self.sources is not None:
            meta["sources"] = json.dumps(self.sources)
        save_safetensors(self.state_tensors(), path, metadata=meta)

    def load(self, path: Path) -> None:
        state = load_safetensors(path)
        device_of = {name: p.device for name, p in self.params.items()}
        for name, p in self.params.items():
            p.data.copy_(state[f"param/{name}"].to(p.device, p.dtype))
            opt = {key.rsplit("/", 1)[1]: value.to(device_of[name]) for key, value in state.items()
                   if key.startswith(f"opt/{name}/")}
            if opt:
                if "step" in opt:
                    opt["step"] = opt["step"].cpu()
                self.optimizer.state[p] = opt
        meta = safetensors_metadata(path)
        self.step = int(meta["step"])
        self.losses = json.loads(meta.get("losses", "[]"))

    @staticmethod
    def recorded_sources(path: Path) -> dict | None:
        """The sources a checkpoint's tune was made with; None for one written before they were kept."""
        meta = safetensors_metadata(path)
        return json.loads(meta["sources"]) if "sources" in meta else None

    def run(self, steps: int, loss_fn: Callable[[int], torch.Tensor], *, seed: int,
            checkpoint: Path | None = None, every: int = 100, advance: Callable[..., None] | None = None,
            autocast: contextlib.AbstractContextManager | None = None, scaler=None,
            stop: Callable[[], bool] | None = None) -> list[float]:
        """Train from ``self.step`` to ``steps``; ``scaler`` (a ``torch.amp.GradScaler``) scales
        the loss under fp16 autocast, so small gradients do not underflow to zero.

        Ctrl-C is taken between steps (a second one aborts at once): the last finished step is
        checkpointed, so ``--resume`` continues exactly where it stopped. ``stop`` does the same
        from any thread (a web page's Cancel): asked after each step, True ends the run with
        :class:`~contextedit.errors.Interrupted` once the step is checkpointed.
        """
        losses: list[float] = []
        with _interrupt_between_steps() as interrupted:
            while self.step < steps:
                with autocast or contextlib.nullcontext():
                    loss = loss_fn(seed * 1_000_003 + self.step)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(self.optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                losses.append(float(loss.detach()))
                self.losses.append(losses[-1])
                if advance is not None:
                    advance(loss=losses[-1])
                due = checkpoint is not None and every and self.step % every == 0 and self.step < steps
                stopped = stop is not None and self.step < steps and stop()
                if checkpoint is not None and (due or interrupted() or stopped):
                    self.save(checkpoint)
                if stopped and not interrupted():
                    kept = "checkpoint saved — `resume` continues it" if checkpoint is not None else "no checkpoint was asked for"
                    raise Interrupted(f"stopped after step {self.step} of {steps}; {kept}")
                if interrupted():
                    if checkpoint is None:
                        raise KeyboardInterrupt(f"interrupted after step {self.step} of {steps} (no checkpoint was asked for)")
                    raise KeyboardInterrupt(f"interrupted after step {self.step} of {steps}; checkpoint saved — "
                                            "run the same command with `resume` to continue")
        return losses


@contextlib.contextmanager
def _interrupt_between_steps():
    """Defer the first SIGINT to the end of the current step (main thread only)."""
    import signal
    import threading

    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["hit"]
    finally:
        signal.signal(signal.SIGINT, previous)
