"""What a metric of ``contextedit eval`` is: one :class:`Metric` record, defined in the module that
computes it and registered in :mod:`.registry`; :mod:`.evaluate` reads only these fields.

A record names the keys it adds to each result row, the scale of each (written into the JSON), what
it needs (a prompt, a source clip), how its backbone loads (once, for all clips) and how it scores
one clip. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .collect import EvalItem

# Row fields that are not metrics (the table, the means and the report leave them out).
ROW_INFO = ("path", "prompt", "frames", "source_frames", "compared_frames", "cropped", "notes", "per_frame")


@dataclass(frozen=True)
class Context:
    """What a metric's ``load`` and ``score`` are given besides the clip.

    ``source``: the source clip's frames (uint8 ``(F, H, W, 3)``) when one was given; ``mask``: the
    edited region of the source, bool ``(F or 1, H, W)``, when one was given; ``temporal``: which
    frame pairs a temporal score averages (``consecutive`` | ``all``); ``options``: eval's model and
    flow options by name (``clip_model``, ``pickscore_model``, ``dino_model``, ``flow``,
    ``flow_model``) and any ``options`` passed to :func:`~.evaluate.evaluate`.
    """

    device: Any = "cpu"
    temporal: str = "consecutive"
    source: Any = None
    mask: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """One metric of ``eval``: ``--metrics NAME`` adds ``keys`` to every result row.

    ``score(item, backbone, ctx)`` returns the clip's value of each key (None where it has none), in
    ``keys``' order, and may add ``"per_frame": {key: [values]}`` for the keys in ``per_frame``.
    ``load(ctx)`` loads the backbone once for all clips (None: the metric needs none; ``score`` then
    gets None); metrics that name the same ``backbone`` share one load, and the JSON's ``models``
    records it by that name (its ``model_id``, or its ``name``).

    ``scales``: each key's scale, written into the JSON (``{temporal}`` is replaced by the frame
    pairs). ``needs_prompt`` / ``needs_source``: refused without one; ``uses_source``: compares with
    the source when one is given (counted in ``compared_frames``; implied by ``needs_source``).
    ``mask_keys``: the keys scored only with ``mask`` (a mask with no such metric chosen is refused).
    ``columns``: the table's title of each key (default: the key). ``check_items(items)``: refuse
    the clips before any backbone loads. ``check_options(options)``: refuse bad options; run for
    every registered metric, chosen or not, before any backbone loads.
    """

    name: str
    keys: tuple[str, ...]
    scales: Mapping[str, str]
    score: Callable[[EvalItem, Any, Context], dict]
    load: Callable[[Context], Any] | None = None
    backbone: str | None = None
    needs_prompt: bool = False
    needs_source: bool = False
    uses_source: bool = False
    mask_keys: tuple[str, ...] = ()
    per_frame: tuple[str, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)
    check_items: Callable[[list[EvalItem]], None] | None = None
    check_options: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self):
        if not self.name or self.name != self.name.strip().lower() or "," in self.name:
            raise ValueError(f"metric name {self.name!r}: lower case, no comma or spaces around it")
        if not self.keys or len(set(self.keys)) != len(self.keys):
            raise ValueError(f"metric {self.name}: `keys` must be one or more distinct names, got {self.keys!r}")
        for what, names in (("scales", self.scales), ("per_frame", self.per_frame), ("mask_keys", self.mask_keys),
                            ("columns", self.columns)):
            stray = [k for k in names if k not in self.keys]
            if stray:
                raise ValueError(f"metric {self.name}: `{what}` names {', '.join(stray)}, not among its keys")
        missing = [k for k in self.keys if k not in self.scales]
        if missing:
            raise ValueError(f"metric {self.name}: no scale for {', '.join(missing)} (the JSON says what each figure is)")
        reserved = [k for k in self.keys if k in ROW_INFO]
        if reserved:
            raise ValueError(f"metric {self.name}: {', '.join(reserved)} is a row field, not a metric key")
        if self.backbone is not None and self.load is None:
            raise ValueError(f"metric {self.name}: `backbone` names what `load` loads; give `load` too")
        if self.needs_source and not self.uses_source:
            object.__setattr__(self, "uses_source", True)

    @property
    def backbone_name(self) -> str | None:
        """The name of the backbone in the JSON's ``models`` (None when it loads none)."""
        return None if self.load is None else self.backbone or self.name


def model_id(backbone) -> str | None:
    """How a backbone names itself in the JSON's ``models``: its ``model_id``, else its ``name``."""
    if backbone is None:
        return None
    return getattr(backbone, "model_id", None) or getattr(backbone, "name", None)
