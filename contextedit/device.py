"""Device, dtype and seed resolution, and the translation of CUDA out-of-memory into a user error."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import OutOfMemoryError, UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available; ``cuda``/``cuda:N`` refused clearly when CUDA is absent."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"`device` {name} was asked for but CUDA is not available here; use `device` cpu (or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UsageError(f"`device` {name}: only {count} CUDA device(s) here; pick cuda:0..{count - 1}")
        return device
    raise UsageError(f"`device` {name!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on GPUs that support it, else fp16 on GPU; fp32 on CPU."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise UsageError(f"`dtype` {name!r} is not one of auto, fp32, fp16, bf16")
    if device.type == "cpu" and name == "fp16":
        raise UsageError("`dtype` fp16 is not supported on the CPU; use fp32 (or bf16)")
    return DTYPES[name]


def cpu_generator(seed: int) -> torch.Generator:
    """Noise is drawn on the CPU so a seed gives the same latents on every device."""
    return torch.Generator("cpu").manual_seed(int(seed))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block the CPU RNG starts from ``seed``; after it, it is as it was before.

    New layers initialise their weights from that RNG: building them inside makes them a function
    of the run's --seed alone, without changing the random stream of the caller.
    """
    with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only
        torch.random.default_generator.manual_seed(int(seed))  # torch.manual_seed would reseed CUDA too
        yield


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


@contextlib.contextmanager
def oom_guard(device: torch.device, what: str) -> Iterator[None]:
    """Turn CUDA OOM into one line with the peak and what to lower."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        peak = peak_memory_gib(device)
        peak_txt = f" (peak {peak:.1f} GiB)" if peak is not None else ""
        torch.cuda.empty_cache()
        raise OutOfMemoryError(
            f"CUDA ran out of memory during {what}{peak_txt}; lower `frames` or `size`, "
            "turn on `checkpointing`, or use `dtype` fp16/bf16"
        ) from exc
