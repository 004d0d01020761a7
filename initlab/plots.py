"""Figures of a comparison: block-output std against layer, on a log axis.

One panel per activation (columns) and per (depth, width) (rows); in each, one line per
scheme: the median trace over seeds, with the range of the seeds as a band. Lines are
coloured by the cell's verdict with the terminal's colours (:data:`initlab.report.PLOT_COLOURS`)
and told apart by line style. A non-finite or zero std has no place on a log axis, so the
line simply ends there.

matplotlib is imported inside the functions, and only its object-oriented API is used
(a ``Figure`` with the Agg canvas, no pyplot), so nothing global changes and
``initlab --help`` never imports it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from initlab.report import PLOT_COLOURS

if TYPE_CHECKING:
    import pandas as pd

    from initlab.compare import Comparison

#: Line styles that tell the schemes in one panel apart (colour is the verdict).
_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
_NO_VERDICT = "#7f7f7f"  # failed or unfinished cells
_PANEL_INCHES = (4.2, 3.2)


def std_figure(comparison: Comparison) -> Any:
    """The std-vs-layer figure of ``comparison`` (a ``matplotlib.figure.Figure``)."""
    from matplotlib.figure import Figure

    axes = comparison.plan.axes
    shapes = [(d, w) for d in axes["depths"] for w in axes["widths"]]
    rows, cols = len(shapes), len(axes["activations"])
    figure = Figure(figsize=(_PANEL_INCHES[0] * cols, _PANEL_INCHES[1] * rows), layout="constrained")
    grid = figure.subplots(rows, cols, squeeze=False)
    regimes = _regimes(comparison.summary)
    seeds = len(axes["seeds"])
    band = f"; band: range of {seeds} seeds" if seeds > 1 else ""
    figure.suptitle(f"{comparison.plan.name}: block-output std by layer (median over seeds{band})", fontsize=11)
    for r, (depth, width) in enumerate(shapes):
        for c, activation in enumerate(axes["activations"]):
            title = activation if rows == 1 else f"{activation}, depth {depth}, width {width}"
            _panel(grid[r][c], comparison.traces, regimes, axes["schemes"], (activation, depth, width), title)
    return figure


def _regimes(summary: pd.DataFrame) -> dict[tuple[Any, ...], str | None]:
    keys = zip(summary["scheme"], summary["activation"], summary["depth"], summary["width"], strict=True)
    return {key: (regime if isinstance(regime, str) else None) for key, regime in zip(keys, summary["regime"],
                                                                                      strict=True)}


def _panel(
    ax: Any,
    traces: pd.DataFrame,
    regimes: dict[tuple[Any, ...], str | None],
    schemes: list[str],
    where: tuple[str, int, int],
    title: str,
) -> None:
    activation, depth, width = where
    drawn = False
    for i, scheme in enumerate(schemes):
        key = (scheme, activation, depth, width)
        trace = traces[(traces["scheme"] == scheme) & (traces["activation"] == activation)
                       & (traces["depth"] == depth) & (traces["width"] == width)]
        regime = regimes.get(key)
        colour = PLOT_COLOURS.get(regime or "", _NO_VERDICT)
        label = f"{scheme}: {regime or 'no result'}"
        if trace.empty:
            ax.plot([], [], color=colour, linestyle=_STYLES[i % len(_STYLES)], label=label)
            continue
        layer = trace["layer"].to_numpy()
        median = _on_log_axis(trace["median"].to_numpy())
        ax.plot(layer, median, color=colour, linestyle=_STYLES[i % len(_STYLES)], linewidth=1.4, label=label)
        end = _last_before_overflow(trace["median"].to_numpy())
        if end is not None:  # mark where the line stops because the outputs went non-finite
            ax.plot(layer[end], median[end], marker="x", color=colour, markersize=7)
        if (trace["seeds"] > 1).any():
            low, high = _on_log_axis(trace["low"].to_numpy()), _on_log_axis(trace["high"].to_numpy())
            ax.fill_between(layer, low, high, color=colour, alpha=0.18, linewidth=0)
        drawn = drawn or bool(np.isfinite(median).any())
    if drawn:  # a log axis with no positive data warns; leave an empty panel linear
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("layer")
    ax.set_ylabel("std of block output")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _last_before_overflow(values: Any) -> int | None:
    """Index of the last finite value before the first +inf (non-finite outputs), if any."""
    overflow = np.flatnonzero(np.isinf(values))
    if overflow.size == 0 or overflow[0] == 0:
        return None
    return int(overflow[0]) - 1


def _on_log_axis(values: Any) -> Any:
    """NaN where a value cannot be drawn on a log axis (non-finite or <= 0), so the line ends."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def std_plot_files(comparison: Comparison) -> dict[str, bytes]:
    """The figure as ``{"png": bytes, "svg": bytes}``; the SVG carries no date, so it is reproducible."""
    return figure_files(std_figure(comparison))


def figure_files(figure: Any) -> dict[str, bytes]:
    """A figure as ``{"png": bytes, "svg": bytes}``; the SVG carries no date, so it is reproducible."""
    import matplotlib as mpl

    out = {}
    # A fixed hash salt makes the SVG's element ids the same from run to run.
    with mpl.rc_context({"svg.hashsalt": "initlab"}):
        for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, dpi=110, metadata=metadata)
            out[fmt] = buffer.getvalue()
    return out
