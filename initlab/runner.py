"""Run one study: build, initialise, probe a forward pass, tabulate, judge.

Nothing here prints or writes files: :func:`run` returns a :class:`Result` holding
DataFrames; the CLI renders it and :mod:`initlab.results` saves it.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from initlab import __version__, devices, jacobian, jacobian_theory
from initlab.config import Config
from initlab.errors import InitlabError
from initlab.limits import MAX_STUDY_SEEDS, check_seeds
from initlab.model import ConstructionDraws, build, draw_input, probe_targets
from initlab.probes import ForwardProbe, Record, histogram_edges, statistics_for
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
    histogram: pd.DataFrame | None = None  # tidy: layer, site, bin_low, bin_high, count (see histogram_table)
    jacobian: jacobian.Spectrum | None = None  # the input-output Jacobian's singular values (config.jacobian)
    jacobian_theory: dict[str, Any] | None = None  # its predicted figures (initlab.jacobian_theory)

    @property
    def summary(self) -> dict[str, Any]:
        """The verdict and its figures, as written to summary.json; the prediction under ``theory``."""
        theory = self.theory.summary() if self.theory is not None else None
        out = {"name": self.config.name, **self.verdict.as_dict(), "theory": theory}
        if self.jacobian is not None:
            out["jacobian"] = {**self.jacobian.summary(), **(self.jacobian_theory or {})}
        return out


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
    jacobian.check(config, placement)
    with devices.matmul_precision(config.precision):
        records, timings, spectrum = _forward(config, placement, draws)
    histogram = histogram_table([r for r in records if r["stat"] == "histogram"])
    records = [r for r in records if r["stat"] != "histogram"]
    input_std = next(r["value"] for r in records if r["site"] == "input" and r["stat"] == "std")
    table = layer_table(pd.DataFrame.from_records([r for r in records if r["site"] != "input"]), config.model.depth)
    prediction = predict(config, input_second_moment(config.data))
    largest = torch.finfo(devices.DTYPES[config.dtype]).max
    verdict = judge(trace_of(table, input_std, config.model.width), config.verdict, prediction, largest)
    meta = {**_meta(config, started, timings), **devices.describe(placement, config.precision), "input_std": input_std}
    table = with_theory(table, prediction)
    predicted = jacobian_theory.predict(config, prediction).summary() if spectrum is not None else None
    return Result(config, _nulls(table), pd.DataFrame.from_records(records), verdict, meta, prediction, histogram,
                  spectrum, predicted)


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


def histogram_table(records: list[Record]) -> pd.DataFrame:
    """Tidy histogram rows (layer, site, bin_low, bin_high, count) from the histogram records.

    Only the bins between the lowest and the highest occupied power-of-two bin of any layer
    are kept (every layer has the same bins, so the table pivots into the figure's matrix),
    plus the zero bin (``bin_low`` 0) and the non-finite bin (empty ``bin_low``/``bin_high``)
    where any layer has such values.
    """
    low, high = histogram_edges()
    counts = np.stack([r["value"] for r in records]) if records else np.zeros((0, len(low)))
    occupied = np.flatnonzero(counts[:, 1:-1].sum(axis=0)) + 1
    bins = list(range(occupied[0], occupied[-1] + 1)) if occupied.size else []
    bins = [0] * bool(counts[:, 0].any()) + bins + [len(low) - 1] * bool(counts[:, -1].any())
    rows = len(records) * len(bins)
    table: pd.DataFrame = pd.DataFrame({
        "layer": np.repeat([r["layer"] for r in records], len(bins)).astype("int64"),
        "site": np.repeat([r["site"] for r in records], len(bins)).astype(object),
        "bin_low": np.tile(low[bins], len(records)), "bin_high": np.tile(high[bins], len(records)),
        "count": counts[:, bins].reshape(rows).astype("int64"),
    })
    return table


def _forward(
    config: Config, placement: devices.Placement, draws: ConstructionDraws | None
) -> tuple[list[Record], dict[str, float], jacobian.Spectrum | None]:
    """Build, move, run one probed forward pass; every statistic comes back in one transfer.
    With ``config.jacobian``, also the Jacobian of the batch's first inputs."""
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
    sites["post"] += statistics_for("post", activation, ["histogram"])  # the forward signal's picture
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
    tick = time.perf_counter()
    spectrum = jacobian.measure(model, x[: config.jacobian.samples]) if config.jacobian is not None else None
    timings |= {"jacobian_s": time.perf_counter() - tick} if spectrum is not None else {}
    return records, timings, spectrum


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


# ---------------------------------------------------------------- seeds


@dataclass(frozen=True)
class SeedStudy:
    """One study over seeds S..S+N-1: every seed's result, the median trace, its verdict.

    The median trace and band are :func:`initlab.compare.median_traces` (a non-finite output
    counts as +inf, so the median goes non-finite where at least half of the seeds do) and
    the verdict is that of the median trace, as for a cell of ``initlab compare``.
    """

    runs: tuple[Result, ...]  # one per seed, in seed order
    layers: pd.DataFrame  # tidy: seed, then every seed's layers.csv columns
    traces: pd.DataFrame  # per layer: median, low, high (min/max of the finite stds), seeds
    verdict: Verdict  # of the median trace
    agree: int  # seeds whose own verdict is the median trace's

    @property
    def config(self) -> Config:
        """The first seed's config."""
        return self.runs[0].config

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    @property
    def summary(self) -> dict[str, Any]:
        """The median trace's verdict and figures, the seeds and how many agree (summary.json)."""
        if len(self.runs) == 1:
            return self.runs[0].summary
        out = {"name": self.config.name, "seeds": self.seeds, **self.verdict.as_dict(), "agree": self.agree,
               "seed_regimes": [r.verdict.regime for r in self.runs]}
        if self.jacobian is not None:  # the prediction is an average over networks: over every seed's inputs
            out["jacobian"] = {**self.jacobian.summary(), **(self.runs[0].jacobian_theory or {})}
        return out

    @property
    def jacobian(self) -> jacobian.Spectrum | None:
        """Every seed's Jacobian spectra together (K rows per seed, in seed order)."""
        spectra = [r.jacobian for r in self.runs if r.jacobian is not None]
        return jacobian.Spectrum(np.concatenate([s.singular_values for s in spectra])) if spectra else None

    @property
    def histogram(self) -> pd.DataFrame | None:
        """Every seed's histogram counts added up (the bins are fixed, so they add exactly)."""
        if any(r.histogram is None for r in self.runs):
            return None
        tables = [r.histogram for r in self.runs if r.histogram is not None]
        counts = pd.concat(tables).groupby(["layer", "site", "bin_low", "bin_high"], sort=False, dropna=False)
        total: pd.DataFrame = counts["count"].sum().reset_index()
        ordered: pd.DataFrame = total.sort_values(["layer", "bin_low"], na_position="last", ignore_index=True)
        return ordered


def run_seeds(config: Config, seeds: int, progress: Callable[[int, int], None] | None = None) -> SeedStudy:
    """Run ``config`` with seeds ``config.seed`` .. ``config.seed + seeds - 1``; nothing is printed or written."""
    from initlab.compare import CELL_KEYS, median_traces, median_verdict

    if not 1 <= seeds <= MAX_STUDY_SEEDS:  # every seed's tables stay in memory until the median
        raise InitlabError(f"--seeds {seeds}: between 1 and {MAX_STUDY_SEEDS:,} for run (compare --seeds writes "
                           "each seed to disk as it goes)")
    check_seeds(config.seed, seeds, "seed/--seeds")  # before any runs: the seed is the only field that changes
    runs = []
    for i in range(seeds):
        runs.append(run(config.model_copy(update={"seed": config.seed + i})))
        if progress is not None:
            progress(i + 1, seeds)
    layers = pd.concat([r.layers.assign(seed=r.config.seed) for r in runs], ignore_index=True)
    layers = layers[["seed", *runs[0].layers.columns]]
    cell = dict(zip(CELL_KEYS, cell_key(config), strict=True))
    traces = median_traces(layers.assign(**cell)).drop(columns=CELL_KEYS)
    verdict = median_verdict(traces, [r.summary for r in runs], config.model.width, config.verdict)
    agree = sum(r.verdict.regime == verdict.regime for r in runs)
    return SeedStudy(tuple(runs), layers, traces, verdict, agree)


def cell_key(config: Config) -> tuple[str, str, int, int]:
    """The study as a cell of a comparison: (scheme, activation, depth, width); the scheme is the config's name."""
    return (config.name, config.model.activation.label(), config.model.depth, config.model.width)
