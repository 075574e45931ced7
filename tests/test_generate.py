"""generate and train-adapter on the tiny-random model."""

from __future__ import annotations

import copy
import functools
import inspect

import numpy as np
import pytest
import torch

from contextedit.errors import InputError
from contextedit import ContextAdapter
from contextedit.fileio import load_safetensors
from contextedit.commands.generate import GenerateOptions, generate
from contextedit.commands.train_adapter import TrainAdapterOptions, train_adapter

from helpers import F32_EPS, MODEL, tiny, write_images

PROMPT = "a red circle on a black background"


def _generate(tmp_path, name, **kw):
    opts = dict(prompts=[PROMPT], steps=5, out=str(tmp_path / name), model=MODEL, device="cpu", seed=3)
    opts.update(kw)
    result = generate(GenerateOptions(**opts))
    from PIL import Image
    return [np.asarray(Image.open(p)) for p in result.files if p.name != "grid.png"], result


def test_no_adapter_equals_stable_diffusion_pipeline(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    comps = tiny()
    pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
                                   scheduler=DDIMScheduler.from_config(comps.scheduler_config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    ref = pipe(PROMPT, num_inference_steps=5, guidance_scale=7.5, height=64, width=64,
               generator=torch.Generator("cpu").manual_seed(3), output_type="np").images[0]
    images, _ = _generate(tmp_path, "ours")
    ref_u8 = (ref * 255).round().astype(np.uint8)
    assert np.abs(images[0].astype(int) - ref_u8.astype(int)).max() <= 1


def test_same_seed_same_image_and_n_seeds(tmp_path):
    a, result = _generate(tmp_path, "a", n=2, grid=True)
    b, _ = _generate(tmp_path, "b", n=2)
    assert len(a) == 2 and all((x == y).all() for x, y in zip(a, b))
    first, _ = _generate(tmp_path, "c", n=1, seed=3)  # image k of n is seed + k's image, made on its own
    alone, _ = _generate(tmp_path, "d", n=1, seed=4)
    assert (a[0] == first[0]).all() and (a[1] == alone[0]).all()
    assert not (a[0] == a[1]).all()  # the test can tell: the two seeds give two images
    assert [e["seed"] for e in result.record["images"]] == [3, 4]
    assert (result.out_dir / "grid.png").exists() and (result.out_dir / "generate.json").exists()


def _reference(sampler: str, adapter_dir=None) -> np.ndarray:
    """The image generate should make, from diffusers' StableDiffusionPipeline (its text encoding,
    x_T, guidance and decoding) with our contextual scheduler, whose ``step`` is handed the
    adapter's context r_φ(x̂0, c, t) here, and the adapter folder's tuned queries loaded by hand."""
    from diffusers import StableDiffusionPipeline

    from contextedit.schedulers import ContextualDDIMScheduler, ContextualDDPMScheduler

    comps = tiny()
    unet = copy.deepcopy(comps.unet)
    scheduler = {"ddim": ContextualDDIMScheduler, "ddpm": ContextualDDPMScheduler}[sampler].from_config(comps.scheduler_config)
    pipe = StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if adapter_dir is not None:
        unet.load_state_dict(load_safetensors(adapter_dir / "unet.safetensors"), strict=False)
        adapter = ContextAdapter.from_pretrained(adapter_dir).eval()
        with torch.no_grad():
            text = pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]

        def context(x0_hat, t):
            return adapter(x0_hat, text, torch.tensor([t]), num_frames=1)

        scheduler.step = functools.partial(scheduler.step, context=context)  # keeps eta/generator in its signature
    image = pipe(PROMPT, num_inference_steps=5, guidance_scale=7.5, height=64, width=64,
                 generator=torch.Generator("cpu").manual_seed(3), output_type="np").images[0]
    return (image * 255).round().astype(np.uint8)


def _levels_apart(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_train_adapter_then_generate_ddim_and_ddpm(tmp_path):
    data = write_images(tmp_path / "data", n=4)
    out = train_adapter(TrainAdapterOptions(data=str(data), out=str(tmp_path / "ad"), steps=2, batch=2,
                                            lr=1e-2, model=MODEL, device="cpu", tune_unet="attn"))  # ~10 levels of effect
    assert {p.name for p in out.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors", "unet.safetensors",
                                               "training.json"}
    assert ContextAdapter.from_pretrained(out).config.text_dim == 32  # an ordinary diffusers model folder
    assert not list(tmp_path.glob("ad.checkpoint*"))
    plain, _ = _generate(tmp_path, "plain")
    for sampler in ("ddim", "ddpm"):
        images, _ = _generate(tmp_path, f"adapted-{sampler}", adapter=str(out), sampler=sampler)
        # The two compute the same float32 image in other orders: rounding, far below one level
        # (1/255), can only tip a pixel's rounding to uint8, by one level.
        assert _levels_apart(images[0], _reference(sampler, adapter_dir=out)) <= 1, sampler
        assert _levels_apart(images[0], _reference(sampler)) > 1, sampler  # the test can tell: the adapter's effect is more
    # A zero head (and untuned queries) gives exactly the no-adapter image.
    adapter = ContextAdapter.from_pretrained(out)
    torch.nn.init.zeros_(adapter.head.weight)
    torch.nn.init.zeros_(adapter.head.bias)
    adapter.save_pretrained(tmp_path / "zero")
    zero, _ = _generate(tmp_path, "zero", adapter=str(tmp_path / "zero"))
    assert (zero[0] == plain[0]).all()


def test_train_adapter_refuses_missing_captions_or_images(tmp_path):
    uncaptioned = write_images(tmp_path / "nocap", n=2, captions=False)
    with pytest.raises(InputError, match="no caption"):
        train_adapter(TrainAdapterOptions(data=str(uncaptioned), out=str(tmp_path / "x"), steps=1, model=MODEL, device="cpu"))
    captions_only = tmp_path / "caponly"
    captions_only.mkdir()
    (captions_only / "a.txt").write_text("a red circle")
    with pytest.raises(InputError, match="no images"):
        train_adapter(TrainAdapterOptions(data=str(captions_only), out=str(tmp_path / "y"), steps=1, model=MODEL, device="cpu"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_train_adapter_initialises_from_its_seed(tmp_path):
    """A fresh adapter's weights follow --seed (on the trained ``tiny``, which leaves the RNG alone)."""
    data = write_images(tmp_path / "data", n=2)

    def trained(name, seed, caller_seed):
        torch.manual_seed(caller_seed)  # the caller's RNG must not matter
        out = train_adapter(TrainAdapterOptions(data=str(data), out=str(tmp_path / name), steps=1,
                                                batch=1, lr=1e-3, model="tiny", device="cpu", seed=seed))
        return load_safetensors(out / "diffusion_pytorch_model.safetensors")

    a, b, c = trained("a", 0, caller_seed=1), trained("b", 0, caller_seed=2), trained("c", 1, caller_seed=1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    from contextedit.models.adapter import config_for_unet
    from contextedit.models.loading import load_components
    from contextedit.pipelines.training import Trainer

    config = config_for_unet(load_components("tiny", "cpu", torch.float32).unet)

    def fresh(seed):  # a new adapter built right after seeding the CPU RNG
        torch.manual_seed(seed)
        return ContextAdapter(**config).state_dict()

    decay = inspect.signature(Trainer).parameters["weight_decay"].default

    def one_step_from(weights, start) -> bool:
        """Each weight within one AdamW step of its start: decay lr·wd·|p0| plus |m̂/(√v̂ + ε)|·lr ≤ lr
        (m̂ = g, v̂ = g² after one step), each of the ~8 float32 operations rounding by eps/2."""
        lr = 1e-3
        return start.keys() == weights.keys() and all(
            ((weights[k] - p0).abs() <= lr * (1 + decay * p0.abs()) + 8 * F32_EPS * (p0.abs() + lr)).all()
            for k, p0 in start.items())

    assert one_step_from(a, fresh(0)) and one_step_from(c, fresh(1))
    assert not one_step_from(a, fresh(1))  # the test can tell the two seeds' adapters apart
