"""What one cell run of a sweep produced: its per-layer table (the exact bytes of its CSV) and
summary, or its error."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pandas as pd

from initlab.sweep.plan import CellRun


@dataclass(frozen=True)
class Outcome:
    """A cell run's per-layer table and verdict, or its error."""

    run: CellRun
    layers_csv: str | None = None  # exactly the bytes of its layers.csv
    summary: dict[str, Any] | None = None
    error: str | None = None

    def layers(self) -> pd.DataFrame:
        """The per-layer table, read back from its CSV text so memory and disk agree exactly."""
        assert self.layers_csv is not None
        return read_csv(self.layers_csv)


def read_csv(text: str) -> pd.DataFrame:
    """A CSV written by :func:`initlab.results.csv_text`, floats read back bit for bit."""
    if _PANDAS_MAJOR >= 3:  # round-trip exact by default; the option is deprecated
        return pd.read_csv(io.StringIO(text))
    return pd.read_csv(io.StringIO(text), float_precision="round_trip")


_PANDAS_MAJOR = int(pd.__version__.split(".")[0])
