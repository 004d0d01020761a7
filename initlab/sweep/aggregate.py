"""Aggregating a sweep's finished cell runs, in pure functions.

The per-seed tables become a tidy table (one row per cell, seed and layer) and a summary
(one row per cell). A cell's verdict is :func:`initlab.regimes.classify` on its **median
trace**: the per-layer median of the block-output std over its seeds, where a non-finite
output counts as +inf (so the median trace goes non-finite where most seeds do). ``agree``
counts the seeds whose own verdict is the same. Where the cells ran a backward pass, the same
is done for the gradient (:data:`~initlab.signals.BACKWARD`): the median of ``grad_rms`` over
seeds, judged by :func:`initlab.regimes.judge_backward` from the last block down; its columns
are ``grad_*`` in the traces and ``backward_*`` in the summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from initlab.config import Config, VerdictConfig
from initlab.gradient_theory import backward_theory_summary
from initlab.regimes import Signal, Trace, Verdict, backward_trace, classify, judge_backward, with_theory
from initlab.signals import BACKWARD, FORWARD, SIGNALS, SignalColumns
from initlab.sweep.outcome import Outcome
from initlab.sweep.plan import CELL_KEYS, ID_COLUMNS, Plan


@dataclass(frozen=True)
class Comparison:
    """A sweep's results so far."""

    plan: Plan
    layers: pd.DataFrame  # tidy: one row per (cell, seed, layer): ID_COLUMNS, layer, per-layer columns
    summary: pd.DataFrame  # one row per cell: CELL_KEYS, status, seeds, agree, median-trace verdict
    traces: pd.DataFrame  # per cell and layer: median, low, high std over seeds (non-finite: inf / skipped)
    failed: list[dict[str, Any]]  # one entry per failed cell run: ids and error

    @property
    def missing(self) -> int:
        """Cell runs neither finished nor failed (an interrupted sweep)."""
        return len(self.plan.runs) - self.layers["cell"].nunique() - len(self.failed)


def aggregate(plan: Plan, outcomes: dict[str, Outcome]) -> Comparison:
    """The tidy table, median traces and per-cell summary of the finished ``outcomes``."""
    ordered = [outcomes[run.cell] for run in plan.runs if run.cell in outcomes]
    ok = [o for o in ordered if o.error is None]
    layers = tidy_layers(ok, plan.id_columns)
    traces = median_traces(layers, plan.cell_keys)
    failed = [{**o.run.ids(), "error": o.error} for o in ordered if o.error is not None]
    summary = summarise(plan, ok, traces, failed)
    return Comparison(plan, layers, summary, traces, failed)


def tidy_layers(outcomes: Sequence[Outcome], ids: Sequence[str] = ID_COLUMNS) -> pd.DataFrame:
    """One row per (cell, seed, layer), in plan order: ``ids`` first, then the per-layer columns."""
    frames = [o.layers().assign(**o.run.ids()) for o in outcomes]
    if not frames:
        empty: pd.DataFrame = pd.DataFrame(columns=[*ids, "layer", "std", "nonfinite"])
        return empty
    table = pd.concat(frames, ignore_index=True)
    ordered: pd.DataFrame = table[[*ids, *_merged_columns([list(f.columns) for f in frames], ids)]]
    return ordered


def _merged_columns(orders: Sequence[list[str]], skip: Sequence[str]) -> list[str]:
    """All columns once, each new one placed before the column that follows it where it first
    appears, so statistics only some activations have (saturated, dead) stay among their kin."""
    merged: list[str] = []
    for order in orders:
        successor: str | None = None
        for column in reversed([c for c in order if c not in skip]):
            if column not in merged:
                merged.insert(merged.index(successor) if successor is not None else len(merged), column)
            successor = column
    return merged


def median_traces(layers: pd.DataFrame, keys: Sequence[str] = CELL_KEYS) -> pd.DataFrame:
    """Per cell and layer: the forward median trace (``median``, ``low``, ``high``, ``seeds``, the fractions'
    medians, ``theory_std``) and, where the cells ran a backward pass, the backward one beside it
    (``grad_median``, ``grad_low``, ``grad_high``, ``theory_grad_rms``): see :func:`signal_traces`. A cell is
    identified by ``keys`` (the plan's :attr:`~initlab.sweep.plan.Plan.cell_keys`)."""
    forward = signal_traces(layers, FORWARD, keys)
    backward = signal_traces(layers, BACKWARD, keys)
    if backward.empty:
        return forward
    merged: pd.DataFrame = forward.merge(backward.drop(columns="grad_seeds"), how="left", on=[*keys, "layer"])
    return merged


