"""The regime verdict: does the signal explode, vanish or stay stable through the depth?

Decided from the per-layer std trace ``s_0 .. s_{L-1}`` (block outputs):

1. Any block with non-finite outputs: **explosion** (marked ``nonfinite``).
2. Any block whose std is exactly 0 (underflow, or all units dead): **vanishing**.
3. Otherwise, with ``ratio = s_{L-1}/s_0`` and the trend statistic
   ``t = mean(d) / (sd(d)/sqrt(len(d)))`` of the steps ``d_l = log s_{l+1} - log s_l``:
   **explosion** if ``ratio >= explode_ratio`` and ``t >= trend_t``; **vanishing** if
   ``ratio <= vanish_ratio`` and ``t <= -trend_t``; otherwise **stable**.

The trend test separates a steady drift (tanh with N(0, 1/n) weights shrinks a little
at every layer) from the random walk that finite width imposes on a critical network
(ReLU with Kaiming weights can end far from where it started with no drift at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any, Literal

from initlab.config import VerdictConfig

Regime = Literal["explosion", "vanishing", "stable"]
REGIMES: tuple[Regime, ...] = ("explosion", "vanishing", "stable")


@dataclass(frozen=True)
class Verdict:
    """The regime and the figures that justify it (None where a figure is undefined)."""

    regime: Regime
    nonfinite: bool
    first_nonfinite_layer: int | None
    first_zero_layer: int | None
    first_std: float | None
    last_std: float | None
    ratio: float | None  # last finite std / first std
    growth_per_layer: float | None  # geometric mean of s_{l+1}/s_l over the finite prefix
    trend_t: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trend_t(steps: Sequence[float]) -> float:
    mean = sum(steps) / len(steps)
    if len(steps) < 2:
        return math.copysign(math.inf, mean) if mean else 0.0
    var = sum((d - mean) ** 2 for d in steps) / (len(steps) - 1)
    if var == 0:
        return math.copysign(math.inf, mean) if mean else 0.0
    return mean / math.sqrt(var / len(steps))


def classify(std: Sequence[float | None], nonfinite: Sequence[float], thresholds: VerdictConfig) -> Verdict:
    """The verdict for a trace of block-output stds and non-finite counts, layer by layer."""
    bad = next((i for i, n in enumerate(nonfinite) if n > 0 or std[i] is None), None)
    finite = [s for s in std[:bad] if s is not None]
    zero = next((i for i, s in enumerate(finite) if s == 0), None)
    first = finite[0] if finite else None
    last = finite[-1] if finite else None
    ratio = last / first if first and last is not None else None
    growth = ratio ** (1 / (len(finite) - 1)) if ratio is not None and len(finite) > 1 else None
    figures: dict[str, Any] = {
        "nonfinite": bad is not None, "first_nonfinite_layer": bad, "first_zero_layer": zero,
        "first_std": first, "last_std": last, "ratio": ratio, "growth_per_layer": growth,
    }
    if bad is not None:
        return Verdict("explosion", trend_t=None, reason=f"outputs went non-finite at layer {bad}", **figures)
    if zero is not None:
        return Verdict("vanishing", trend_t=None, reason=f"std reached 0 at layer {zero}", **figures)
    if first is None or len(finite) < 2:
        return Verdict("stable", trend_t=None, reason="a single layer has no trend", **figures)
    t = _trend_t([math.log(b / a) for a, b in pairwise(finite)])
    assert ratio is not None
    figures["trend_t"] = t if math.isfinite(t) else None
    if ratio >= thresholds.explode_ratio and t >= thresholds.trend_t:
        return Verdict("explosion", reason=f"std grew x{ratio:.3g} with a steady trend (t={t:.3g})", **figures)
    if ratio <= thresholds.vanish_ratio and t <= -thresholds.trend_t:
        return Verdict("vanishing", reason=f"std shrank x{ratio:.3g} with a steady trend (t={t:.3g})", **figures)
    return Verdict("stable", reason=f"std changed x{ratio:.3g} (trend t={t:.3g})", **figures)
