"""``contextedit train-adapter``: the image context adapter (paper §3.2) on an image–caption folder.

The same adapter class as ``tune`` with one frame, the same contextual loss and the same
trainer; the UNet stays frozen (``--tune-unet none``) or tunes its attention queries (``attn``)
— on a copy sharing the frozen weights. The result is an adapter folder (diffusers' layout, plus
``unet.safetensors`` for tuned queries and ``training.json``), written whole or not at all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .. import video as vio
from ..device import cpu_generator, oom_guard, resolve_device, resolve_dtype, seeded
from ..errors import InputError, UsageError
from ..fileio import atomic_folder, save_safetensors, write_json
from ..models.adapter import ContextAdapter, config_for_unet
from ..models.flops import count_parameters
from ..models.inflate import shared_copy, trainable_parameters
from ..models.lora import lora_specs
from ..models.loading import load_components
from ..options import TrainAdapterOptions  # noqa: F401 — declared there
from ..pipelines.adapters import RECORD_FILE, UNET_FILE
from ..pipelines.common import encode_latents, encode_text
from ..pipelines.training import Batch, Trainer, contextual_loss
from ..pipelines.tuning import autocast_for, grad_scaler_for
from ..progress import ProgressFactory, silent
from ..runs import check_new_output
from ..schedulers import ContextualDDPMScheduler
from ..video import IMAGE_SUFFIXES


def read_image_captions(folder: str | Path) -> list[tuple[Path, str]]:
    """(image, caption) pairs from ``metadata.jsonl`` or from same-stem ``.txt`` files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} not found; pass a folder of images with captions")
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        pairs = []
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((folder / row["file_name"], str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"{meta} line {n} is not {{\"file_name\": …, \"text\": …}}: {exc}") from exc
        missing = [str(p.name) for p, _ in pairs if not p.is_file()]
        if missing:
            raise InputError(f"{meta} names images that are not in {folder}: {', '.join(missing[:3])}; fix metadata.jsonl")
    else:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        captions = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".txt")
        if captions and not images:
            raise InputError(f"{folder} has captions (.txt) but no images; add the images (png/jpg) beside them")
        uncaptioned = [p.name for p in images if not p.with_suffix(".txt").is_file()]
        if uncaptioned:
            raise InputError(f"{folder}: {len(uncaptioned)} image(s) have no caption (e.g. {uncaptioned[0]}); "
                             "add same-stem .txt files or a metadata.jsonl")
        pairs = [(p, p.with_suffix(".txt").read_text().strip()) for p in images]
    if not pairs:
        raise InputError(f"{folder} holds no images with captions; add images with same-stem .txt captions or a metadata.jsonl")
    empty = [p.name for p, c in pairs if not c.strip()]
    if empty:
        raise InputError(f"caption of {empty[0]} is empty; every image needs a caption")
    return pairs


def train_adapter(opts: TrainAdapterOptions, progress: ProgressFactory = silent) -> Path:
    opts.validate()
    out = Path(opts.out)
    ckpt = out.with_name(out.name + ".checkpoint.safetensors")
    if opts.resume:
        if not ckpt.is_file():
            raise InputError(f"nothing to resume: {ckpt} does not exist; run without `resume`")
    else:
        check_new_output(out, opts.overwrite, "adapter folder")
        if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
            raise UsageError(f"`out` {out} is not an adapter folder; `overwrite` replaces only adapter folders — "
                             "choose another `out`")
    pairs = read_image_captions(opts.data)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    comps = load_components(opts.model, device, dtype, model_config=opts.model_config, loras=lora_specs(opts.lora))
    size = opts.size or comps.native_size
    pixels = np.stack([vio.resize_crop(vio.read_image(p)[None], size, size)[0] for p, _ in pairs])
    t0 = time.perf_counter()
    with oom_guard(device, "adapter training"):
        x0 = encode_latents(comps.vae, vio.to_tensor(pixels))
        texts = torch.cat([encode_text(comps, [c]) for _, c in pairs])
        unet = shared_copy(comps.unet) if opts.tune_unet == "attn" else comps.unet
        with seeded(opts.seed):  # the fresh adapter's weights follow --seed
            adapter = ContextAdapter(**config_for_unet(unet)).to(device)
        params = {f"adapter.{n}": p for n, p in adapter.named_parameters()}
        if opts.tune_unet == "attn":
            for name, p in trainable_parameters(unet).items():  # the attention queries
                p.requires_grad_(True)
                p.data = p.data.float()
                params[f"unet.{name}"] = p
        trainer = Trainer(params, lr=opts.lr)
        if opts.resume:
            trainer.load(ckpt)
        scheduler = ContextualDDPMScheduler.from_config(comps.scheduler_config)

        def loss_fn(step_seed: int) -> torch.Tensor:
            idx = torch.randint(0, len(pairs), (opts.batch,), generator=cpu_generator(step_seed + 1))
            return contextual_loss(unet, adapter, scheduler, Batch(x0[idx], texts[idx], None), step_seed)

        with progress("training adapter", opts.steps - trainer.step) as advance:
            losses = trainer.run(opts.steps, loss_fn, seed=opts.seed, checkpoint=ckpt, every=opts.checkpoint_every, advance=advance,
                                 autocast=autocast_for(device, dtype), scaler=grad_scaler_for(device, dtype))
    unet_sd = {k[len("unet."):]: p.detach().float().cpu() for k, p in params.items() if k.startswith("unet.")}
    with atomic_folder(out, exclusive=not opts.overwrite) as tmp:
        adapter.save_pretrained(str(tmp), safe_serialization=True)
        if unet_sd:
            save_safetensors(unet_sd, tmp / UNET_FILE)
        write_json(tmp / RECORD_FILE, {
            "model": comps.model_id, "contextedit": __version__, "data": str(Path(opts.data).resolve()),
            "images": len(pairs), "size": size, "steps": opts.steps, "lr": opts.lr, "batch": opts.batch,
            "tune_unet": opts.tune_unet, "seed": opts.seed, "adapter_parameters": count_parameters(adapter),
            "final_loss": losses[-1] if losses else None, "loss_curve": list(trainer.losses),
            "train_s": time.perf_counter() - t0,
        })
    ckpt.unlink(missing_ok=True)
    return out