def signal_traces(layers: pd.DataFrame, columns: SignalColumns, keys: Sequence[str] = CELL_KEYS) -> pd.DataFrame:
    """Per cell and layer: the median of the signal's value over seeds (non-finite as +inf), the range of the
    finite ones, the seeds counted, the fractions' medians and the mean-field prediction (missing where the
    theory does not apply), the columns prefixed by ``columns.prefix``. Rows without the signal (a cell run
    without a backward pass) are left out: empty where no cell has it."""
    first = columns.nonfinite[0]
    if first not in layers.columns:
        empty: pd.DataFrame = pd.DataFrame(columns=[*keys, "layer"])
        return empty
    layers = layers[layers[first].notna()]
    value = layers[columns.value].astype("float64")
    bad = (layers[first] > 0) | ~np.isfinite(value)
    for name in columns.nonfinite[1:]:  # an overflow a bounded activation hides is still one
        if name in layers.columns:
            bad |= layers[name].fillna(0) > 0
    fractions = [c for c in columns.fractions if c in layers.columns]
    predicted = [columns.predicted] if columns.predicted in layers.columns else []  # the same for every seed
    frame = layers[[*keys, "seed", "layer", *fractions, *predicted]].assign(
        as_inf=value.where(~bad, np.inf), finite=value.where(~bad))
    grouped = frame.groupby([*keys, "layer"], sort=False, dropna=False)  # a grid value may be null
    out = pd.DataFrame({
        columns.median: grouped["as_inf"].median(), columns.low: grouped["finite"].min(),
        columns.high: grouped["finite"].max(), f"{columns.prefix}seeds": grouped["seed"].count(),
        **{c: grouped[c].median() for c in fractions},
        **{c: grouped[c].first() for c in predicted},  # first() skips missing values: the first finite one
    })
    flat: pd.DataFrame = out.reset_index()
    return flat


_SUMMARY_FIGURES = ["nonfinite", "first_nonfinite_layer", "nonfinite_site", "first_zero_layer", "input_std",
                    "first_std", "last_std", "last_finite_layer", "ratio", "decades", "growth_per_layer",
                    "tail_start", "tail_change", "trend_t", "saturated_fraction", "dead_fraction",
                    "depth_over_width", "ratio_low", "ratio_high", "theory_regime", "theory_ratio",
                    "theory_agrees", "shape", "reason", "notes"]


#: The backward verdict's columns of summary.csv: ``backward_`` and the figures that apply to a gradient
#: (``first_std``/``last_std`` are the upstream gradient's and the first layer's rms).
_BACKWARD_FIGURES = [BACKWARD.summary + name for name in ["regime", "agree", *_SUMMARY_FIGURES]
                     if name not in ("input_std", "saturated_fraction", "dead_fraction")]


def summarise(
    plan: Plan, ok: Sequence[Outcome], traces: pd.DataFrame, failed: Sequence[dict[str, Any]]
) -> pd.DataFrame:
    """One row per cell: status, seed counts, the median trace's verdicts and figures, any error."""
    summaries: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for outcome in ok:
        assert outcome.summary is not None
        summaries.setdefault(outcome.run.position, []).append(outcome.summary)
    errors: dict[tuple[Any, ...], list[str]] = {}
    for entry in failed:
        errors.setdefault(tuple(entry[key] for key in plan.cell_keys), []).append(entry["error"])
    by_cell = {key: group for key, group in traces.groupby(plan.cell_keys, sort=False, dropna=False)}
    configs = {run.position: run.config for run in plan.runs if run.config is not None}
    planned = len(plan.axes["seeds"])
    rows = []
    for position in plan.positions():
        trace, config, seeds = by_cell.get(position), configs.get(position), summaries.get(position, [])
        row = _summary_row(dict(zip(plan.cell_keys, position, strict=True)), planned, seeds,
                           errors.get(position, []), trace, config)
        rows.append(row | _backward_row(seeds, trace, config))
    return _summary_frame(rows, plan.cell_keys)


def _summary_row(
    position: dict[str, Any],
    planned: int,
    summaries: list[dict[str, Any]],
    errors: list[str],
    trace: pd.DataFrame | None,
    config: Config | None,
) -> dict[str, Any]:
    regimes = [s["regime"] for s in summaries]
    status: Literal["done", "failed", "missing"] = (
        "failed" if errors else "done" if len(regimes) == planned else "missing"
    )
    row: dict[str, Any] = {**position, "status": status, "seeds": planned,
                           "finished": len(regimes), "failed": len(errors), "regime": None, "agree": None}
    row |= dict.fromkeys(_SUMMARY_FIGURES)
    if trace is not None and regimes and config is not None:
        verdict = median_verdict(trace, summaries, position["width"], config.verdict)
        row |= _verdict_figures(verdict, summaries, "")
    row["error"] = errors[0] if errors else None
    return row


def _backward_row(summaries: list[dict[str, Any]], trace: pd.DataFrame | None, config: Config | None
                  ) -> dict[str, Any]:
    """The ``backward_*`` columns: the backward verdict of the cell's median gradient trace; empty where the
    cell ran no backward pass (or has no finished seed)."""
    row: dict[str, Any] = dict.fromkeys(_BACKWARD_FIGURES)
    seeds = [s["backward"] for s in summaries if s.get("backward") is not None]
    if trace is None or config is None or not seeds or len(seeds) < len(summaries) or BACKWARD.median not in trace:
        return row
    verdict = median_verdict(trace, summaries, config.model.width, config.verdict, "backward",
                             backward_of=config)
    return row | _verdict_figures(verdict, seeds, BACKWARD.summary)


