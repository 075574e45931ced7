"""The CLI's commands as functions: options as the flags spell them, run folders, ``runs/latest``,
output files and their JSON records — a layer over :class:`contextedit.ContextEditPipeline`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class OutputResult:
    """What an output command wrote: its folder, the files, and the JSON record beside them."""

    out_dir: Path
    files: list[Path]
    record: dict = field(default_factory=dict)
