"""Built-in defaults of ``edit`` and ``generate`` (no torch import: the CLI's help reads them).

Chosen on the shapes-world benchmark (BENCHMARKS.md, "Edit settings sweep"). A model folder may
recommend its own in ``contextedit.json`` (``{"edit": {...}, "generate": {...}}``); flags win.
"""

from __future__ import annotations

import json
from pathlib import Path

EDIT_DEFAULTS = {
    "steps": 20,
    "guidance": 7.5,
    "inversion": "direct",
    "self_fusion": 0.5,
    "cross_fusion": 0.5,
    "self_half": "cond",
    "fusion_layers": "all",
    "blend": True,
    "local_blend": "auto",
    "blend_threshold": 0.5,
    "new_word_weight": 1.0,
    "offset_inside": 1.0,
    "background_guidance": None,        # None: the same as guidance
    "background_offset_inside": None,   # None: the same as offset_inside
    "region_attention": "more",   # Stable Diffusion marks what a word names with more attention
    "background_noise": 0.5,
    "background_negative": "source",
    "blend_stop": 1.0,
    "composite": "auto",
    "null_text_steps": 10,
    "context_guidance": 1.0,
    "window": 16,        # frames per window for longer clips (the run's own tune window when it has one)
    "overlap": 4,        # frames shared by neighbouring windows, blended
}
GENERATE_DEFAULTS = {"steps": 50, "guidance": 7.5, "adapter": "base"}
# The adapter's own AdamW lr in tune (the UNet's stays at --lr 1e-5): the lowest tuning loss of
# 1e-5, 1e-4, 1e-3, from a base adapter and from a fresh one (bench/adapter_lr.py).
TUNE_DEFAULTS = {"adapter_lr": 1e-3}

DEFAULTS_FILE = "contextedit.json"
TINY_DEFAULTS = Path(__file__).resolve().parent / "assets" / "tiny" / DEFAULTS_FILE


def describe(section: str, name: str) -> str:
    """``[default: X]`` for --help, with the embedded tiny model's own value where it differs."""
    value = (EDIT_DEFAULTS if section == "edit" else GENERATE_DEFAULTS)[name]
    text = f"[default: {_fmt(value)}"
    try:
        tiny = json.loads(TINY_DEFAULTS.read_text()).get(section, {})
    except (OSError, ValueError):
        tiny = {}
    if name in tiny and tiny[name] != value:
        text += f"; --model tiny: {_fmt(tiny[name])}"
    return text + "]"


def _fmt(value) -> str:
    if value is None:
        return "as for other regions"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
