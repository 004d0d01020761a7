"""Figures of a sweep with ``--grid`` axes (:mod:`initlab.sweep.grid`).

**heatmap.png / heatmap.svg** (two numeric grid axes): one panel per cell of the other axes
(scheme, activation, depth, width, other grid values) and signal (forward; backward where it
ran), the first axis across, the second up, each square coloured by its median-trace verdict.
Where the mean-field theory applies to the pair (the weights' σw² changes along one axis and the
biases' σb² along the other, e.g. ``init.gain`` × ``model.bias_std``), the edge of chaos
(:func:`initlab.theory.critical_sigma_w2`) is drawn on top, mapped back to the axes' values.

**axis.png / axis.svg** (one numeric grid axis): the verdict's figures against it, end-to-end
``ratio`` and ``last_std`` (log scale), one line per cell of the other axes, each point coloured
by its verdict.

Like :mod:`initlab.phase_plot`: matplotlib imported inside the functions, no pyplot. :mod:`initlab.plots`
depends on this module (it writes these figures' files), never the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from initlab.config import Config
    from initlab.sweep import Comparison
    from initlab.sweep.grid import Axis

#: Verdicts in colour order (the terminal's colours, see :data:`initlab.report.PLOT_COLOURS`).
REGIMES = ["vanishing", "stable", "saturated", "explosion"]
_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#d62728"]
#: Points along an axis at which the critical line is evaluated.
_LINE_POINTS = 21


def grid_figures(comparison: Comparison) -> dict[str, Any]:
    """``heatmap`` with two numeric grid axes, ``axis`` with one, else nothing: figures by file stem
    (:func:`initlab.plots.std_plot_files` writes them; this module imports nothing of plots)."""
    numeric = [axis for axis in comparison.plan.grid if axis.numeric and len(axis.values) > 1]
    if len(numeric) == 2:
        return {"heatmap": heatmap_figure(comparison, numeric[0], numeric[1])}
    if len(numeric) == 1:
        return {"axis": axis_figure(comparison, numeric[0])}
    return {}


def _groups(comparison: Comparison, used: Sequence[Axis]) -> list[tuple[str, pd.DataFrame]]:
    """The summary split by every cell key but the ``used`` axes: (title, rows) in plan order."""
    names = {axis.name for axis in used}
    keys = [key for key in comparison.plan.cell_keys if key not in names]
    out = []
    for values, rows in comparison.summary.groupby(keys, sort=False, dropna=False):
        title = ", ".join(str(v) if k in ("scheme", "activation") else f"{k} {v}" for k, v in zip(keys, values,
                                                                                                  strict=True))
        out.append((title, rows))
    return out


def _codes(regimes: Sequence[Any]) -> Any:
    return np.array([REGIMES.index(r) if r in REGIMES else np.nan for r in regimes], dtype=float)


def heatmap_figure(comparison: Comparison, x: Axis, y: Axis) -> Any:
    """Verdicts over the ``x`` × ``y`` grid, a panel per other cell and signal, the critical line on top."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups = _groups(comparison, [x, y])
    backward = bool(comparison.summary["backward_regime"].notna().any())
    signals = [("", "forward")] + [("backward_", "backward")] * backward
    figure = Figure(figsize=(4.2 * len(signals), 3.4 * len(groups) + 1.0), layout="constrained")
    panels = figure.subplots(len(groups), len(signals), squeeze=False)
    xs, ys = sorted(x.values), sorted(y.values)
    asymptotic: set[bool] = set()  # the kinds of line drawn
    for r, (title, rows) in enumerate(groups):
        line = critical_line(comparison, rows, x, y)
        for c, (prefix, label) in enumerate(signals):
            codes = np.full((len(ys), len(xs)), np.nan)
            for xv, yv, regime in zip(rows[x.name], rows[y.name], rows[prefix + "regime"], strict=True):
                codes[ys.index(yv), xs.index(xv)] = _codes([regime])[0]
            ax = panels[r][c]
            ax.pcolormesh(xs, ys, codes, cmap=ListedColormap(_COLOURS), vmin=-0.5, vmax=len(REGIMES) - 0.5,
                          shading="nearest")
            if line is not None:
                ax.plot(line.x, line.y, color="black", linewidth=2.0)
                asymptotic.add(line.asymptotic)
            ax.set(xlabel=x.name, ylabel=y.name, title=f"{title}: {label}")
            ax.title.set_fontsize(9)
    handles = [Patch(color=colour, label=regime) for regime, colour in zip(REGIMES, _COLOURS, strict=True)]
    if asymptotic:
        label = "edge of chaos (mean field, χ₁ = 1)" if asymptotic == {False} else \
            "χ₁ = 1 (mean field; asymptotic where q has no fixed point: order | explosion)"
        handles += [panels[0][0].plot([], [], color="black", linewidth=2.0, label=label)[0]]
    figure.suptitle(f"{comparison.plan.name}: median-trace verdict over {x.name} × {y.name}", fontsize=10)
    figure.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=min(len(handles), 5))
    return figure


