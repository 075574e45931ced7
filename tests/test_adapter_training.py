"""Issue 16: the adapter trains in its own parameter group, models ship a base adapter that tune
starts from and generate samples with, and the embedded tiny model's training step is tune's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contextedit.errors import InputError
from contextedit.models.adapter import ContextAdapter, config_for_unet
from contextedit.pipelines.adapters import load_adapter_folder
from contextedit.models.loading import load_components, save_components
from contextedit.pipelines import training
from contextedit.commands.generate import GenerateOptions, generate
from contextedit.pipelines.training import Batch, Trainer, contextual_loss
from contextedit.commands.tune import TuneOptions, tune
from contextedit.pipelines.tuning import build_video_model
from contextedit.schedulers import ContextualDDPMScheduler

from helpers import bench_script, tiny, write_clip

PROMPT = "a red circle moving right on a black background"


def _trained_adapter(unet, seed: int = 5) -> ContextAdapter:
    torch.manual_seed(seed)
    adapter = ContextAdapter(**config_for_unet(unet))
    torch.nn.init.normal_(adapter.head.weight, std=0.05)  # a non-zero head: it really biases x_t
    return adapter.eval()


@pytest.fixture(scope="module")
def model_with_base(tmp_path_factory):
    """tiny-random saved as an ordinary model folder with a base adapter in ``adapter/``."""
    folder = tmp_path_factory.mktemp("model") / "tiny-with-adapter"
    comps = tiny()
    save_components(comps, folder)
    _trained_adapter(comps.unet).save_pretrained(folder / "adapter")
    return folder


def test_trainer_gives_the_adapter_its_own_lr_and_no_decay_on_its_head():
    unet_w = torch.nn.Parameter(torch.ones(3))
    adapter = ContextAdapter(**config_for_unet(tiny().unet))
    params = {"down.attn.to_q.weight": unet_w, **{f"adapter.{n}": p for n, p in adapter.named_parameters()}}
    groups = {g["name"]: g for g in Trainer(params, lr=1e-5, adapter_lr=3e-4).optimizer.param_groups}
    assert groups["model"]["lr"] == 1e-5 and groups["model"]["params"] == [unet_w]
    assert groups["adapter"]["lr"] == groups["adapter-head"]["lr"] == 3e-4
    assert groups["adapter-head"]["weight_decay"] == 0 and groups["adapter"]["weight_decay"] > 0
    assert {id(p) for p in groups["adapter-head"]["params"]} == {id(adapter.head.weight), id(adapter.head.bias)}
    # without adapter_lr the adapter follows lr (train-adapter's single rate)
    groups = {g["name"]: g for g in Trainer(params, lr=1e-4).optimizer.param_groups}
    assert groups["adapter"]["lr"] == 1e-4


def test_adapter_folder_round_trips(tmp_path):
    adapter = _trained_adapter(tiny().unet)
    adapter.save_pretrained(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["_class_name"] == "ContextAdapter"
    again = ContextAdapter.from_pretrained(tmp_path / "a")
    x, text = torch.randn(2, 4, 16, 16), torch.randn(1, 77, adapter.config.text_dim)
    assert torch.equal(adapter(x, text, 500, num_frames=2), again(x, text, 500, num_frames=2))
    with pytest.raises(OSError, match="config.json"):  # diffusers' own error
        ContextAdapter.from_pretrained(tmp_path)
    with pytest.raises(InputError, match="config.json"):  # ours, for an adapter named by the user
        load_adapter_folder(tmp_path)


def test_adapter_init_base_starts_from_the_shipped_adapter(model_with_base, tmp_path):
    comps = load_components(str(model_with_base))
    base = ContextAdapter.from_pretrained(model_with_base / "adapter")
    _, adapter = build_video_model(comps, True, seed=0, adapter_init="base")
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), base.state_dict().values()))
    _, fresh = build_video_model(comps, True, seed=0, adapter_init="none")
    assert not fresh.head.weight.any()
    result = tune(TuneOptions(video=str(write_clip(tmp_path / "clip.mp4", frames=8)), prompt=PROMPT, frames=4, steps=2,
                              out=str(tmp_path / "run"), model=str(model_with_base), device="cpu", checkpointing=False,
                              adapter_lr=2e-4))
    m = result.manifest
    assert m["adapter_init"] == "base" and m["adapter_lr"] == 2e-4 and m["adapter_input"] == "clean"
    assert len(m["loss_curve"]) == 2 and set(m["adapter_rel_scale"]) == {"100", "500", "900"}
    assert m["adapter_rel_scale"]["500"] > 0  # the base adapter's bias is there from the start


def test_the_shipped_tiny_model_has_a_base_adapter_that_loads():
    comps = load_components("tiny")
    folder = comps.extra.get("base_adapter")
    if folder is None:
        pytest.skip("this checkout's tiny model ships no base adapter")
    _, adapter = build_video_model(comps, True, seed=0, adapter_init="base")
    assert adapter.head.weight.abs().max() > 0
    assert torch.equal(adapter.head.weight, ContextAdapter.from_pretrained(folder).head.weight)


def test_generate_uses_the_base_adapter_unless_told_none(model_with_base, tmp_path):
    def run(name, adapter):
        result = generate(GenerateOptions(prompts=["a red circle on a black background"], steps=4, model=str(model_with_base),
                                          device="cpu", out=str(tmp_path / name), adapter=adapter))
        from PIL import Image
        return np.asarray(Image.open(result.files[0])).astype(int), result.record

    base, record = run("base", None)
    plain, plain_record = run("none", "none")
    folder, _ = run("folder", str(model_with_base / "adapter"))
    assert record["settings"]["adapter"] == "base" and plain_record["settings"]["adapter"] == "none"
    assert np.abs(base - plain).max() > 0 and np.array_equal(base, folder)


def test_an_adapter_for_another_model_is_refused(model_with_base, tmp_path):
    other = ContextAdapter(**{**config_for_unet(tiny().unet), "text_dim": 16})
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match="text width"):
        generate(GenerateOptions(prompts=["a red circle"], steps=2, model=str(model_with_base), device="cpu",
                                 out=str(tmp_path / "out"), adapter=str(tmp_path / "other")))


def test_predicted_x0_input_reads_the_models_prediction_on_odd_steps():
    comps = tiny()
    unet, adapter = build_video_model(comps, True, seed=0, adapter_init="none")
    torch.nn.init.normal_(adapter.head.weight, std=0.05)
    scheduler = ContextualDDPMScheduler.from_config(comps.scheduler_config)
    batch = Batch(x0=torch.randn(2, 4, 16, 16), text=torch.randn(1, 77, comps.unet.config.cross_attention_dim), num_frames=2)
    for seed, same in ((4, True), (5, False)):
        clean = contextual_loss(unet, adapter, scheduler, batch, seed)
        predicted = contextual_loss(unet, adapter, scheduler, batch, seed, adapter_input="predicted")
        assert torch.isfinite(predicted) and (torch.equal(clean, predicted) == same)


@pytest.mark.slow
def test_train_tiny_joint_variant_trains_with_tunes_contextual_loss(tmp_path, monkeypatch):
    calls = []

    def spy(unet, adapter, scheduler, batch, step_seed, adapter_input="clean"):
        calls.append(adapter)
        return real(unet, adapter, scheduler, batch, step_seed, adapter_input)

    real = training.contextual_loss
    monkeypatch.setattr(training, "contextual_loss", spy)
    with bench_script("train_tiny") as train_tiny:
        common = ["--vae-steps", "1", "--vae-batch", "2", "--batch", "2", "--eval-steps", "1", "--eval-seeds", "1",
                  "--threads", "1", "--results", str(tmp_path / "r.json"), "--unet-steps", "2"]
        for variant in ("joint", "none"):
            train_tiny.main(common + ["--adapter", variant, "--work", str(tmp_path / f"w-{variant}"),
                                      "--out", str(tmp_path / variant)])
    assert len(calls) == 4 and isinstance(calls[0], ContextAdapter) and calls[2] is None
    assert (tmp_path / "joint" / "adapter" / "config.json").is_file() and not (tmp_path / "none" / "adapter").exists()
    record = json.loads((tmp_path / "r.json").read_text())["variants"]
    assert set(record) == {"joint", "none"} and len(record["joint"]["denoiser"]["losses"]) == 2
    assert set(record["joint"]["eval"]) == {"with_adapter", "without_adapter"}
    assert str(tmp_path) not in json.dumps(record["joint"]["vae"])
    comps = load_components(str(tmp_path / "joint"))
    assert comps.extra["base_adapter"] is not None


def test_trainer_scales_the_loss_with_a_grad_scaler():
    """fp16 training uses a GradScaler (tune and train-adapter pick one for CUDA fp16); with a
    scaler the step is the same AdamW step (gradients unscaled before it)."""
    from contextedit.pipelines.tuning import grad_scaler_for

    assert grad_scaler_for(torch.device("cpu"), torch.float32) is None
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(8))
        trainer = Trainer({"w": w}, lr=1e-2)
        trainer.run(3, lambda seed: (w * (seed % 7 + 1)).square().mean(), seed=0, scaler=scaler)
        results.append(w.detach().clone())
    torch.testing.assert_close(results[0], results[1])