def _verdict_figures(verdict: Verdict, seeds: Sequence[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """A median trace's verdict as summary.csv's columns (``prefix``ed), with the seeds' agreement and spread."""
    ratios = [s["ratio"] for s in seeds if s.get("ratio") is not None]
    spread = [f"{len(seeds)} seeds: ratio {min(ratios):.3g} to {max(ratios):.3g}"] if len(ratios) > 1 else []
    row = {k: v for k, v in verdict.as_dict().items() if k in _SUMMARY_FIGURES}
    row |= {"regime": verdict.regime, "agree": [s["regime"] for s in seeds].count(verdict.regime),
            "notes": "; ".join([*verdict.notes, *spread]) or None, "ratio_low": min(ratios, default=None),
            "ratio_high": max(ratios, default=None)}
    allowed = _BACKWARD_FIGURES if prefix else ["regime", "agree", *_SUMMARY_FIGURES]
    return {prefix + key: value for key, value in row.items() if prefix + key in allowed}


def median_verdict(
    trace: pd.DataFrame, summaries: Sequence[dict[str, Any]], width: int, thresholds: VerdictConfig,
    signal: Signal = "forward", *, backward_of: Config | None = None,
) -> Verdict:
    """The verdict of a cell's median trace (:func:`median_traces`) beside the theory the seeds share.

    Backward: :func:`initlab.regimes.judge_backward` of the median gradient trace, the tail's shape from the
    prediction ``theory_grad_rms`` where there is one; ``backward_of`` is the cell's config (its upstream
    gradient, activation and dtype).
    """
    theory = summaries[0].get("theory")  # the same prediction for every seed of a cell
    measured = cell_trace(trace, summaries, width, signal)
    if signal == "backward":
        predicted = trace[BACKWARD.predicted].tolist() if BACKWARD.predicted in trace.columns else []
        expected = predicted if any(math.isfinite(p) for p in predicted) else None
        assert backward_of is not None and backward_of.backward is not None
        upstream, activation = backward_of.backward.upstream, backward_of.model.activation
        shared = backward_theory_summary(theory, upstream, activation) if theory is not None else None
        from initlab.devices import largest  # torch: only once a sweep runs

        return judge_backward(measured, thresholds, expected, shared, largest(backward_of.dtype))
    verdict = classify(measured, thresholds, theory)
    if theory is not None:
        figures = {k: summaries[0][k] for k in ("theory_regime", "theory_ratio")}
        verdict = with_theory(verdict, figures, theory, thresholds)
    return verdict


def cell_trace(trace: pd.DataFrame, summaries: Sequence[dict[str, Any]], width: int,
               signal: Signal = "forward") -> Trace:
    """A cell's median trace as the verdict reads it. Forward: the reference is the seeds' median input std;
    backward: the gradient from the last block down (:func:`initlab.regimes.backward_trace`), the
    reference the median upstream gradient."""
    median = trace[SIGNALS[signal].median].to_numpy()
    finite = np.isfinite(median)
    values = [float(s) if f else None for s, f in zip(median, finite, strict=True)]
    if signal == "backward":
        return backward_trace(values, (~finite).astype(int).tolist(), width=width)
    inputs = [s["input_std"] for s in summaries if s.get("input_std") is not None]

    def column(name: str) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in trace[name]] if name in trace.columns else []

    return Trace(std=values, nonfinite=(~finite).astype(int).tolist(),
                 input_std=float(np.median(inputs)) if inputs else None,
                 saturated=column("saturated"), dead=column("dead"), width=width)


def _summary_frame(rows: list[dict[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=[*keys, "status", "seeds", "finished", "failed", "regime",
                                                     "agree", *_SUMMARY_FIGURES, "error", *_BACKWARD_FIGURES])
    # Nullable dtypes so missing figures are empty cells, never "3.0" or "nan".
    ints = ["agree", "first_nonfinite_layer", "first_zero_layer", "last_finite_layer", "tail_start"]
    floats = ["input_std", "first_std", "last_std", "ratio", "decades", "growth_per_layer", "tail_change", "trend_t",
              "saturated_fraction", "dead_fraction", "depth_over_width", "ratio_low", "ratio_high", "theory_ratio"]
    booleans = ["nonfinite", "theory_agrees"]
    dtypes = {**dict.fromkeys(ints, "Int64"), **dict.fromkeys(floats, "float64"), **dict.fromkeys(booleans, "boolean")}
    backward = {BACKWARD.summary + c: dtype for c, dtype in dtypes.items() if BACKWARD.summary + c in _BACKWARD_FIGURES}
    typed: pd.DataFrame = frame.astype({**dtypes, **backward})
    return typed
