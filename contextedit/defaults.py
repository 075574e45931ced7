"""Where defaults live: each setting declares its built-in default in its field
(:mod:`contextedit.settings`); a model folder may recommend its own in ``contextedit.json``
(``{"edit": {...}, "generate": {...}}``); flags win. A script reads the built-ins with
``contextedit.settings.builtin_defaults(EditSettings)``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULTS_FILE = "contextedit.json"
DEFAULT_CAPTION_MODEL = "Salesforce/blip2-opt-2.7b"  # tune's and caption's BLIP-2
DEFAULT_DEPTH_MODEL = "Intel/dpt-hybrid-midas"       # tune's and edit's --control depth
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # eval's clip (the paper's CLIP score)
DEFAULT_PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_DINO_MODEL = "facebook/dinov2-base"
TEMPORAL_MODES = ("consecutive", "all")  # eval's --temporal
# tune's --temporal-layers: a temporal layer on every transformer block's attn1, or one per
# Transformer2DModel (on its first block); the same set where every transformer has depth 1 (SD-1/2)
TEMPORAL_LAYERS = ("every-block", "per-transformer")
EVERY_BLOCK = TEMPORAL_LAYERS[0]  # what a run whose manifest does not say was tuned with
FLOW_METHODS = ("farneback", "raft")  # eval's --flow: declared here, below both the setting and metrics/flow.py
TINY_DEFAULTS = Path(__file__).resolve().parent / "assets" / "tiny" / DEFAULTS_FILE

