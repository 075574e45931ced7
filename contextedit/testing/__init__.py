"""Test and benchmark helpers: the tiny random models and the shapes world.

``tiny`` (the ``tiny-random`` Stable-Diffusion builders), ``tiny_clip`` (tiny random CLIP and
BLIP-2) and ``shapes`` (the synthetic shapes world and its pixel oracle). Nothing on the normal
CLI path imports this package: ``--model tiny`` loads ``contextedit/assets/tiny`` as an ordinary
diffusers folder; only ``tiny-random``, ``--clip-model tiny`` and ``--caption-model tiny`` import it,
lazily.
"""
