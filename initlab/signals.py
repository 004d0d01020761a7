"""The two signals a study follows, and where each one's columns are: the forward signal (block
outputs' std) and the backward one (the gradients' rms), in layers.csv, traces.csv and summary.csv.

Declared once here for the tables (:mod:`initlab.sweep`, :mod:`initlab.seeds`), the figures
(:mod:`initlab.plots`) and the reports, without importing any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the quick commands' reports need no verdict logic
    from initlab.regimes import Signal


@dataclass(frozen=True)
class SignalColumns:
    """Where a signal's trace is in the per-layer table, and where its median trace goes in traces.csv."""

    signal: Signal
    value: str  # the per-layer value of the trace (layers.csv)
    nonfinite: tuple[str, ...]  # counts that make a layer's value non-finite
    fractions: tuple[str, ...]  # per-layer fractions whose median is kept (saturated, dead)
    predicted: str  # the mean-field prediction of ``value`` (layers.csv and traces.csv)
    prefix: str  # of the median trace's columns in traces.csv
    summary: str  # of the median trace's verdict's columns in summary.csv

    @property
    def median(self) -> str:
        return f"{self.prefix}median"

    @property
    def low(self) -> str:
        return f"{self.prefix}low"

    @property
    def high(self) -> str:
        return f"{self.prefix}high"


#: The forward signal: block-output std; its median trace is ``median``, ``low``, ``high``, ``seeds``.
FORWARD = SignalColumns("forward", "std", ("nonfinite", "pre_nonfinite"), ("saturated", "dead"), "theory_std", "",
                        "")
#: The backward signal: the gradient's rms; ``grad_median``, ``grad_low``, ``grad_high`` in traces.csv and
#: ``backward_*`` in summary.csv.
BACKWARD = SignalColumns("backward", "grad_rms", ("grad_nonfinite", "pre_grad_nonfinite"), (), "theory_grad_rms",
                         "grad_", "backward_")
SIGNALS = {"forward": FORWARD, "backward": BACKWARD}
