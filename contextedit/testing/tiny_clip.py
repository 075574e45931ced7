"""The tiny random CLIP, DINOv2 and BLIP-2 builders under ``contextedit.testing``, where the tests
import them; they live in :mod:`contextedit.models.tiny_clip` (``--clip-model tiny`` and the like)."""

from ..models.tiny_clip import *  # noqa: F401,F403
