"""A clip tuned in memory (:class:`TunedClip`) and its run folder.

A run folder holds only what was tuned and what editing reads, so ``edit`` never decodes the
video again: the tuned UNet tensors (queries + temporal layers, safetensors), the adapter as a
diffusers model folder, the clip's VAE latents, the preprocessed clip (mp4) and a JSON manifest
of the settings. ``save`` writes nothing else (no ``runs/latest``: that is the CLI's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..defaults import EVERY_BLOCK
from ..errors import InputError
from ..fileio import atomic_folder, load_safetensors, save_safetensors
from ..models.adapter import ContextAdapter
from ..runs import MANIFEST_VERSION, file_hashes, load_manifest, run_file, source_clip, verify_files, write_manifest

# "frames": the clip as tuned, lossless (PNGs): edits paste kept pixels from it and must match an
# edit in memory; "clip" is the same clip to watch (H.264 is lossy). Runs without "frames" read "clip".
FILES = {"tuned": "tuned.safetensors", "adapter": "adapter", "latents": "latents.safetensors", "clip": "source.mp4",
         "frames": "source-frames"}


@dataclass
class TunedClip:
    """Everything an edit needs, held in memory: the clip, its latents, the tuned tensors, the adapter."""

    model: str                          # the base model the UNet was tuned from
    prompt: str                         # the source prompt
    frames: np.ndarray | None           # (F, H, W, 3) uint8, the frames as tuned (None: not read yet, see source_frames)
    fps: float
    latents: torch.Tensor               # (F, C, h, w) scaled VAE latents, float32 on the CPU
    tuned: dict[str, torch.Tensor]      # the tuned UNet tensors by parameter name
    adapter: ContextAdapter | None = None
    settings: dict = field(default_factory=dict)   # how it was tuned: steps, lr, seed, adapter_lr, …
    losses: list[float] = field(default_factory=list)
    record: dict = field(default_factory=dict)     # more for the manifest: timings, versions, source file
    cache: dict = field(default_factory=dict, repr=False)  # null-text embeddings by key, in memory
    source: Path | None = field(default=None, repr=False)  # the run folder's clip, read on first use

    def source_frames(self) -> np.ndarray:
        """The frames as tuned; a loaded clip decodes them from its run folder only when asked
        (editing reads the latents, so ``edit`` never decodes the video)."""
        if self.frames is None:
            from .. import video as vio

            self.frames = vio.read_video(self.source, frames=self.num_frames, stride=1).frames
        return self.frames

    @property
    def temporal_layers(self) -> str:
        """Where its UNet carries temporal layers (``every-block`` for runs that do not say: they
        were tuned before the choice existed)."""
        return self.settings.get("temporal_layers") or EVERY_BLOCK

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        frames = self.source_frames()
        return int(frames.shape[2]), int(frames.shape[1])

    def manifest(self) -> dict:
        width, height = self.size
        files = {k: v for k, v in FILES.items() if k != "adapter" or self.adapter is not None}
        return {
            **self.record, **self.settings,
            "model": self.model, "source_prompt": self.prompt, "frames": self.num_frames,
            "width": width, "height": height, "fps": self.fps, "adapter": self.adapter is not None,
            "final_loss": self.losses[-1] if self.losses else None, "loss_curve": self.losses, "files": files,
        }

    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the run folder, whole or not at all (an existing one only with ``overwrite``)."""
        from .. import video as vio

        folder = Path(folder)
        with atomic_folder(folder, exclusive=not overwrite) as tmp:
            save_safetensors({k: v.detach().float().cpu().contiguous() for k, v in self.tuned.items()}, tmp / FILES["tuned"])
            if self.adapter is not None:
                self.adapter.save_pretrained(str(tmp / FILES["adapter"]), safe_serialization=True)
            save_safetensors({"latents": self.latents.detach().float().cpu().contiguous()}, tmp / FILES["latents"])
            vio.write_video(self.source_frames(), tmp / FILES["clip"], self.fps)
            vio.write_video(self.source_frames(), tmp / FILES["frames"], self.fps, "frames")
            manifest = self.manifest()
            write_manifest(tmp, {**manifest, "sha256": file_hashes(tmp, manifest["files"])})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "TunedClip":
        """A run folder written by :meth:`save` (or by ``contextedit tune``); its clip's frames are
        read only when asked (:meth:`source_frames`)."""
        from .adapters import load_adapter_folder

        folder = Path(folder)
        manifest = load_manifest(folder)
        if manifest["version"] > MANIFEST_VERSION:
            raise InputError(f"{folder} was written by a newer contextedit (manifest version {manifest['version']}); upgrade")
        if manifest["version"] < 2:
            raise InputError(f"{folder} is a run of a development version (manifest version {manifest['version']}); "
                             "tune again")
        verify_files(folder, manifest)
        fps = manifest["fps"]
        if manifest["version"] < 3 and manifest.get("stride"):  # its fps was the source's, not the clip's
            fps = fps / manifest["stride"]
        latents = load_safetensors(run_file(folder, manifest, "latents"))["latents"]
        tuned = load_safetensors(run_file(folder, manifest, "tuned"))
        adapter = None
        if manifest.get("adapter"):
            adapter = load_adapter_folder(run_file(folder, manifest, "adapter"), "run adapter")[0]
        clip = source_clip(folder, manifest)
        known = {"version", "model", "source_prompt", "frames", "width", "height", "fps", "adapter", "final_loss",
                 "loss_curve", "files", "sha256"}
        settings = {k: manifest[k] for k in SETTINGS if k in manifest}
        record = {k: v for k, v in manifest.items() if k not in known and k not in settings}
        return cls(model=manifest["model"], prompt=manifest["source_prompt"], frames=None, fps=fps,
                   latents=latents, tuned=tuned, adapter=adapter, settings=settings,
                   losses=list(manifest.get("loss_curve") or []), record=record, source=clip)


# The manifest keys that say how a clip was tuned (TunedClip.settings).
SETTINGS = ("steps", "lr", "seed", "adapter_lr", "adapter_input", "adapter_init", "checkpointing", "device", "dtype",
            "prediction_type", "adapter_rel_scale", "window", "control", "controlnet", "depth_model", "temporal_layers",
            "motion_adapter", "temporal")
