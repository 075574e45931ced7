"""Train the embedded ``tiny`` model on the shapes world and save it as a diffusers folder.

Same classes as Stable Diffusion (AutoencoderKL, UNet2DConditionModel with cross-attention,
CLIPTextModel + CLIPTokenizer) and the architectures of ``contextedit/testing/tiny.py``, so the
ordinary loading code and pipelines use it. Two stages, from a fixed seed, on frames generated
on the fly by ``contextedit.testing.shapes``:

  A. VAE: L1 + MSE reconstruction with a tiny KL weight; then ``scaling_factor`` = 1 / std of
     the latents, registered in the VAE config as SD does.
  B. text encoder + UNet jointly: ε-prediction DDPM loss on scaled latents of single frames with
     image captions, 10% empty captions for classifier-free guidance.

Each stage checkpoints into ``--work`` (safetensors folders, default ``bench/work/train-tiny``),
so a killed run resumes; the model folder ``--out`` (default ``bench/work/tiny``) is written
atomically at the end, and the record goes to ``bench/results/train-tiny.json``. Writing the
shipped model, ``--out contextedit/assets/tiny``, or a ``--grid`` under ``examples/`` needs
``--update-docs``. ``--init-commit`` starts both stages from ``contextedit/assets/tiny`` as it was
at a commit (read with ``git archive``; needs a full clone). ``--eval-only`` samples the saved
``--out`` model with diffusers' StableDiffusionPipeline (DDIM, guidance 7.5) and scores it with
the pixel oracle.

The shipped model, from a clean clone (the issue-15 model of commit 0b89dc4 continued 3,000 steps
with its context adapter trained jointly; about an hour of one CPU core):

    python bench/train_tiny.py --init-commit 0b89dc4 --vae-steps 0 --unet-steps 3000 --lr 1e-4 \
        --adapter-lr 1e-3 --threads 1 --adapter joint --out contextedit/assets/tiny --update-docs

A model from scratch, in a time budget:

    nice -n 19 python bench/train_tiny.py --vae-minutes 7 --unet-minutes 28
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# On a shared, busy CPU, OpenMP threads that spin at barriers while their sibling is descheduled
# made each step ~15x slower; passive waiting avoids that. Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from contextedit.fileio import atomic_folder, read_json, write_json  # noqa: E402
from contextedit.testing import tiny  # noqa: E402
from contextedit.models.loading import Components, save_components  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import update_docs  # noqa: E402
from tiny_data import encode_text, random_crops, to_uint8  # noqa: E402

import scenes_data  # noqa: E402
import tiny_data  # noqa: E402

ASSETS = ROOT / "contextedit" / "assets"  # shipped models: written only with --update-docs

# Each world: its data module (image_batch, spec_of, oracle_scores, evaluate, save_grid, tokenizer,
# COMBOS), its pixel size, and where its model, checkpoints and record go by default.
WORLDS = {
    "shapes": {"data": tiny_data, "size": 64, "out": "tiny", "results": "train-tiny.json", "work": "bench/work/train-tiny"},
    "scenes": {"data": scenes_data, "size": scenes_data.SIZE, "out": "tiny-scenes", "results": "train-tiny-scenes.json",
               # tracked: a session's processes end when it stops, so each stop commits the checkpoint
               "work": "bench/checkpoints/tiny-scenes"},
}

TEXT_HIDDEN = 64
KL_WEIGHT = 1e-6
UNCOND_PROB = 0.1


# ---------------------------------------------------------------------------------------------
# Stage A: the autoencoder


def train_vae(args, log) -> tuple[torch.nn.Module, dict]:
    folder = Path(args.work) / "vae"
    if args.vae_init and args.vae_steps == 0:  # keep a trained VAE as it is, scaling factor included
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae_init).eval().requires_grad_(False)
        info = _vae_check(vae, np.random.default_rng(args.seed), args.data)
        info.update(steps=0, seconds=0.0, scaling_factor=vae.config.scaling_factor, init=str(args.vae_init))
        log(f"vae: kept {args.vae_init} ({info['decoded_oracle']})")
        return vae, info
    if (folder / "config.json").is_file():
        from diffusers import AutoencoderKL

        log(f"vae: resuming from {folder}")
        return AutoencoderKL.from_pretrained(folder), read_json(Path(args.work) / "vae.json")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vae = _initial_vae(args).train()
    opt = torch.optim.AdamW([{"params": list(vae.parameters()), "peak": args.vae_lr}], lr=args.vae_lr, weight_decay=0.0)
    losses, started, step = [], time.time(), 0
    while (progress := _progress(step, args.vae_steps, time.time() - started, args.vae_minutes)) < 1:
        _set_lr(opt, step, progress)
        pixels = random_crops(args.data.image_batch(rng, args.vae_batch)[0], args.vae_crop, rng)
        posterior = vae.encode(pixels).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels) + KL_WEIGHT * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % args.log_every == 0:
            log(f"vae step {step} ({progress:.0%}) loss {np.mean(losses[-args.log_every:]):.4f}")
    vae.eval().requires_grad_(False)
    info = _vae_check(vae, rng, args.data)
    info.update(steps=step, seconds=round(time.time() - started, 1), final_loss=float(np.mean(losses[-args.log_every:])),
                loss_curve=_curve(losses))
    vae.register_to_config(scaling_factor=info["scaling_factor"])
    log(f"vae: {info}")
    vae.save_pretrained(folder, safe_serialization=True)
    write_json(Path(args.work) / "vae.json", info)
    return vae, info


def _initial_vae(args):
    """A fresh VAE from the seed, or ``--vae-init``'s weights to continue an earlier stage A."""
    if not args.vae_init:
        vae = tiny.tiny_vae(args.seed)
    else:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae_init)
    vae.register_to_config(sample_size=args.size)
    return vae


