"""Write an SD-1 or SDXL model's components in the original single-file layout (LDM for SD-1,
Stability's SGM for SDXL), with this project's own key mapping for the tiny configs (block counts
read from the diffusers configs): the fixture behind tests/test_model_sources.py.

SDXL differs from SD-1 in four places: its added conditioning (``add_embedding`` is SGM's
``label_emb.0``), blocks without attention (an up block's upsampler is then the second module of
its last output block, ``.1.conv``, not the third), and two text encoders — CLIP's under
``conditioner.embedders.0.transformer`` as SD-1 keeps it, and the second in OpenCLIP's own layout
under ``conditioner.embedders.1.model`` (:func:`open_clip_state_dict`)."""

from __future__ import annotations

import torch


def _resnet(prefix: str, ldm: str) -> list[tuple[str, str]]:
    names = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
             ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
    return [(f"{prefix}.{d}", f"{ldm}.{o}") for d, o in names]


def unet_map(unet) -> dict[str, str]:
    """diffusers module prefix → LDM module prefix (under ``model.diffusion_model.``)."""
    cfg = unet.config
    n, lpb = len(cfg.block_out_channels), cfg.layers_per_block
    pairs = [("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
             ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2"),
             ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2")]
    for i in range(n):
        for j in range(lpb):
            k = (lpb + 1) * i + j + 1
            pairs += _resnet(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0")
            pairs.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1"))
        if i < n - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(lpb + 1) * (i + 1)}.0.op"))
    pairs += _resnet("mid_block.resnets.0", "middle_block.0") + _resnet("mid_block.resnets.1", "middle_block.2")
    pairs.append(("mid_block.attentions.0", "middle_block.1"))
    for i in range(n):
        for j in range(lpb + 1):
            k = (lpb + 1) * i + j
            pairs += _resnet(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{k}.0")
            pairs.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{k}.1"))
        if i < n - 1:  # after the resnet and, where the block has them, the attention
            after = 2 if getattr(unet.up_blocks[i], "attentions", None) else 1
            pairs.append((f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{(lpb + 1) * i + lpb}.{after}.conv"))
    return dict(pairs)


def vae_map(vae) -> dict[str, str]:
    n, lpb = len(vae.config.block_out_channels), vae.config.layers_per_block
    pairs = []
    for side in ("encoder", "decoder"):
        pairs += [(f"{side}.conv_in", f"{side}.conv_in"), (f"{side}.conv_out", f"{side}.conv_out"),
                  (f"{side}.conv_norm_out", f"{side}.norm_out"),
                  (f"{side}.mid_block.resnets.0", f"{side}.mid.block_1"), (f"{side}.mid_block.resnets.1", f"{side}.mid.block_2")]
        for d, o in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            pairs.append((f"{side}.mid_block.attentions.0.{d}", f"{side}.mid.attn_1.{o}"))
    for i in range(n):
        for j in range(lpb):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}"))
        if i < n - 1:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv"))
        for j in range(lpb + 1):
            pairs.append((f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{n - 1 - i}.block.{j}"))
        if i < n - 1:
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{n - 1 - i}.upsample.conv"))
    pairs += [("quant_conv", "quant_conv"), ("post_quant_conv", "post_quant_conv")]
    return dict(pairs)


def _rename(state: dict, mapping: dict[str, str], prefix: str) -> dict:
    out = {}
    for key, value in state.items():
        head = max((d for d in mapping if key == d or key.startswith(d + ".")), key=len, default=None)
        assert head is not None, f"no LDM name for {key}"
        name = mapping[head] + key[len(head):]
        name = name.replace(".conv_shortcut.", ".nin_shortcut.") if "first_stage" in prefix else name
        if "mid.attn_1" in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention is 1x1 convolutions
        out[prefix + name] = value
    return out


def clip_state_dict(encoder, prefix: str) -> dict:
    """A transformers CLIP text model under ``prefix`` as LDM keeps it (``…text_model.…``;
    transformers 5 names CLIPTextModel's weights without ``text_model.``)."""
    return {prefix + ("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in encoder.state_dict().items() if k != "text_projection.weight"}


def open_clip_state_dict(encoder, prefix: str) -> dict:
    """A ``CLIPTextModelWithProjection`` in OpenCLIP's layout under ``prefix``: the query, key and
    value projections stacked into one ``in_proj`` (rows q, k, v), the MLP as ``c_fc``/``c_proj``, the
    positional embedding a bare tensor, and ``text_projection`` as OpenCLIP multiplies by it
    (``x @ P``: the transpose of the linear layer's weight)."""
    state = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
    out = {prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": state["final_layer_norm.weight"], prefix + "ln_final.bias": state["final_layer_norm.bias"],
           prefix + "text_projection": state["text_projection.weight"].T}
    for i in range(encoder.config.num_hidden_layers):
        ours, theirs = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{theirs}attn.in_proj_{kind}"] = torch.cat([state[f"{ours}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for d, o in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{theirs}{o}.{kind}"] = state[f"{ours}{d}.{kind}"]
    return out


def ldm_state_dict(comps) -> dict[str, torch.Tensor]:
    """The full single-file state dict of an SD-1 model (UNet, VAE, CLIP text model) or, when
    ``comps`` has a second text encoder, of an SDXL one (both encoders under ``conditioner``)."""
    state = _rename(comps.unet.state_dict(), unet_map(comps.unet), "model.diffusion_model.")
    vae = {k.replace(".conv_shortcut.", ".nin_shortcut."): v for k, v in comps.vae.state_dict().items()}
    vmap = {k.replace(".conv_shortcut", ".nin_shortcut"): v for k, v in vae_map(comps.vae).items()}
    state.update(_rename(vae, vmap, "first_stage_model."))
    if comps.text_encoder_2 is None:
        state.update(clip_state_dict(comps.text_encoder, "cond_stage_model.transformer."))
    else:
        state.update(clip_state_dict(comps.text_encoder, "conditioner.embedders.0.transformer."))
        state.update(open_clip_state_dict(comps.text_encoder_2, "conditioner.embedders.1.model."))
    return {k: v.detach().float().contiguous().clone() for k, v in state.items()}
