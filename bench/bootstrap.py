"""Bootstrap intervals for the benchmark figures (percentile method, resampling whole units).

The unit is what is independent: a clip (its three edits and its tune share the clip), an image
(prompt × seed). Paired comparisons resample units and take the difference within each, so the
arms' shared difficulty cancels.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 4000


def interval(values, level: float = 0.95, seed: int = 0) -> dict | None:
    """Mean of ``values`` and its bootstrap interval, as {"mean", "low", "high", "n"}."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(values):
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high), "n": int(len(values))}


def paired(a, b, level: float = 0.95, seed: int = 0) -> dict | None:
    """a − b per unit (pairs with a None dropped), with its interval; ``excludes_0`` says
    whether the interval lies wholly on one side of 0."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    out = interval([x - y for x, y in pairs], level, seed)
    if out is not None:
        out["excludes_0"] = bool(out["low"] > 0 or out["high"] < 0)
    return out


def fmt(stat: dict | None, digits: int = 3) -> str:
    """'0.912 [0.871, 0.950]'."""
    if stat is None:
        return "–"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def per_edit(rows: list[dict]) -> list[dict]:
    """bench/quality.py's rows with one edit made at several background seeds (``background_seed``)
    joined into one row per clip, arm and kind: each measure the mean over the draws (success: the
    share of draws that succeeded), so that a redrawn edit counts once, as every other edit does."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["clip"], r["variant"], r["kind"]), []).append(r)
    out = []
    for same in groups.values():
        if len(same) == 1:
            out.append(same[0])
            continue
        joined = {k: v for r in same for k, v in r.items() if k != "background_seed"}
        for key in joined:
            values = [r.get(key) for r in same]
            if all(isinstance(v, (bool, int, float)) or v is None for v in values):
                values = [float(v) for v in values if v is not None]
                joined[key] = float(np.mean(values)) if values else None
        out.append({**joined, "draws": len(same)})
    return out


def per_clip(rows: list[dict], clips: list[str], variant: str, measure: str, kinds: tuple[str, ...]) -> list:
    """One arm's ``measure`` per clip (None where it has none): ``success_<kind>`` (``success_mean``:
    over every kind) or a measure's mean over the clip's edits of ``kinds`` (an edit made at several
    background seeds counts once: :func:`per_edit`)."""
    rows = per_edit(rows)
    out = []
    for clip in clips:
        mine = [r for r in rows if r["clip"] == clip and r["variant"] == variant and r["kind"] in kinds]
        if measure.startswith("success_"):
            kind = measure[len("success_"):]
            values = [r["success"] for r in mine if kind == "mean" or r["kind"] == kind]
        else:
            values = [r.get(measure) for r in mine]
        values = [float(v) for v in values if v is not None]
        out.append(float(np.mean(values)) if values else None)
    return out


def arm_intervals(rows: list[dict], kinds: tuple[str, ...]) -> dict:
    """bench/quality.py's rows → per arm, each measure's mean over clips with its interval, and
    the adapter's paired lead on each (adapter − no adapter, clips resampled)."""
    clips = sorted({r["clip"] for r in rows})
    measures = [f"success_{kind}" for kind in kinds] + ["success_mean", "background_kept", "object_kept", "motion_error_px", "temporal_iou"]
    variants = sorted({r["variant"] for r in rows})
    result = {v: {m: interval(per_clip(rows, clips, v, m, kinds)) for m in measures} for v in variants}
    if {"adapter", "no-adapter"} <= set(variants):
        result["adapter_minus_no_adapter"] = {m: paired(per_clip(rows, clips, "adapter", m, kinds),
                                                        per_clip(rows, clips, "no-adapter", m, kinds)) for m in measures}
    return result
