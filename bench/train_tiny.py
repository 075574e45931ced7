"""Train the embedded ``tiny`` model on the shapes world and save it as a diffusers folder.

Same classes as Stable Diffusion (AutoencoderKL, UNet2DConditionModel with cross-attention,
CLIPTextModel + CLIPTokenizer) and the architectures of ``contextedit/models/tiny.py``, so the
ordinary loading code and pipelines use it. Two stages, from a fixed seed, on frames generated
on the fly by ``contextedit.shapes``:

  A. VAE: L1 + MSE reconstruction with a tiny KL weight; then ``scaling_factor`` = 1 / std of
     the latents, registered in the VAE config as SD does.
  B. text encoder + UNet jointly: ε-prediction DDPM loss on scaled latents of single frames with
     image captions, 10% empty captions for classifier-free guidance.

Each stage checkpoints into ``--work`` (safetensors folders), so a killed run resumes; the model
folder is written atomically at the end. ``--eval-only`` samples the saved model with diffusers'
StableDiffusionPipeline (DDIM, guidance 7.5) and scores it with the pixel oracle.

    nice -n 19 python bench/train_tiny.py --vae-minutes 7 --unet-minutes 28
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# On a shared, busy CPU, OpenMP threads that spin at barriers while their sibling is descheduled
# made each step ~15x slower; passive waiting avoids that. Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from contextedit import shapes  # noqa: E402
from contextedit.fileio import read_json, write_json  # noqa: E402
from contextedit.models import tiny  # noqa: E402
from contextedit.models.loading import Components, _load_pretrained, save_components  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "contextedit" / "assets" / "tiny"
DEFAULT_RESULTS = ROOT / "bench" / "results" / "train-tiny.json"
TEXT_HIDDEN = 64
KL_WEIGHT = 1e-6
UNCOND_PROB = 0.1
COMBOS = list(itertools.product(shapes.SHAPES, shapes.COLOURS, shapes.BACKGROUNDS))


# ---------------------------------------------------------------------------------------------
# Data


def image_batch(rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, list[str]]:
    """``batch`` random shapes-world frames in [-1, 1] (B, 3, 64, 64) and their image captions."""
    images, captions = [], []
    for _ in range(batch):
        spec = shapes.random_spec(rng)
        image, caption = shapes.make_image(spec["shape"], spec["colour"], spec["background"], rng=rng)
        images.append(image)
        captions.append(caption)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions


def random_crops(pixels: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``size``x``size`` crop of each image: the VAE is convolutional, and crops cost less."""
    if size >= pixels.shape[-1]:
        return pixels
    corners = rng.integers(0, pixels.shape[-1] - size + 1, size=(len(pixels), 2))
    return torch.stack([p[:, y:y + size, x:x + size] for p, (y, x) in zip(pixels, corners)])


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def oracle_scores(images: np.ndarray, specs: list[tuple[str, str, str]]) -> dict[str, float]:
    """Fraction of images whose oracle reading matches (shape, colour, background), per field and all."""
    hits = [shapes.agrees(shapes.oracle(image), *spec) for image, spec in zip(images, specs)]
    scores = {key: float(np.mean([h[key] for h in hits])) for key in ("shape", "colour", "background")}
    scores["all"] = float(np.mean([all(h.values()) for h in hits]))
    return scores


