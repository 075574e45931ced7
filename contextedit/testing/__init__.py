"""Test and benchmark helpers: the tiny random models and the shapes world, re-exported.

``tiny`` (the ``tiny-random`` Stable-Diffusion builders, from :mod:`contextedit.models.tiny`),
``tiny_clip`` (tiny random CLIP and BLIP-2, from :mod:`contextedit.models.tiny_clip`), ``shapes``
and ``scenes`` (the synthetic worlds and their pixel oracles, from :mod:`contextedit.worlds`).
Production code never imports this package (``tests/test_layers.py`` checks it); it is the
tests' and benchmarks' name for those modules.
"""
