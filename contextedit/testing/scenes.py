"""The scenes world under ``contextedit.testing``, where issue 28 names it; it lives in
:mod:`contextedit.worlds.scenes`."""

from ..worlds.scenes import *  # noqa: F401,F403
from ..worlds.scenes import __doc__ as _world_doc  # noqa: F401
