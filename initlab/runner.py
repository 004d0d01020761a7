"""Run one study: build, initialise, probe a forward pass, tabulate, judge.

Nothing here prints or writes files: :func:`run` returns a :class:`Result` holding
DataFrames; the CLI renders it and :mod:`initlab.results` saves it.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from initlab import __version__, devices
from initlab.config import Config
from initlab.model import ConstructionDraws, build, draw_input, probe_targets
from initlab.probes import ForwardProbe, Record, statistics_for
from initlab.regimes import Trace, Verdict, judge
from initlab.theory import Prediction, input_second_moment, predict

#: Column order of the per-layer table: pre-activation, block output, weights.
_PREFIX = {"pre": "pre_", "post": "", "weight": "weight_"}
_ORDER = ["std", "mean", "absmax", "nonfinite", "saturated", "zero", "dead"]


@dataclass(frozen=True)
class Result:
    """A finished study: its config, per-layer table, tidy records, verdict and metadata."""

    config: Config
    layers: pd.DataFrame  # one row per block, columns as in layers.csv
    records: pd.DataFrame  # tidy: layer, site, stat, value
    verdict: Verdict
    meta: dict[str, Any] = field(default_factory=dict)
    theory: Prediction | None = None  # the mean-field prediction (initlab.theory)

    @property
    def summary(self) -> dict[str, Any]:
        """The verdict and its figures, as written to summary.json; the prediction under ``theory``."""
        theory = self.theory.summary() if self.theory is not None else None
        return {"name": self.config.name, **self.verdict.as_dict(), "theory": theory}


def layer_table(records: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Pivot tidy records into one row per block with prefixed columns in a fixed order."""
    wide = records.assign(column=records["site"].map(_PREFIX) + records["stat"]).pivot(
        index="layer", columns="column", values="value"
    )
    # Weights' non-finite count is not a column: init schemes only draw finite values.
    columns = [p + s for p in _PREFIX.values() for s in _ORDER if p + s in wide.columns and p + s != "weight_nonfinite"]
    table: pd.DataFrame = wide.reindex(index=range(depth), columns=columns).rename_axis(columns=None).reset_index()
    for name in columns:
        if name.endswith("nonfinite"):
            table[name] = table[name].astype("int64")
    return table


def run(config: Config, draws: ConstructionDraws | None = None) -> Result:
    """Run the study ``config`` describes and return its results (nothing is written).

    ``draws`` may be shared by runs of a sweep to draw what they share once (the numbers
    are the same with or without it).
    """
    started = datetime.now(timezone.utc)
    placement = devices.usable(config)
    devices.check_memory(config, placement)
    with devices.matmul_precision(config.precision):
        records, timings = _forward(config, placement, draws)
    input_std = next(r["value"] for r in records if r["site"] == "input" and r["stat"] == "std")
    table = layer_table(pd.DataFrame.from_records([r for r in records if r["site"] != "input"]), config.model.depth)
    prediction = predict(config, input_second_moment(config.data))
    largest = torch.finfo(devices.DTYPES[config.dtype]).max
    verdict = judge(trace_of(table, input_std, config.model.width), config.verdict, prediction, largest)
    meta = {**_meta(config, started, timings), **devices.describe(placement, config.precision), "input_std": input_std}
    table = with_theory(table, prediction)
    return Result(config, _nulls(table), pd.DataFrame.from_records(records), verdict, meta, prediction)


def trace_of(table: pd.DataFrame, input_std: float | None, width: int | None) -> Trace:
    """What the verdict reads from a per-layer table (layers.csv's columns)."""

    def column(name: str) -> list[float | None]:
        values = table[name].tolist() if name in table.columns else []
        return [None if v is None or math.isnan(v) else float(v) for v in values]  # undefined, not a number

    return Trace(
        std=column("std"), nonfinite=table["nonfinite"].tolist(), input_std=input_std,
        pre_nonfinite=table["pre_nonfinite"].tolist() if "pre_nonfinite" in table.columns else [],
        saturated=column("saturated"), dead=column("dead"), width=width,
    )


def with_theory(table: pd.DataFrame, prediction: Prediction) -> pd.DataFrame:
    """``table`` plus the predicted ``theory_pre_std`` (√q_l) and ``theory_std`` (std φ at q_l) columns,
    missing where the theory does not apply or the prediction leaves float range."""
    out: pd.DataFrame = table.copy()
    for name, values in {"theory_pre_std": prediction.pre_std, "theory_std": prediction.post_std}.items():
        predicted = np.asarray(values if values else [math.nan] * len(table), dtype=np.float64)
        out[name] = np.where(np.isfinite(predicted), predicted, np.nan)
    return out


def _forward(
    config: Config, placement: devices.Placement, draws: ConstructionDraws | None
) -> tuple[list[Record], dict[str, float]]:
    """Build, move, run one probed forward pass; every statistic comes back in one transfer."""
    dtype = devices.DTYPES[config.dtype]
    # Half types are drawn in float32 and rounded, so they start from the float32 run's weights.
    draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    source = placement.device if config.rng == "device" else torch.device("cpu")
    generator = torch.Generator(device=source).manual_seed(config.seed)

    tick = time.perf_counter()
    model = build(config, generator, draw_dtype, draws)
    x = draw_input(config, generator, draw_dtype)
    if (placement.device, dtype) != (generator.device, draw_dtype):  # Module.to walks every module
        model, x = model.to(placement.device, dtype), x.to(placement.device, dtype)
    timings = {"build_s": time.perf_counter() - tick}

    activation = config.model.activation
    sites = {site: statistics_for(site, activation) for site in ("pre", "post")}
    sites |= {"weight": statistics_for("weight", activation, ["weight_moments"])}
    sites |= {"input": statistics_for("input", activation, ["moments"])}
    network: nn.Module = model
    if placement.device_ids:
        network = nn.DataParallel(model, list(placement.device_ids), placement.output_device)
    tick = time.perf_counter()
    with torch.no_grad(), ForwardProbe(probe_targets(model), sites) as probe:
        for i, linear in enumerate(model.linears()):
            probe.accumulator.add((i, "weight"), linear.weight)
        probe.accumulator.add((-1, "input"), x)
        network(x)
        records: list[Record] = probe.records()  # the one device-to-host transfer
    timings["forward_s"] = time.perf_counter() - tick
    return records, timings


def _nulls(table: pd.DataFrame) -> pd.DataFrame:
    """Undefined statistics are missing values (NaN in pandas, empty in CSV, null in JSON)."""
    out: pd.DataFrame = table.astype({c: "float64" for c in table.columns if table[c].dtype == object})
    return out


def _meta(config: Config, started: datetime, timings: dict[str, float]) -> dict[str, Any]:
    return {
        "initlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dtype": config.dtype,
        "rng": config.rng,
        "threads": torch.get_num_threads(),  # reductions split by thread: part of the bytes of a CSV
        "seed": config.seed,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings": timings,
    }
