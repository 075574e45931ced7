"""contextedit: text-guided video editing with contextualized diffusion (ContextDiff, ICLR 2024)."""

__version__ = "0.1.0"
