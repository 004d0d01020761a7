"""Run one study: build, initialise, probe a forward pass, tabulate, judge.

Nothing here prints or writes files: :func:`run` returns a :class:`Result` holding
DataFrames; the CLI renders it and :mod:`initlab.results` saves it.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import torch

from initlab import __version__
from initlab.config import Config
from initlab.errors import InitlabError
from initlab.model import build, draw_input, probe_targets
from initlab.probes import ForwardProbe, Record, measure, statistics_for
from initlab.regimes import Verdict, classify

#: Column order of the per-layer table: pre-activation, block output, weights.
_PREFIX = {"pre": "pre_", "post": "", "weight": "weight_"}
_ORDER = ["std", "mean", "absmax", "nonfinite", "saturated", "zero", "dead"]
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Result:
    """A finished study: its config, per-layer table, tidy records, verdict and metadata."""

    config: Config
    layers: pd.DataFrame  # one row per block, columns as in layers.csv
    records: pd.DataFrame  # tidy: layer, site, stat, value
    verdict: Verdict
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        """The verdict and its figures, as written to summary.json."""
        return {"name": self.config.name, **self.verdict.as_dict()}


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when present; a CUDA device that is absent is a clear error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InitlabError(f"device {spec!r}: CUDA is not available on this machine (use device: cpu or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InitlabError(f"device {spec!r}: only {count} CUDA device(s), ids 0..{count - 1}")
    return device


def layer_table(records: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Pivot tidy records into one row per block with prefixed columns in a fixed order."""
    wide = records.assign(column=records["site"].map(_PREFIX) + records["stat"]).pivot(
        index="layer", columns="column", values="value"
    )
    columns = [p + s for p in _PREFIX.values() for s in _ORDER if p + s in wide.columns]
    columns.remove("weight_nonfinite") if "weight_nonfinite" in columns else None
    table: pd.DataFrame = wide.reindex(index=range(depth), columns=columns).rename_axis(columns=None).reset_index()
    for name in columns:
        if name.endswith("nonfinite"):
            table[name] = table[name].astype("int64")
    return table


def run(config: Config) -> Result:
    """Run the study ``config`` describes and return its results (nothing is written)."""
    started = datetime.now(timezone.utc)
    device = resolve_device(config.device)
    dtype = _DTYPES[config.dtype]
    generator = torch.Generator().manual_seed(config.seed)
    activation = config.model.activation

    tick = time.perf_counter()
    model = build(config, generator, dtype)
    x = draw_input(config, generator, dtype)
    model, x = model.to(device), x.to(device)
    timings = {"build_s": time.perf_counter() - tick}

    sites = {site: statistics_for(site, activation) for site in ("pre", "post")}
    tick = time.perf_counter()
    with torch.no_grad(), ForwardProbe(probe_targets(model), sites) as probe:
        model(x)
        records: list[Record] = probe.records()
    timings["forward_s"] = time.perf_counter() - tick

    weights = [(i, "weight", linear.weight) for i, linear in enumerate(model.linears())]
    records += measure(weights, {"weight": statistics_for("weight", activation, ["moments"])})
    input_std = next(measure([(-1, "input", x)], {"input": [statistics_for("input", activation, ["moments"])[0]]}))
    table = layer_table(pd.DataFrame.from_records(records), config.model.depth)
    verdict = classify(table["std"].tolist(), table["nonfinite"].tolist(), config.verdict)
    meta = _meta(config, device, started, timings)
    meta["input_std"] = input_std["value"]
    return Result(config, _nulls(table), pd.DataFrame.from_records(records), verdict, meta)


def _nulls(table: pd.DataFrame) -> pd.DataFrame:
    """Undefined statistics are missing values (NaN in pandas, empty in CSV, null in JSON)."""
    out: pd.DataFrame = table.astype({c: "float64" for c in table.columns if table[c].dtype == object})
    return out


def _meta(config: Config, device: torch.device, started: datetime, timings: dict[str, float]) -> dict[str, Any]:
    return {
        "initlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "dtype": config.dtype,
        "seed": config.seed,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings": timings,
    }
