"""The metrics ``contextedit eval`` knows: one :class:`~.metric.Metric` record per name, in the
order their keys appear in each result row, the table and the report.

A new metric is a module that defines its record and one line here (or one :func:`register` call
in your own code); docs: extending.
"""

from __future__ import annotations

from .clip import CLIP
from .dino import DINO
from .flow import FLOW, WARP
from .metric import Metric
from .oracle import ORACLE
from .pickscore import PICKSCORE
from .psnr import PSNR

METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric``: its name becomes a valid ``--metrics`` name at once. Returns it.

    A name or a key another metric already has is a ValueError (result rows are flat)."""
    if metric.name in METRICS:
        raise ValueError(f"a metric named {metric.name!r} is registered already")
    owners = {key: other.name for other in METRICS.values() for key in other.keys}
    taken = [f"{key} ({owners[key]})" for key in metric.keys if key in owners]
    if taken:
        raise ValueError(f"metric {metric.name}: keys {', '.join(taken)} belong to other metrics")
    METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> Metric:
    """Remove the metric ``name`` (a test's toy metric, say); returns its record."""
    return METRICS.pop(name)


def names() -> tuple[str, ...]:
    return tuple(METRICS)


for _metric in (
    CLIP,
    PICKSCORE,
    DINO,
    FLOW,
    WARP,
    PSNR,
    ORACLE,
):
    register(_metric)