@torch.no_grad()
def _vae_check(vae, rng: np.random.Generator, data, n: int = 256) -> dict:
    """Latent std (-> scaling factor) and how often the oracle reads decoded frames correctly."""
    latents, decoded, specs = [], [], []
    for _ in range(n // 64):
        pixels, captions = data.image_batch(rng, 64)
        z = vae.encode(pixels).latent_dist.sample()
        latents.append(z)
        decoded.append(to_uint8(vae.decode(z).sample))
        specs += [data.spec_of(c) for c in captions]
    std = torch.cat(latents).std().item()
    return {"latent_std": std, "scaling_factor": 1.0 / std, "decoded_oracle": data.oracle_scores(np.concatenate(decoded), specs)}


# ---------------------------------------------------------------------------------------------
# Stage B: text encoder + UNet


def train_denoiser(args, vae, log):
    """Stage B. With ``--adapter joint`` the context adapter r_φ is trained with the UNet and the
    text encoder the paper's way (Table 7): every step is tune's own ``contextual_loss`` (Eq. 1
    forward process with the bias inside, Eq. 6 target), so the UNet learns to denoise biased x_t."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from contextedit.models.adapter import ContextAdapter, config_for_unet
    from contextedit.schedulers import ContextualDDPMScheduler

    tokenizer = args.data.tokenizer()
    ckpt = Path(args.work) / "denoiser"
    start, elapsed = 0, 0.0
    losses: list[float] = []
    if (ckpt / "state.json").is_file():
        state = read_json(ckpt / "state.json")
        start, losses, elapsed = state["step"], state["losses"], state["elapsed_s"]
        unet = UNet2DConditionModel.from_pretrained(ckpt / "unet")
        text_encoder = CLIPTextModel.from_pretrained(ckpt / "text_encoder")
        log(f"denoiser: resuming at step {start} (optimizer state restarts)")
    elif args.unet_init:  # continue an earlier model folder with a fresh schedule
        unet = UNet2DConditionModel.from_pretrained(Path(args.unet_init) / "unet")
        text_encoder = CLIPTextModel.from_pretrained(Path(args.unet_init) / "text_encoder")
        log(f"denoiser: starting from {args.unet_init}")
    else:
        unet = tiny.tiny_unet(cross_attention_dim=TEXT_HIDDEN, seed=args.seed)
        text_encoder = tiny.tiny_text_encoder(tokenizer, hidden_size=TEXT_HIDDEN, seed=args.seed)
    unet.register_to_config(sample_size=args.size // 4)  # the world's native size (VAE factor 4)
    if text_encoder.config.vocab_size < len(tokenizer):
        text_encoder.resize_token_embeddings(len(tokenizer))
    adapter = None
    if args.adapter == "joint":
        if (ckpt / "adapter").is_dir():
            adapter = ContextAdapter.from_pretrained(ckpt / "adapter")
        elif start == 0 and args.unet_init and (Path(args.unet_init) / "adapter").is_dir():
            adapter = ContextAdapter.from_pretrained(Path(args.unet_init) / "adapter")  # continue its base adapter
        else:
            torch.manual_seed(args.seed)
            adapter = ContextAdapter(**config_for_unet(unet))  # zero head: starts as the plain model
        adapter.train()
    modules = [m for m in (unet, text_encoder, adapter) if m is not None]
    # EMA of the weights is what gets saved: on a small model it samples markedly cleaner than
    # the last iterate. Stored beside the checkpoint so a resumed run keeps it.
    ema = _EMA(modules, args.ema, ckpt / "ema.safetensors" if start else None)
    unet.train()
    text_encoder.train()
    noise_scheduler = ContextualDDPMScheduler.from_config(tiny.tiny_scheduler_config())
    opt = optimizer(unet, text_encoder, adapter, args.lr, args.adapter_lr)
    params = [p for group in opt.param_groups for p in group["params"]]
    torch.manual_seed(args.seed + 1 + start)
    rng = np.random.default_rng([args.seed, start])
    started, step = time.time() - elapsed, start
    while (progress := _progress(step, args.unet_steps, time.time() - started, args.unet_minutes)) < 1:
        _set_lr(opt, step, progress, since=start)  # a resumed run warms its fresh optimizer up again
        pixels, captions = args.data.image_batch(rng, args.batch)
        # caption dropout: the unconditional branch for guidance, and text the adapter must read
        captions = ["" if rng.random() < UNCOND_PROB else c for c in captions]
        loss = denoiser_loss(unet, text_encoder, adapter, noise_scheduler, vae, tokenizer, pixels, captions,
                             step_seed=args.seed * 1_000_003 + step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        losses.append(loss.item())
        step += 1
        if step % args.log_every == 0:
            log(f"unet step {step} ({progress:.0%}) loss {np.mean(losses[-args.log_every:]):.4f}")
        if step % args.ckpt_every == 0:
            _checkpoint(ckpt, unet, text_encoder, step, losses, time.time() - started, ema, adapter)
    _checkpoint(ckpt, unet, text_encoder, step, losses, time.time() - started, ema, adapter)
    ema.copy_to_params()
    info = {"steps": step, "seconds": round(time.time() - started, 1), "final_loss": float(np.mean(losses[-args.log_every:])),
            "loss_curve": _curve(losses), "losses": [round(x, 5) for x in losses]}
    if adapter is not None:
        adapter.eval()
    return tokenizer, unet.eval(), text_encoder.eval(), adapter, info


def denoiser_loss(unet, text_encoder, adapter, scheduler, vae, tokenizer, pixels, captions, step_seed: int):
    """One step's loss: the latents and text states of a batch through ``contextual_loss``,
    the very function ``tune`` and ``train-adapter`` train with (adapter None: plain DDPM loss)."""
    from contextedit.pipelines.training import Batch, contextual_loss

    with torch.no_grad():
        gen = torch.Generator().manual_seed(step_seed)
        posterior = vae.encode(pixels).latent_dist
        latents = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)) * vae.config.scaling_factor
    text = encode_text(tokenizer, text_encoder, captions)
    return contextual_loss(unet, adapter, scheduler, Batch(x0=latents, text=text, num_frames=None), step_seed)


def optimizer(unet, text_encoder, adapter, lr: float, adapter_lr: float) -> torch.optim.AdamW:
    """AdamW: the denoiser at ``lr`` (wd 1e-2); the adapter at ``adapter_lr``, no decay on its
    zero-initialised head (decay would pull it back to 0, the plain model)."""
    groups = [{"params": list(unet.parameters()) + list(text_encoder.parameters()), "weight_decay": 1e-2, "peak": lr}]
    if adapter is not None:
        from contextedit.pipelines.training import adapter_param_groups

        groups += adapter_param_groups(dict(adapter.named_parameters()), adapter_lr)
        for group in groups[1:]:
            group["peak"] = group["lr"]
    return torch.optim.AdamW(groups, lr=lr)


class _EMA:
    """Exponential moving average of parameters, decay warmed up as min(decay, (1+n)/(10+n))."""

    def __init__(self, modules, decay: float, resume: Path | None = None):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        if resume is not None and resume.is_file():
            from safetensors.torch import load_file

            saved = load_file(resume)
            self.shadow = [saved[str(i)] for i in range(len(self.params))]

    @torch.no_grad()
    def update(self, step: int) -> None:
        if not self.decay:
            return
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Load the averaged weights into the tracked parameters (the last iterate is dropped)."""
        if self.decay:
            torch._foreach_copy_(self.params, self.shadow)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({str(i): s.contiguous() for i, s in enumerate(self.shadow)}, str(path))


def _checkpoint(folder: Path, unet, text_encoder, step: int, losses: list[float], elapsed_s: float, ema=None, adapter=None) -> None:
    """Weights first, then the state file that marks them complete."""
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    if adapter is not None:
        adapter.save_pretrained(folder / "adapter")
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    if ema is not None:
        ema.save(folder / "ema.safetensors")
    write_json(folder / "state.json", {"step": step, "losses": losses, "elapsed_s": elapsed_s})


def _curve(losses: list[float], points: int = 20) -> list[list[float]]:
    """[step, mean loss] at ``points`` even intervals, for the notes file."""
    edges = np.linspace(0, len(losses), points + 1).astype(int)
    return [[int(b), float(np.mean(losses[a:b]))] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _progress(step: int, total: int, elapsed_s: float, minutes: float | None) -> float:
    """Fraction of the stage done: by steps, or by wall time when a time budget is set.

    The machine is shared, so a time budget keeps the run inside its slot whatever the load.
    """
    by_steps = step / total
    return max(by_steps, elapsed_s / (60 * minutes)) if minutes else by_steps


def _set_lr(opt, step: int, progress: float, warmup: int = 50, since: int = 0) -> None:
    """Linear warm-up over ``warmup`` steps from ``since`` (the step the optimizer started at), then
    cosine decay to 10% of each group's peak."""
    cosine = 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))
    for group in opt.param_groups:
        group["lr"] = group["peak"] * min(1.0, (step - since + 1) / warmup) * cosine


