"""The embedded ``tiny-random`` model: Stable-Diffusion-shaped, built in code from a fixed seed.

Same classes as a real SD folder (AutoencoderKL, UNet2DConditionModel, CLIPTextModel,
CLIPTokenizer), so every loading and pipeline path runs unchanged on it. The tokenizer is the
one that ships with ``tiny`` (``contextedit/assets/tiny/tokenizer/tokenizer.json``): CLIP's
byte-level BPE with whole-word merges for :data:`WORDS`.

The loader builds ``tiny-random``, ``tiny-v-random`` and ``tiny-xl-random`` (:data:`BUILDERS`) and
``--controlnet tiny-random`` from here; tests and benchmarks import it as ``contextedit.testing.tiny``.
"""

from __future__ import annotations

from pathlib import Path

import torch

# The trained shapes-world model (``--model tiny``), an ordinary diffusers folder; its tokenizer is
# also the tokenizer of the random models built here.
TRAINED_TINY = Path(__file__).resolve().parent.parent / "assets" / "tiny"
# The trained embedded models, each an ordinary diffusers folder: tiny (the shapes world) and
# tiny-scenes (the scenes world: two objects, textures, a panning camera), when it ships.
TRAINED = {"tiny": TRAINED_TINY, "tiny-scenes": TRAINED_TINY.parent / "tiny-scenes"}
TINY_TOKENIZER = TRAINED_TINY / "tokenizer"

# Words that are a single token of the tiny tokenizer; anything else still tokenises, character by character.
WORDS = """
a an the of on in with and is are at to by from moving left right up down background
black white gray grey red green blue yellow circle square triangle shape object
man woman person dog cat tiger lion car jeep porsche robot surfing surf wave waves beach road
street snow sea sky water city forest desert night day sunset painting style watercolor
cartoon anime photo video clip frame rabbit bird horse boat bike running walking jumping
""".split()

TINY_SAMPLE_SIZE = 64  # native pixel size: 64x64 frames, 16x16 latents (VAE factor 4)


def tiny_tokenizer():
    """The tiny CLIP tokenizer, read from the ``tokenizer.json`` that ships with ``tiny``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TINY_TOKENIZER), local_files_only=True)


def tiny_text_encoder(tokenizer, hidden_size: int = 32, seed: int = 0, **extra):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**extra,
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=hidden_size,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def tiny_unet(cross_attention_dim: int = 32, seed: int = 0, **extra):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**{
        "sample_size": TINY_SAMPLE_SIZE // 4, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": (32, 64), "norm_num_groups": 8, "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": cross_attention_dim, **extra,
    }).eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 32), sample_size=TINY_SAMPLE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    ).eval()


def tiny_scheduler_config() -> dict:
    """SD-1.5's scheduler config (PNDM's, as SD folders ship it)."""
    return {
        "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
        "prediction_type": "epsilon", "timestep_spacing": "leading",
    }


def sd2_scheduler_config() -> dict:
    """SD-2.1's (768², v-prediction) scheduler config, as its folder ships it."""
    return {
        "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "timestep_spacing": "leading",
    }


def build_tiny_random(seed: int = 0) -> dict:
    """The components of ``tiny-random`` as a dict keyed like a diffusers SD folder."""
    tokenizer = tiny_tokenizer()
    return {
        "vae": tiny_vae(seed),
        "unet": tiny_unet(seed=seed),
        "text_encoder": tiny_text_encoder(tokenizer, seed=seed),
        "tokenizer": tokenizer,
        "scheduler_config": tiny_scheduler_config(),
    }


def build_tiny_v_random(seed: int = 0) -> dict:
    """``tiny-v-random``: SD-2.x's classes and layout at tiny size. v-prediction; the transformers
    project with linear layers (``use_linear_projection``); heads per block as SD-2 sets them
    (``attention_head_dim`` a tuple: its legacy name for the head count), attention upcast to
    float32 as SD-2.1 asks; a GELU text encoder as OpenCLIP-H's."""
    tokenizer = tiny_tokenizer()
    return {
        "vae": tiny_vae(seed),
        "unet": tiny_unet(seed=seed, use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True),
        "text_encoder": tiny_text_encoder(tokenizer, seed=seed, hidden_act="gelu"),
        "tokenizer": tokenizer,
        "scheduler_config": sd2_scheduler_config(),
    }


def tiny_controlnet(unet, vae_scale_factor: int = 4, seed: int = 0):
    """A ControlNet in ``unet``'s shape with random weights everywhere. ``from_unet`` zero-initialises
    the output convolutions (as training starts), which would make its effect invisible in a test;
    here they get their layer's default random init. The condition encoder reduces frames by the
    VAE's factor (two stride-2 convolutions for tiny's 4)."""
    import math

    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    steps = int(math.log2(vae_scale_factor))
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(8 * 2**i for i in range(steps + 1)))
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]:
        conv.reset_parameters()
    return controlnet.eval()


def sdxl_scheduler_config() -> dict:
    """SDXL-base-1.0's scheduler config (Euler, as its folder ships it; contextedit samples with DDIM/DDPM)."""
    return {
        "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
        "trained_betas": None, "use_karras_sigmas": False,
    }


def build_tiny_xl_random(seed: int = 0) -> dict:
    """``tiny-xl-random``: SDXL's classes and layout at tiny size. Two text encoders (the second
    with a projection: its pooled embedding), ``text_time`` added conditioning (pooled embedding
    + six time ids), a first block without attention, transformer depth 2 in the last, linear
    projections, and SDXL's VAE settings (scaling factor 0.13025, fp32 upcast).

    The second encoder is wider than the first (48 and 32, as SDXL's OpenCLIP-bigG 1280 and CLIP-L
    768), with a narrower projection: diffusers' ``from_single_file`` tells an SDXL file's two
    encoders apart by their widths, and gives both the first's weights when they are equal."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer()
    encoder = tiny_text_encoder(tokenizer, seed=seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=32, hidden_act="gelu",
    )
    torch.manual_seed(seed + 1)
    encoder_2 = CLIPTextModelWithProjection(config).eval()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SAMPLE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4),
        use_linear_projection=True, cross_attention_dim=32 + 48, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 32), sample_size=TINY_SAMPLE_SIZE, scaling_factor=0.13025, force_upcast=True,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    ).eval()
    return {"vae": vae, "unet": unet, "text_encoder": encoder, "tokenizer": tokenizer, "text_encoder_2": encoder_2,
            "tokenizer_2": tokenizer, "scheduler_config": sdxl_scheduler_config()}


BUILDERS = {"tiny-random": build_tiny_random, "tiny-v-random": build_tiny_v_random, "tiny-xl-random": build_tiny_xl_random}