def encode_text(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    """Token states padded to 77 tokens, exactly as StableDiffusionPipeline encodes prompts."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]


# ---------------------------------------------------------------------------------------------
# Stage A: the autoencoder


def train_vae(args, log) -> tuple[torch.nn.Module, dict]:
    folder = Path(args.work) / "vae"
    if args.vae_init and args.vae_steps == 0:  # keep a trained VAE as it is, scaling factor included
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae_init).eval().requires_grad_(False)
        info = _vae_check(vae, np.random.default_rng(args.seed))
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
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    losses, started, step = [], time.time(), 0
    while (progress := _progress(step, args.vae_steps, time.time() - started, args.vae_minutes)) < 1:
        _set_lr(opt, args.vae_lr, step, progress)
        pixels = random_crops(image_batch(rng, args.vae_batch)[0], args.vae_crop, rng)
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
    info = _vae_check(vae, rng)
    info.update(steps=step, seconds=round(time.time() - started, 1), final_loss=float(np.mean(losses[-args.log_every:])), loss_curve=_curve(losses))
    vae.register_to_config(scaling_factor=info["scaling_factor"])
    log(f"vae: {info}")
    vae.save_pretrained(folder, safe_serialization=True)
    write_json(Path(args.work) / "vae.json", info)
    return vae, info


def _initial_vae(args):
    """A fresh VAE from the seed, or ``--vae-init``'s weights to continue an earlier stage A."""
    if not args.vae_init:
        return tiny.tiny_vae(args.seed)
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(args.vae_init)


@torch.no_grad()
def _vae_check(vae, rng: np.random.Generator, n: int = 256) -> dict:
    """Latent std (-> scaling factor) and how often the oracle reads decoded frames correctly."""
    latents, decoded, specs = [], [], []
    for _ in range(n // 64):
        pixels, captions = image_batch(rng, 64)
        z = vae.encode(pixels).latent_dist.sample()
        latents.append(z)
        decoded.append(to_uint8(vae.decode(z).sample))
        specs += [_spec_of(c) for c in captions]
    std = torch.cat(latents).std().item()
    return {"latent_std": std, "scaling_factor": 1.0 / std, "decoded_oracle": oracle_scores(np.concatenate(decoded), specs)}


def _spec_of(caption: str) -> tuple[str, str, str]:
    """(shape, colour, background) back from an image caption."""
    words = caption.split()
    return words[2], words[1], words[5]


# ---------------------------------------------------------------------------------------------
# Stage B: text encoder + UNet


def train_denoiser(args, vae, log) -> tuple[object, torch.nn.Module, torch.nn.Module, dict]:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny.tiny_tokenizer()
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
    # EMA of the weights is what gets saved: on a small model it samples markedly cleaner than
    # the last iterate. Stored beside the checkpoint so a resumed run keeps it.
    ema = _EMA([unet, text_encoder], args.ema, ckpt / "ema.safetensors" if start else None)
    unet.train()
    text_encoder.train()
    noise_scheduler = DDPMScheduler.from_config(tiny.tiny_scheduler_config())
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    scale = vae.config.scaling_factor
    torch.manual_seed(args.seed + 1 + start)
    rng = np.random.default_rng([args.seed, start])
    started, step = time.time() - elapsed, start
    while (progress := _progress(step, args.unet_steps, time.time() - started, args.unet_minutes)) < 1:
        _set_lr(opt, args.lr, step, progress)
        pixels, captions = image_batch(rng, args.batch)
        captions = ["" if rng.random() < UNCOND_PROB else c for c in captions]
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * scale
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),))
        noisy = noise_scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, encode_text(tokenizer, text_encoder, captions)).sample
        loss = F.mse_loss(pred, noise)
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
            _checkpoint(ckpt, unet, text_encoder, step, losses, time.time() - started, ema)
    _checkpoint(ckpt, unet, text_encoder, step, losses, time.time() - started, ema)
    ema.copy_to_params()
    info = {"steps": step, "seconds": round(time.time() - started, 1), "final_loss": float(np.mean(losses[-args.log_every:])), "loss_curve": _curve(losses)}
    return tokenizer, unet.eval(), text_encoder.eval(), info


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


def _checkpoint(folder: Path, unet, text_encoder, step: int, losses: list[float], elapsed_s: float, ema=None) -> None:
    """Weights first, then the state file that marks them complete."""
    unet.save_pretrained(folder / "unet", safe_serialization=True)
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


