"""The shapes world under ``contextedit.testing``, where the tests and benchmarks import it; it
lives in :mod:`contextedit.worlds.shapes` (the oracle metric uses it)."""

from ..worlds.shapes import *  # noqa: F401,F403
from ..worlds.shapes import __doc__ as _world_doc  # noqa: F401
