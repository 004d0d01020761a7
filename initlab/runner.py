"""Run one study: build, initialise, probe a forward pass, tabulate, judge.

Nothing here prints or writes files: :func:`run` returns a :class:`Result` holding
DataFrames; the CLI renders it and :mod:`initlab.results` saves it.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from initlab import __version__, checkpoint, devices, jacobian, jacobian_theory, stream
from initlab.config import Config
from initlab.errors import InitlabError
from initlab.gradient_theory import GradientPrediction, backward_theory_summary, gradient_prediction
from initlab.model import MLP, ConstructionDraws, build, draw_input, probe_targets
from initlab.probes import Accumulator, ForwardProbe, GradientProbe, Record
from initlab.regimes import Trace, Verdict, backward_trace, judge, judge_backward
from initlab.statistics import RESIDUAL_POST, Statistic, histogram_edges, statistics_for
from initlab.theory import Prediction, input_second_moment, predict
from initlab.upstream import draw_upstream, upstream_gradient

#: Column order of the per-layer table: pre-activation, block output, weights, then their gradients.
_PREFIX = {"pre": "pre_", "post": "", "normed": "norm_", "branch": "branch_", "weight": "weight_", "grad": "grad_",
           "pre_grad": "pre_grad_", "weight_grad": "weight_grad_"}
_ORDER = ["std", "rms", "mean", "absmax", "nonfinite", "saturated", "zero", "dead"]


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
    backward: Verdict | None = None  # the backward signal's verdict; None when the backward pass is off
    jacobian: jacobian.Spectrum | None = None  # the input-output Jacobian's singular values (config.jacobian)
    jacobian_theory: dict[str, Any] | None = None  # its predicted figures (initlab.jacobian_theory)
    weights: dict[str, torch.Tensor] | None = None  # the network's state_dict on the CPU (run's keep_weights)

    @property
    def summary(self) -> dict[str, Any]:
        """The forward verdict and its figures, as written to summary.json; the prediction under
        ``theory``, the backward verdict under ``backward``."""
        theory = self.theory.summary() if self.theory is not None else None
        backward = self.backward.as_dict() if self.backward is not None else None
        out = {"name": self.config.name, **self.verdict.as_dict(), "theory": theory, "backward": backward}
        if self.jacobian is not None:
            out["jacobian"] = {**self.jacobian.summary(), **(self.jacobian_theory or {})}
        if "init_from" in self.meta:  # where the studied weights came from
            out["init_from"] = self.meta["init_from"]
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
    if "weight_grad_std" in table.columns:  # the "grad:data" ratio practitioners watch
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = table["weight_grad_std"].to_numpy(np.float64) / table["weight_std"].to_numpy(np.float64)
        table["grad_ratio"] = np.where(np.isfinite(ratio), ratio, np.nan)
    return table


def run(config: Config, draws: ConstructionDraws | None = None, keep_weights: bool = False) -> Result:
    """Run the study ``config`` describes and return its results (nothing is written).

    ``draws`` may be shared by runs of a sweep to draw what they share once (the numbers
    are the same with or without it). ``keep_weights``: the result holds the network's
    state_dict (``--save-model``). With ``init.from`` the file is read and checked first.
    """
    started = datetime.now(timezone.utc)
    placement = devices.usable(config)
    memory = devices.check_memory(config, placement)
    if memory == "stream" and keep_weights:
        raise InitlabError(f"--save-model needs the whole model in memory, and this study runs block by block "
                           f"(memory: stream{', the whole model does not fit' * (config.memory == 'auto')})")
    jacobian.check(config, placement)
    loaded = checkpoint.read(config.init.from_) if config.init.from_ is not None else None
    with devices.matmul_precision(config.precision):
        if memory == "stream":
            records, timings = stream.passes(config, placement, site_statistics(config))
            spectrum, weights = None, None
        else:
            records, timings, spectrum, weights = _passes(config, placement, draws, loaded, keep_weights)
    histogram = histogram_table([r for r in records if r["stat"] == "histogram"])
    records = [r for r in records if r["stat"] != "histogram"]
    input_std = next(r["value"] for r in records if r["site"] == "input" and r["stat"] == "std")
    table = layer_table(pd.DataFrame.from_records([r for r in records if r["site"] != "input"]), config.model.depth)
    if config.model.block == "residual":
        input_mean = next(r["value"] for r in records if r["site"] == "input" and r["stat"] == "mean")
        table = with_skip_ratio(table, input_std, input_mean, config)
    prediction = predict(config, input_second_moment(config.data))
    largest = devices.largest(config.dtype)
    residual = config.model.block == "residual"
    verdict = judge(trace_of(table, input_std, config.model.width, residual), config.verdict, prediction, largest)
    gradient = None
    if config.backward is not None:
        gradient = gradient_prediction(prediction, config.backward.upstream, config.model.activation)
    backward = None
    if config.backward is not None:
        trace = replace(backward_trace_of(table, config.model.width), residual=residual)
        backward = judge_backward(trace, config.verdict,
                                  gradient.rms if gradient else None, backward_theory(prediction, config), largest)
    meta = {**_meta(config, started, timings), **devices.describe(placement, config.precision), "memory": memory,
            "input_std": input_std}
    meta |= {"init_from": loaded.describe()} if loaded is not None else {}
    table = with_theory(table, prediction, gradient)
    predicted = jacobian_theory.predict(config, prediction).summary() if spectrum is not None else None
    return Result(config, _nulls(table), pd.DataFrame.from_records(records), verdict, meta, prediction, histogram,
                  backward, spectrum, predicted, weights)


def with_skip_ratio(table: pd.DataFrame, input_std: float | None, input_mean: float | None, config: Config
                    ) -> pd.DataFrame:
    """``table`` plus ``skip_ratio``: rms(x)/rms(α·branch) of every residual block, x its input (the
    previous block's output, the input batch for block 0); rms from the recorded std (n - 1) and mean."""
    n = config.data.batch_size * config.model.width
    std = np.concatenate([[np.nan if input_std is None else input_std], table["std"].to_numpy(np.float64)[:-1]])
    mean = np.concatenate([[np.nan if input_mean is None else input_mean], table["mean"].to_numpy(np.float64)[:-1]])

    def rms(s: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.sqrt(s * s * (n - 1) / n + m * m)  # type: ignore[no-any-return]

    branch = rms(table["branch_std"].to_numpy(np.float64), table["branch_mean"].to_numpy(np.float64))
    with np.errstate(all="ignore"):
        ratio = rms(std, mean) / (config.model.alpha * branch)
    out: pd.DataFrame = table.copy()
    out["skip_ratio"] = np.where(np.isfinite(ratio), ratio, np.nan)
    return out


def trace_of(table: pd.DataFrame, input_std: float | None, width: int | None, residual: bool = False) -> Trace:
    """What the verdict reads from a per-layer table (layers.csv's columns); in a residual stream the
    saturated and dead fractions are the branch's."""

    def column(name: str) -> list[float | None]:
        values = table[name].tolist() if name in table.columns else []
        return [None if v is None or math.isnan(v) else float(v) for v in values]  # undefined, not a number

    return Trace(
        std=column("std"), nonfinite=table["nonfinite"].tolist(), input_std=input_std,
        pre_nonfinite=table["pre_nonfinite"].tolist() if "pre_nonfinite" in table.columns else [],
        saturated=column("branch_saturated" if residual else "saturated"),
        dead=column("branch_dead" if residual else "dead"), width=width, residual=residual,
    )


def backward_trace_of(table: pd.DataFrame, width: int | None) -> Trace:
    """What the backward verdict reads: the gradients' root mean square, from the last block down."""
    rms = [None if math.isnan(v) else float(v) for v in table["grad_rms"].tolist()]
    return backward_trace(rms, table["grad_nonfinite"].tolist(), table["pre_grad_nonfinite"].tolist(), width)


def backward_theory(prediction: Prediction, config: Config) -> dict[str, Any]:
    """The prediction's summary as the backward verdict reads it: not applicable unless ``upstream: normal``."""
    upstream = config.backward.upstream if config.backward is not None else "normal"
    return backward_theory_summary(prediction.summary(), upstream, config.model.activation)


def with_theory(table: pd.DataFrame, prediction: Prediction, gradient: GradientPrediction | None = None
                ) -> pd.DataFrame:
    """``table`` plus the predicted ``theory_pre_std`` (√q_l), ``theory_std`` (std φ at q_l) and, with a
    backward pass, ``theory_grad_std`` columns, missing where the theory does not apply or the prediction
    leaves float range."""
    out: pd.DataFrame = table.copy()
    columns = {"theory_pre_std": prediction.pre_std, "theory_std": prediction.post_std}
    if "grad_std" in table.columns:
        columns["theory_grad_std"] = gradient.std if gradient is not None else []
        columns["theory_grad_rms"] = gradient.rms if gradient is not None else []
    for name, values in columns.items():
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


def _passes(
    config: Config, placement: devices.Placement, draws: ConstructionDraws | None,
    loaded: checkpoint.Checkpoint | None = None, keep_weights: bool = False,
) -> tuple[list[Record], dict[str, float], jacobian.Spectrum | None, dict[str, torch.Tensor] | None]:
    """Build, move, run one probed forward pass and, unless it is off, one backward pass;
    every statistic of both comes back in one transfer. With ``config.jacobian``, also the
    Jacobian of the batch's first inputs; with ``keep_weights``, the network's state_dict.

    ``loaded`` weights replace the drawn ones after the draws, so the input (drawn after the
    weights) is the one the same config without ``init.from`` gets: a saved study loaded back
    gives the same numbers."""
    dtype = devices.DTYPES[config.dtype]
    # Half types are drawn in float32 and rounded, so they start from the float32 run's weights.
    draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    source = placement.device if config.rng == "device" else torch.device("cpu")
    generator = torch.Generator(device=source).manual_seed(config.seed)

    tick = time.perf_counter()
    model = build(config, generator, draw_dtype, draws)
    if loaded is not None:
        loaded.load_into(model, dtype)
    x = draw_input(config, generator, draw_dtype)
    g = draw_upstream(config, generator, draw_dtype)
    if (placement.device, dtype) != (generator.device, draw_dtype):  # Module.to walks every module
        model, x = model.to(placement.device, dtype), x.to(placement.device, dtype)
    if g is not None:  # the gradient of the output, where DataParallel gathers it
        g = g.to(_output_device(placement), dtype)
    timings = {"build_s": time.perf_counter() - tick}
    weights = checkpoint.cpu_state(model) if keep_weights else None  # of the MLP, not of a DataParallel wrapper

    network: nn.Module = model
    if placement.device_ids:
        network = nn.DataParallel(model, list(placement.device_ids), placement.output_device)
    backward = config.backward is not None
    targets = probe_targets(model)
    with torch.set_grad_enabled(backward), ForwardProbe(targets, site_statistics(config)) as probe, \
            GradientProbe(targets if backward else [], probe.accumulator):
        record_weights(probe.accumulator, model, "weight")
        probe.accumulator.add((-1, "input"), x)
        tick = time.perf_counter()
        y = network(x)
        timings["forward_s"] = time.perf_counter() - tick
        if config.backward is not None:
            tick = time.perf_counter()
            y.backward(upstream_gradient(config.backward, y, g))
            record_weights(probe.accumulator, model, "weight_grad")
            timings["backward_s"] = time.perf_counter() - tick
        del y
        tick = time.perf_counter()
        records: list[Record] = probe.records()  # the one device-to-host transfer
        timings["statistics_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    spectrum = jacobian.measure(model, x, config.jacobian.samples) if config.jacobian is not None else None
    timings |= {"jacobian_s": time.perf_counter() - tick} if spectrum is not None else {}
    return records, timings, spectrum, weights


def record_weights(accumulator: Accumulator, model: MLP, site: Literal["weight", "weight_grad"]) -> None:
    """Add every block's weight matrix, or its gradient after a backward pass, to ``accumulator`` under ``site``."""
    for i, linear in enumerate(model.linears()):
        tensor = linear.weight if site == "weight" else linear.weight.grad
        assert tensor is not None  # every weight takes part in the output
        accumulator.add((i, site), tensor)


def site_statistics(config: Config) -> dict[str, list[Statistic]]:
    """The statistics every site records (:data:`initlab.statistics.SITE_STATISTICS`), the forward signal's
    histogram, the input's moments, and the gradient sites where the backward pass is on."""
    activation = config.model.activation
    model = config.model
    names = ["pre", "post", "weight"] + (["pre_grad", "grad", "weight_grad"] if config.backward is not None else [])
    names += (["normed"] if model.norm != "none" else []) + (["branch"] if model.block == "residual" else [])
    sites = {site: statistics_for(site, activation) for site in names}
    if model.block == "residual":
        sites["post"] = statistics_for("post", activation, RESIDUAL_POST)
    sites["post"] += statistics_for("post", activation, ["histogram"])  # the forward signal's picture
    sites["input"] = statistics_for("input", activation, ["moments"])
    return sites


def _output_device(placement: devices.Placement) -> torch.device:
    if placement.output_device is not None:
        return torch.device("cuda", placement.output_device)
    return placement.device


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