def _set_lr(opt, peak: float, step: int, progress: float, warmup: int = 50) -> None:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``peak`` over ``progress``."""
    cosine = 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))
    lr = peak * min(1.0, (step + 1) / warmup) * cosine
    for group in opt.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------------------------------------
# Saving and checking


def save_atomically(comps: Components, out: Path) -> Path:
    """Write the folder beside ``out`` and swap it in, so ``out`` is never half-written."""
    out = Path(out)
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    for path in (tmp, old):
        shutil.rmtree(path, ignore_errors=True)
    save_components(comps, tmp)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


@torch.no_grad()
def evaluate(folder: Path, steps: int = 50, guidance: float = 7.5, seed: int = 0, per_combo: int = 1) -> dict:
    """Sample every (shape, colour, background) prompt with DDIM + CFG; score with the oracle."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    comps = _load_pretrained(str(folder))
    pipe = StableDiffusionPipeline(
        vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
        scheduler=DDIMScheduler.from_config(comps.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    specs = [combo for combo in COMBOS for _ in range(per_combo)]
    prompts = [shapes.image_caption(*spec) for spec in specs]
    generator = torch.Generator().manual_seed(seed)
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="np")
    images = (out.images * 255).round().astype(np.uint8)
    scores = oracle_scores(images, specs)
    scores.update(prompts=len(prompts), sampler=f"DDIM {steps} steps, guidance {guidance}, seed {seed}")
    return scores, images


def _save_grid(images: np.ndarray, path: Path, columns: int = 12) -> None:
    from PIL import Image

    rows = math.ceil(len(images) / columns)
    grid = np.zeros((rows * 64, columns * 64, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = image
    Image.fromarray(grid).save(path)


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-minutes", type=float, default=None, help="stop stage A after this wall time")
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-crop", type=int, default=32, help="train the VAE on random crops this size")
    p.add_argument("--vae-init", default=None, help="start stage A from this saved AutoencoderKL folder")
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
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "contextedit-train-tiny"), help="checkpoints for resuming")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--eval-only", action="store_true", help="only sample the saved --out folder and score it")
    p.add_argument("--grid", default=None, help="also save the evaluation samples as a PNG grid here")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    if not args.eval_only:
        vae, vae_info = train_vae(args, log)
        tokenizer, unet, text_encoder, unet_info = train_denoiser(args, vae, log)
        comps = Components(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                           scheduler_config=tiny.tiny_scheduler_config(), model_id="tiny")
        save_atomically(comps, Path(args.out))
        train_s = time.time() - t0
        log(f"saved {args.out} ({folder_size_mb(Path(args.out)):.1f} MB) after {train_s:.0f}s")
    scores, images = evaluate(Path(args.out), steps=args.eval_steps, seed=args.seed)
    log(f"oracle agreement: {scores}")
    if args.grid:
        _save_grid(images, Path(args.grid))
    if args.eval_only:
        return
    write_json(args.results, {
        "model": "tiny (shapes world)", "folder": str(Path(args.out).relative_to(ROOT)) if Path(args.out).is_relative_to(ROOT) else args.out,
        "size_mb": round(folder_size_mb(Path(args.out)), 2),
        "wall_time_s": round(train_s, 1),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), torch.set_num_threads({args.threads}), nice 19",
        "notes": args.notes, "command": " ".join(sys.argv[1:]),
        "torch": torch.__version__, "python": sys.version.split()[0], "seed": args.seed,
        "data": "on the fly from contextedit.shapes: random_spec + make_image (uniform shape/colour/background, uniform valid centre), image captions",
        "vae": {"recipe": f"L1 + MSE + {KL_WEIGHT} KL on random {args.vae_crop}px crops, AdamW lr {args.vae_lr}, batch {args.vae_batch}, warm-up + cosine", **vae_info},
        "denoiser": {"recipe": f"eps-prediction DDPM loss on scaled latents, {UNCOND_PROB:.0%} empty captions, AdamW lr {args.lr} wd 1e-2, warm-up + cosine, batch {args.batch}, grad clip 1.0, EMA {args.ema}",
                     "init": args.unet_init,
                     "text_hidden": TEXT_HIDDEN, **unet_info},
        "params": {name: sum(p.numel() for p in m.parameters()) for name, m in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder))},
        "eval": scores,
    })


if __name__ == "__main__":
    main()