# ---------------------------------------------------------------------------------------------
# Saving and checking


def save_atomically(comps: Components, out: Path, adapter=None) -> Path:
    """Write the folder beside ``out`` and swap it in, so ``out`` is never half-written. The base
    adapter, when there is one, goes in ``adapter/`` (config.json + safetensors)."""
    out = Path(out)
    with atomic_folder(out) as tmp:
        save_components(comps, tmp)
        if adapter is not None:
            adapter.save_pretrained(tmp / "adapter")
        for extra in ("contextedit.json",):  # the model's recommended settings travel with it
            if (out / extra).is_file():
                shutil.copy2(out / extra, tmp / extra)
    return out


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", choices=tuple(WORLDS), default="shapes",
                   help="shapes: the embedded tiny model's world (64 px); scenes: tiny-scenes' (96 px, two objects, textures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-minutes", type=float, default=None, help="stop stage A after this wall time")
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-crop", type=int, default=32, help="train the VAE on random crops this size")
    p.add_argument("--vae-init", default=None, help="start stage A from this saved AutoencoderKL folder")
    p.add_argument("--init-commit", default=None,
                   help="--vae-init and --unet-init default to contextedit/assets/tiny as of this git commit")
    p.add_argument("--notes", default="", help="free text recorded in the results file")
    p.add_argument("--unet-steps", type=int, default=20000)
    p.add_argument("--unet-init", default=None, help="start stage B from this model folder's unet and text_encoder")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights (0: the last iterate)")
    p.add_argument("--unet-minutes", type=float, default=None, help="stop stage B after this wall time")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--work", default=None, help="checkpoints for resuming (default: the world's)")
    p.add_argument("--out", default=None, help="the model folder (default bench/work/<model>; "
                   "the shipped contextedit/assets/<model> only with --update-docs)")
    p.add_argument("--results", default=None, help="the record (default bench/results/train-<model>.json)")
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--eval-only", action="store_true", help="only sample the saved --out folder and score it")
    p.add_argument("--grid", default=None, help="also save the evaluation samples as a PNG grid here")
    p.add_argument("--eval-seeds", type=int, default=4, help="sample every prompt with this many seeds")
    p.add_argument("--adapter", choices=("none", "joint"), default="joint",
                   help="train the context adapter jointly with the denoiser (the paper's way), or no adapter")
    p.add_argument("--adapter-lr", type=float, default=1e-3, help="peak lr of the adapter (its own AdamW group)")
    update_docs.add_flag(p)
    args = p.parse_args(argv)
    world = WORLDS[args.world]
    args.data, args.size = world["data"], world["size"]
    args.work = args.work or str(ROOT / world["work"])
    args.out = args.out or str(ROOT / "bench" / "work" / world["out"])
    args.results = args.results or str(ROOT / "bench" / "results" / world["results"])
    args.model_name = world["out"]
    return args


def _init_folder(args) -> Path:
    return Path(args.work) / f"init-{args.init_commit}"


def init_from_commit(args) -> None:
    """``--init-commit``: ``contextedit/assets/tiny`` as of that commit, extracted into ``--work`` once,
    becomes the default of ``--vae-init`` (its ``vae/``) and ``--unet-init``."""
    import io
    import subprocess
    import tarfile

    model = _init_folder(args) / "contextedit" / "assets" / "tiny"
    if not (model / "model_index.json").is_file():
        cmd = ["git", "-C", str(ROOT), "archive", "--format=tar", args.init_commit, "contextedit/assets/tiny"]
        try:
            tar = subprocess.run(cmd, check=True, capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            reason = getattr(exc, "stderr", b"").decode(errors="replace").strip() or str(exc)
            raise SystemExit(f"--init-commit {args.init_commit}: {' '.join(cmd)} failed ({reason}); name a commit of "
                             "this repository that has contextedit/assets/tiny, in a full (not shallow) clone") from None
        with atomic_folder(_init_folder(args)) as tmp, tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(tmp, **safe)
    args.vae_init = args.vae_init or str(model / "vae")
    args.unet_init = args.unet_init or str(model)


def main(argv=None) -> None:
    args = parse_args(argv)
    update_docs.check(args, None if args.eval_only else args.out, args.results, args.grid)
    if args.init_commit:
        init_from_commit(args)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    if not args.eval_only:
        vae, vae_info = train_vae(args, log)
        tokenizer, unet, text_encoder, adapter, unet_info = train_denoiser(args, vae, log)
        comps = Components(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                           scheduler_config=tiny.tiny_scheduler_config(), model_id=args.model_name)
        save_atomically(comps, Path(args.out), adapter)
        train_s = time.time() - t0
        log(f"saved {args.out} ({folder_size_mb(Path(args.out)):.1f} MB) after {train_s:.0f}s")
    seeds = tuple(range(args.seed, args.seed + args.eval_seeds))
    arms = {"with_adapter": True, "without_adapter": False} if (Path(args.out) / "adapter").is_dir() else {"without_adapter": False}
    scores = {}
    for arm, use in arms.items():
        scores[arm], images = args.data.evaluate(Path(args.out), steps=args.eval_steps, seeds=seeds, adapter=use)
        log(f"oracle agreement ({arm}): {scores[arm]}")
        if args.grid and arm == next(iter(arms)):
            args.data.save_grid(images[:len(args.data.COMBOS)], Path(args.grid))
    if args.eval_only:
        return
    argv_given = sys.argv[1:] if argv is None else list(argv)
    adapter_recipe = f", adapter lr {args.adapter_lr} (no decay on its head)" if args.adapter == "joint" else ""
    modules = (("vae", vae), ("unet", unet), ("text_encoder", text_encoder), ("adapter", adapter))
    record = {
        "variant": args.adapter, "folder": _portable(args.out),
        "size_mb": round(folder_size_mb(Path(args.out)), 2),
        "wall_time_s": round(train_s, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), torch.set_num_threads({args.threads}), nice 19",
        "notes": args.notes,
        # runnable as it stands, from the repository root of a clean clone
        "command": shlex.join(["python", "bench/train_tiny.py", *(_portable(a) for a in argv_given)]),
        "torch": torch.__version__, "python": sys.version.split()[0], "seed": args.seed,
        "world": args.world, "data": args.data.DATA,
        "vae": {"recipe": f"L1 + MSE + {KL_WEIGHT} KL on random {args.vae_crop}px crops, AdamW lr {args.vae_lr}, "
                          f"batch {args.vae_batch}, warm-up + cosine",
                **{k: (_init_name(args, v) if k == "init" else v) for k, v in vae_info.items()}},
        "denoiser": {"recipe": "contextual_loss (tune's step): eps-prediction on scaled latents, "
                               f"{UNCOND_PROB:.0%} empty captions (caption dropout), AdamW lr {args.lr} wd 1e-2{adapter_recipe}, "
                               f"warm-up + cosine, batch {args.batch}, grad clip 1.0, EMA {args.ema}",
                     "init": _init_name(args, args.unet_init), "adapter": args.adapter,
                     "text_hidden": TEXT_HIDDEN, **unet_info},
        "params": {name: sum(p.numel() for p in m.parameters()) for name, m in modules if m is not None},
        "eval": scores,
    }
    results = read_json(args.results) if Path(args.results).is_file() else {}
    if "variants" not in results:
        results = {"model": f"{args.model_name} ({args.world} world)", "variants": {}, "previous": results or None}
    results["variants"][args.adapter] = record
    write_json(args.results, results)


def _portable(value):
    """Paths inside the repository as relative paths, so the record names nothing outside it."""
    if value is None or not isinstance(value, str) or "/" not in value:
        return value
    path = Path(value).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else value


def _init_name(args, value):
    """An init folder by its name in the repository: ``--init-commit``'s extraction as "PATH at commit C"."""
    if value and args.init_commit:
        path, folder = Path(value).resolve(), _init_folder(args).resolve()
        if path.is_relative_to(folder):
            return f"{path.relative_to(folder)} at commit {args.init_commit}"
    return _portable(value)


if __name__ == "__main__":
    main()
