"""contextedit: text-guided video editing with contextualized diffusion (ContextDiff, ICLR 2024).

    from contextedit import ContextEditPipeline, TunedClip, ContextAdapter

The names load on first use, so ``import contextedit`` (and the CLI's ``--help``) stays light.
"""

__version__ = "0.1.0"
__all__ = ["ContextAdapter", "ContextEditPipeline", "TunedClip", "__version__"]

_LAZY = {"ContextEditPipeline": "contextedit.pipeline", "TunedClip": "contextedit.pipelines.tuned",
         "ContextAdapter": "contextedit.models.adapter"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'contextedit' has no attribute {name!r}")