def axis_figure(comparison: Comparison, x: Axis) -> Any:
    """``ratio`` and ``last_std`` of the median traces against ``x``, one line per other cell."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 4.2), layout="constrained")
    panels = figure.subplots(1, 2, squeeze=False)[0]
    for i, (title, rows) in enumerate(_groups(comparison, [x])):
        rows = rows.sort_values(x.name)
        for ax, column in zip(panels, ("ratio", "last_std"), strict=True):
            values = rows[column].astype("float64").to_numpy()
            shown = np.isfinite(values) & (values > 0)
            ax.plot(rows[x.name].to_numpy()[shown], values[shown], color=f"C{i % 10}", label=title, linewidth=1.2)
            colours = [_COLOURS[int(c)] if math.isfinite(c) else "white" for c in _codes(list(rows["regime"]))]
            ax.scatter(rows[x.name].to_numpy()[shown], values[shown], c=np.array(colours)[shown], zorder=3,
                       edgecolors=f"C{i % 10}")
    for ax, column in zip(panels, ("ratio: last std / input std", "last_std: last block's std"), strict=True):
        ax.set(xlabel=x.name, ylabel=column, yscale="log")
        ax.grid(True, alpha=0.3)
    panels[0].legend(fontsize=7)
    figure.suptitle(f"{comparison.plan.name}: median-trace figures against {x.name} (point colour: verdict "
                    + ", ".join(f"{r} {c}" for r, c in zip(REGIMES, ("blue", "green", "purple", "red"), strict=True))
                    + ")", fontsize=9)
    return figure


class CriticalLine(NamedTuple):
    """χ₁ = 1 in a heatmap's plane: the axes' values along it (NaN where it leaves the grid)."""

    x: Any
    y: Any
    asymptotic: bool  # somewhere the boundary χ₁ → 1 where q has no fixed point (ReLU with bias), not an edge of chaos


def critical_line(comparison: Comparison, rows: pd.DataFrame, x: Axis, y: Axis) -> CriticalLine | None:
    """χ₁ = 1 in the ``x`` × ``y`` plane of one panel's cells: the edge of chaos where q has a fixed point,
    else the asymptotic boundary (:func:`initlab.theory.critical_sigma_w2`: ReLU's σw² = 2 at any σb²).
    None where the theory gives none (σw² or σb² undefined, not one changing along each axis, σw² not
    monotonic along its axis), or where the line has fewer than two points in the grid."""

    configs = _panel_configs(comparison, rows, [x, y])
    if configs is None:
        return None
    sw2, sb2 = _variances(configs)
    if sw2 is None or sb2 is None:
        return None
    # which axis moves σw² (the other must move σb² alone)
    weight_axis = 0 if _varies_along(sw2, 0) and _varies_along(sb2, 1) else 1 \
        if _varies_along(sw2, 1) and _varies_along(sb2, 0) else None
    if weight_axis is None:
        return None
    config = configs[0][0]
    bias_values = np.linspace(min((x, y)[1 - weight_axis].values), max((x, y)[1 - weight_axis].values), _LINE_POINTS)
    bias_sb2 = _along(config, (x, y)[1 - weight_axis], bias_values, "sb2")
    weight_values = np.linspace(min((x, y)[weight_axis].values), max((x, y)[weight_axis].values), _LINE_POINTS * 4)
    weight_sw2 = _along(config, (x, y)[weight_axis], weight_values, "sw2")
    if bias_sb2 is None or weight_sw2 is None:
        return None
    if np.all(np.diff(weight_sw2) < 0):  # σw² falls as the axis rises (kaiming's init.a): interpolate it rising
        weight_sw2, weight_values = weight_sw2[::-1], weight_values[::-1]
    if np.any(np.diff(weight_sw2) <= 0):
        return None
    critical, no_edge = _boundary(config.model.activation, bias_sb2)
    inside = (critical >= weight_sw2[0]) & (critical <= weight_sw2[-1])
    if inside.sum() < 2:  # one point draws nothing
        return None
    on_weight = np.where(inside, np.interp(critical, weight_sw2, weight_values), np.nan)
    asymptotic = bool((inside & no_edge).any())  # a point drawn that is no edge of chaos
    xs, ys = (on_weight, bias_values) if weight_axis == 0 else (bias_values, on_weight)
    return CriticalLine(xs, ys, asymptotic)


def _boundary(act: Any, sb2: Any) -> tuple[Any, Any]:
    """σw² with χ₁ = 1 at each σb² (NaN where none): the edge of chaos, else the asymptotic boundary; and
    where it is the latter (no fixed point)."""
    from initlab import theory

    edge = [theory.critical_sigma_w2(act, float(b), fine=False) for b in sb2]
    boundary = [theory.critical_sigma_w2(act, float(b), fine=False, asymptotic=True) if e is None else e
                for e, b in zip(edge, sb2, strict=True)]
    return np.array([np.nan if c is None else c for c in boundary]), np.array([e is None for e in edge])


def _panel_configs(comparison: Comparison, rows: pd.DataFrame, axes: Sequence[Axis]) -> list[list[Config]] | None:
    """The panel's configs on the grid, ``[x index][y index]`` (first seed), or None where one failed."""
    x, y = axes
    position = {run.position: run.config for run in reversed(comparison.plan.runs)}
    first = rows.iloc[0]
    out: list[list[Config]] = []
    for xv in sorted(x.values):
        column = []
        for yv in sorted(y.values):
            key = tuple(xv if k == x.name else yv if k == y.name else first[k] for k in comparison.plan.cell_keys)
            config = position.get(key)
            if config is None:
                return None
            column.append(config)
        out.append(column)
    return out


def _variances(configs: list[list[Config]]) -> tuple[Any, Any]:
    from initlab import theory

    sw2 = [[_sw2(c) for c in column] for column in configs]
    sb2 = [[theory.bias_variance(c)[0] for c in column] for column in configs]
    if any(v is None for column in sw2 + sb2 for v in column):
        return None, None
    return np.array(sw2, dtype=float), np.array(sb2, dtype=float)


def _sw2(config: Config) -> float | None:
    from initlab import theory

    if config.init.layers:  # per-layer overrides: no one σw² for the network
        return None
    return theory.sigma_w2(config.init.weight, config.model.activation, config.model.width)


def _varies_along(values: Any, axis: int) -> bool:
    """Whether ``values[x][y]`` changes along ``axis`` only (constant along the other, changing along it)."""
    other = 1 - axis
    constant = np.allclose(values, np.take(values, [0], axis=other), rtol=1e-12, atol=0.0)
    return bool(constant and np.ptp(values, axis=axis).max() > 0)


def _along(config: Config, axis: Axis, values: Any, what: str) -> Any:
    """σw² (``sw2``) or σb² (``sb2``) of ``config`` with ``axis`` set to each of ``values``; None if undefined."""
    from initlab import theory
    from initlab.config import patched

    raw = config.model_dump(mode="json")
    out = []
    for value in values:
        moved = patched(raw, [axis.override(float(value))])
        out.append(_sw2(moved) if what == "sw2" else theory.bias_variance(moved)[0])
    return None if any(v is None for v in out) else np.array(out, dtype=float)
