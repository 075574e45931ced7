"""The tiny random Stable-Diffusion builders under ``contextedit.testing``, where the tests and
benchmarks import them; they live in :mod:`contextedit.models.tiny` (the loader builds
``tiny-random`` with them)."""

from ..models.tiny import *  # noqa: F401,F403
