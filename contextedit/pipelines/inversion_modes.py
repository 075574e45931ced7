"""The inversion modes of an edit, as records in one registry (``edit --inversion``).

A mode says what the source pass does after plain DDIM inversion (docs/concepts/design.md §3.4,
§5.5; the steps themselves are :mod:`.inversion`'s) and what sampling takes from it. The edit
pipeline reads only these fields, never a mode's name, so a mode made of these steps is one record
and one :func:`register` line (docs: extending). No torch here: the CLI's choices come from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InversionMode:
    name: str
    help: str
    replay: bool = False           # replay the guided source branch on the inversion trajectory: the fusion store is recorded there
    null_text: bool = False        # first fit one unconditional embedding per step (Mokady et al.), cached in the run
    offsets: bool = False          # the replay's step offsets steer sampling (direct inversion, Ju et al.)
    one_pass: bool = False         # with replay: one guided pass inverts and replays (inversion.guided_inversion)
    source_negative: bool = False  # sampling's unconditional branch is the source prompt (Miyake et al.)
    region_negative: bool = True   # a background region may take the source prompt as its negative


MODES: dict[str, InversionMode] = {}


def register(mode: InversionMode) -> InversionMode:
    """Add ``mode`` (its name becomes a valid ``inversion``); returns it."""
    MODES[mode.name] = mode
    return mode


def names() -> tuple[str, ...]:
    return tuple(MODES)


def mode(name: str) -> InversionMode:
    return MODES[name]


register(InversionMode("ddim", "inversion only; the source attention recorded while inverting"))
register(InversionMode("negative-prompt", "the same inversion; sampling guides from the source prompt",
                       source_negative=True))
register(InversionMode("null-text", "per-step null-text embeddings retrace the inversion under guidance",
                       replay=True, null_text=True, region_negative=False))
register(InversionMode("direct", "the guided source branch's offsets steer sampling back onto the source",
                       replay=True, offsets=True))
# A third cheaper source pass, but its trajectory (ε of the level it leaves) keeps motion less well
# on the shapes benchmark (docs: benchmarks, "Direct inversion in one pass"): not the default.
register(InversionMode("direct-one-pass", "direct inversion whose inversion and replay are one guided pass",
                       replay=True, offsets=True, one_pass=True))
