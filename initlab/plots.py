"""Figures: block-output std against layer (compare and run), and run's histogram of magnitudes.

**std.png / std.svg.** One panel per activation (columns) and per (depth, width) (rows); in
each, one line per scheme: the median trace over seeds, with the range of the seeds as a
band. Colour identifies the scheme, the same in every panel; the verdict is the line style
and the marker at the line's end (explained in the legend). All panels share one y range.
A non-finite or zero std has no place on a log axis, so the line ends there (an × marks
where the outputs went non-finite).

**grad.png / grad.svg.** The same figure for the backward signal (:data:`BACKWARD`): the median
gradient rms by layer, the backward verdict's style and end marker (at layer 0, where the
gradient arrives), and an × at the lowest layer whose gradient is still finite.

**histogram.png.** The "colorful dimension" view of the forward signal: layers across,
magnitude bins up, colour the fraction of the layer's outputs in the bin. The bins are
fixed powers of two (:data:`initlab.statistics.HISTOGRAM_BINS`), drawn on a log10 axis trimmed
to the occupied range, with the zero and non-finite bins as bands below and above.

matplotlib is imported inside the functions, and only its object-oriented API is used
(a ``Figure`` with the Agg canvas, no pyplot), so nothing global changes and
``initlab --help`` never imports it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from initlab.signals import BACKWARD as BACKWARD_COLUMNS
from initlab.signals import FORWARD as FORWARD_COLUMNS
from initlab.signals import SignalColumns

if TYPE_CHECKING:
    import pandas as pd

    from initlab.seeds import SeedStudy
    from initlab.sweep import Comparison

#: Colours of the schemes, in their order on the axis (matplotlib's tab10).
SCHEME_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"]
#: The verdict of a line: its style and the marker at its end.
VERDICT_STYLES: dict[str | None, tuple[Any, str]] = {
    "stable": ("-", "o"), "vanishing": ("--", "v"), "explosion": (":", "^"), "saturated": ("-.", "D"),
    None: ((0, (1, 3)), "s"),  # failed or unfinished
}
_PANEL_INCHES = (4.2, 3.2)
#: The mean-field prediction beside each measured trace: thin, finely dashed, in the scheme's colour.
PREDICTED_STYLE: Any = (0, (3, 2))
PREDICTED_WIDTH = 0.8


@dataclass(frozen=True)
class SignalPlot:
    """What a trace figure draws of one signal: where its columns are (:class:`initlab.signals.SignalColumns`),
    and the words."""

    columns: SignalColumns
    what: str  # the title's subject
    ylabel: str
    overflow: str  # the legend's words for the x where the line stops

    @property
    def median(self) -> str:
        return self.columns.median

    @property
    def low(self) -> str:
        return self.columns.low

    @property
    def high(self) -> str:
        return self.columns.high

    @property
    def predicted(self) -> str:
        return self.columns.predicted

    @property
    def regime(self) -> str:
        """The verdict's column of the summary."""
        return self.columns.summary + "regime"

    @property
    def backward(self) -> bool:
        """The signal travels from the last layer down: its line ends at layer 0."""
        return self.columns.signal == "backward"


FORWARD = SignalPlot(FORWARD_COLUMNS, "block-output std by layer", "std of block output",
                     "outputs non-finite after this layer")
BACKWARD = SignalPlot(BACKWARD_COLUMNS, "gradient rms by layer (backward pass, from the last layer down)",
                      "rms of the gradient of block output", "gradients non-finite below this layer")


def std_figure(comparison: Comparison) -> Any:
    """The std-vs-layer figure of ``comparison`` (a ``matplotlib.figure.Figure``)."""
    return trace_figure(comparison.plan.name, *_lines(comparison))


def grad_figure(comparison: Comparison) -> Any | None:
    """The gradient-rms-vs-layer figure of ``comparison``; None where no cell ran a backward pass."""
    if not has_backward(comparison.traces):
        return None
    return trace_figure(comparison.plan.name, *_lines(comparison), BACKWARD)


def _lines(comparison: Comparison) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[Any]]]:
    """Traces, summary and axes with one line per scheme, or, with ``--grid`` axes, per scheme and grid
    values (``xavier_uniform, init.gain=0.8``): the ``scheme`` column then holds that label, in plan order."""
    traces, summary, axes = comparison.traces, comparison.summary, comparison.plan.axes
    if not comparison.plan.grid:
        return traces, summary, axes
    from initlab.sweep.grid import shown_value

    names = [axis.name for axis in comparison.plan.grid]

    def labelled(frame: pd.DataFrame) -> pd.DataFrame:
        labels = [", ".join([scheme, *(f"{n}={shown_value(v)}" for n, v in zip(names, values, strict=True))])
                  for scheme, *values in zip(frame["scheme"], *(frame[n] for n in names), strict=True)]
        out: pd.DataFrame = frame.assign(scheme=labels)
        return out

    summary = labelled(summary)
    return labelled(traces), summary, {**axes, "schemes": list(dict.fromkeys(summary["scheme"]))}


def has_backward(traces: pd.DataFrame) -> bool:
    """Whether ``traces`` hold a median gradient trace (a backward pass ran)."""
    return BACKWARD.median in traces.columns and bool(traces[BACKWARD.median].notna().any())


def trace_figure(name: str, traces: pd.DataFrame, summary: pd.DataFrame, axes: dict[str, list[Any]],
                 signal: SignalPlot = FORWARD) -> Any:
    """Median traces of ``signal`` (and seed bands) of the cells in ``summary``, a panel per activation and shape."""
    from matplotlib.figure import Figure

    shapes = [(d, w) for d in axes["depths"] for w in axes["widths"]]
    rows, cols = len(shapes), len(axes["activations"])
    inches = max(_PANEL_INCHES[0] * cols, 6.0)
    figure = Figure(figsize=(inches, _PANEL_INCHES[1] * rows + 1.4), layout="constrained")
    grid = figure.subplots(rows, cols, squeeze=False, sharex=False, sharey=True)
    regimes = _regimes(summary, signal.regime)
    seeds = len(axes["seeds"])
    notes = [f"median over the {seeds} seeds, band: their range"] * (seeds > 1)
    notes += ["all panels share the y axis"] * (rows * cols > 1)
    shape = (f"depth {shapes[0][0]}, width {shapes[0][1]}" if len(shapes) == 1
             else "depth " + _list(axes["depths"]) + ", width " + _list(axes["widths"]))
    title = "\n".join([f"{name}: {signal.what}", f"{shape}, {_seeds(axes['seeds'])}", "; ".join(notes)])
    figure.suptitle(title.strip(), fontsize=10)
    for r, (depth, width) in enumerate(shapes):
        for c, activation in enumerate(axes["activations"]):
            title = f"{activation}, depth {depth}, width {width}"
            _panel(grid[r][c], traces, regimes, axes["schemes"], (activation, depth, width), title, signal)
    predicted = signal.predicted in traces.columns and bool(
        np.isfinite(traces[signal.predicted].to_numpy(np.float64)).any())
    handles = _legend(axes["schemes"], regimes, overflow=bool(np.isinf(traces[signal.median].to_numpy()).any()),
                      predicted=predicted, overflow_label=signal.overflow)
    # About 2.4 inches per legend column, so the legend never runs past the figure's edges.
    figure.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=max(1, int(inches / 2.4)))
    return figure


def study_figure(study: SeedStudy, signal: SignalPlot = FORWARD) -> Any:
    """The std-vs-layer figure of ``initlab run`` (one panel, one line; a band with several seeds);
    ``signal=BACKWARD``: the gradient figure."""
    import pandas as pd

    from initlab.seeds import cell_key
    from initlab.sweep import CELL_KEYS

    key: dict[str, Any] = dict(zip(CELL_KEYS, cell_key(study.config), strict=True))
    backward = study.backward.regime if study.backward is not None else None
    summary = pd.DataFrame([{**key, "regime": study.verdict.regime, "backward_regime": backward}])
    axes = {"schemes": [key["scheme"]], "activations": [key["activation"]], "depths": [key["depth"]],
            "widths": [key["width"]], "seeds": study.seeds}
    return trace_figure(study.config.name, study.traces.assign(**key), summary, axes, signal)


def _seeds(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]})"


def _list(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _regimes(summary: pd.DataFrame, column: str = "regime") -> dict[tuple[Any, ...], str | None]:
    keys = zip(summary["scheme"], summary["activation"], summary["depth"], summary["width"], strict=True)
    return {key: (regime if isinstance(regime, str) else None) for key, regime in zip(keys, summary[column],
                                                                                      strict=True)}


def _legend(
    schemes: list[str], regimes: dict[tuple[Any, ...], str | None], overflow: bool, predicted: bool = False,
    overflow_label: str = FORWARD.overflow,
) -> list[Any]:
    """Schemes by colour, then the verdicts that occur by line style and end marker, then the prediction."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_colour(i), linewidth=2.5, label=scheme) for i, scheme in enumerate(schemes)]
    seen = set(regimes.values())
    for regime, (style, marker) in VERDICT_STYLES.items():
        if regime in seen:
            handles.append(Line2D([], [], color="black", linestyle=style, marker=marker, markevery=[1],
                                  label=f"verdict: {regime or 'no result'}"))
    if overflow:
        handles.append(Line2D([], [], color="black", linestyle="none", marker="x",
                              label=overflow_label))
    if predicted:
        handles.append(Line2D([], [], color="black", linestyle=PREDICTED_STYLE, linewidth=PREDICTED_WIDTH,
                              label="dashed thin: mean-field prediction"))
    return handles


def _colour(index: int) -> str:
    return SCHEME_COLOURS[index % len(SCHEME_COLOURS)]


def _panel(
    ax: Any,
    traces: pd.DataFrame,
    regimes: dict[tuple[Any, ...], str | None],
    schemes: list[str],
    where: tuple[str, int, int],
    title: str,
    signal: SignalPlot = FORWARD,
) -> None:
    activation, depth, width = where
    drawn = False
    for i, scheme in enumerate(schemes):
        trace = traces[(traces["scheme"] == scheme) & (traces["activation"] == activation)
                       & (traces["depth"] == depth) & (traces["width"] == width)]
        if trace.empty or trace[signal.median].isna().all():
            continue
        drawn = _line(ax, trace, VERDICT_STYLES[regimes.get((scheme, activation, depth, width))], _colour(i),
                      signal) or drawn
    if drawn:  # a log axis with no positive data warns; leave an empty panel linear
        ax.set_yscale("log")
    pad = 0.03 * max(depth - 1, 1)  # the whole network, also where a line ends early; end markers whole
    ax.set_xlim(-pad, depth - 1 + pad)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("layer")
    ax.set_ylabel(signal.ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _line(ax: Any, trace: pd.DataFrame, verdict: tuple[Any, str], colour: str, signal: SignalPlot) -> bool:
    """One cell's median trace, its verdict's end marker, the x where it went non-finite, the prediction and
    the seeds' band; whether anything could be drawn on a log axis. A backward trace runs from the last
    layer down, so it ends at layer 0 and stops at the lowest finite layer above a non-finite one."""
    style, marker = verdict
    order = slice(None, None, -1) if signal.backward else slice(None)  # in the direction the signal travels
    layer = trace["layer"].to_numpy()[order]
    values = trace[signal.median].to_numpy()[order]
    median = _on_log_axis(values)
    ax.plot(layer, median, color=colour, linestyle=style, linewidth=1.4)
    shown = np.flatnonzero(np.isfinite(median))
    if shown.size:  # the verdict's marker where the line ends
        ax.plot(layer[shown[-1]], median[shown[-1]], marker=marker, color=colour, markersize=6)
    end = _last_before_overflow(values)
    if end is not None:  # mark where the line stops because the values went non-finite
        ax.plot(layer[end], median[end], marker="x", color="black", markersize=8)
    if signal.predicted in trace.columns:  # the mean-field prediction: missing where the theory does not apply
        predicted = _on_log_axis(trace[signal.predicted].to_numpy()[order])
        if np.isfinite(predicted).any():
            ax.plot(layer, predicted, color=colour, linestyle=PREDICTED_STYLE, linewidth=PREDICTED_WIDTH)
    if (trace["seeds"] > 1).any():
        low, high = (_on_log_axis(trace[column].to_numpy()[order]) for column in (signal.low, signal.high))
        ax.fill_between(layer, low, high, color=colour, alpha=0.18, linewidth=0)
    return bool(shown.size)


def _last_before_overflow(values: Any) -> int | None:
    """Index of the last finite value before the first +inf (non-finite values), if any."""
    overflow = np.flatnonzero(np.isinf(values))
    if overflow.size == 0 or overflow[0] == 0:
        return None
    return int(overflow[0]) - 1


def _on_log_axis(values: Any) -> Any:
    """NaN where a value cannot be drawn on a log axis (non-finite or <= 0), so the line ends."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


# ---------------------------------------------------------------- histogram


def histogram_figure(histogram: pd.DataFrame, title: str) -> Any:
    """Layers × magnitude bins, coloured by the fraction of each layer's outputs in the bin.

    ``histogram`` is :func:`initlab.runner.histogram_table`'s tidy frame (one site).
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    layers = np.sort(histogram["layer"].unique())
    bins = histogram[histogram["layer"] == layers[0]]
    counts = histogram["count"].to_numpy(np.float64).reshape(len(layers), len(bins)).T  # (bins, layers)
    fraction = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    edges, inner, bands = _bin_edges(bins["bin_low"].to_numpy(), bins["bin_high"].to_numpy())
    figure = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = figure.subplots()
    x = np.append(layers, layers[-1] + 1) - 0.5
    shown = np.where(fraction > 0, fraction, np.nan)
    mesh = ax.pcolormesh(x, edges, shown, norm=LogNorm(vmin=max(np.nanmin(shown), 1e-6), vmax=1), cmap="viridis")
    figure.colorbar(mesh, ax=ax, label="fraction of the layer's outputs")
    ticks = [t for t in MaxNLocator(nbins=8, integer=True).tick_values(*inner) if inner[0] <= t <= inner[1]]
    for _, boundary, _ in bands:  # a white line between the powers of two and the zero / non-finite band
        ax.axhline(boundary, color="white", linewidth=1.2)
    ax.set_yticks(ticks + [c for c, _, _ in bands], [f"{t:g}" for t in ticks] + [label for _, _, label in bands])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("layer")
    ax.set_ylabel("log10 |x|   (fixed bins: powers of 2;\nbands: |x| < 2^-126 incl. zero, inf/NaN)")
    return figure


def _bin_edges(low: Any, high: Any) -> tuple[Any, tuple[float, float], list[tuple[float, float, str]]]:
    """y edges (log10 |x|) of the bins, the zero and non-finite bins as bands below and above (each
    a tenth of the axis, and at least one bin, so a fully non-finite layer stays visible); the
    powers of two's range; each band's centre, boundary, label."""
    step = float(np.log10(2.0))
    ordinary = np.isfinite(low) & (low > 0)
    if ordinary.any():
        inner = np.append(np.log10(low[ordinary]), np.log10(high[ordinary][-1]))
    else:
        inner = np.array([0.0, step])
    band = max(step, (inner[-1] - inner[0]) / 10)
    edges, bands = list(inner), []
    if low.size and low[0] == 0:
        edges.insert(0, inner[0] - band)
        bands.append((inner[0] - band / 2, inner[0], "< 2^-126"))
    if low.size and not np.isfinite(low[-1]):
        edges.append(inner[-1] + band)
        bands.append((inner[-1] + band / 2, inner[-1], "inf/NaN"))
    return np.array(edges), (float(inner[0]), float(inner[-1])), bands


# ---------------------------------------------------------------- files


def figure_files(figure: Any, formats: Sequence[str] = ("png", "svg")) -> dict[str, bytes]:
    """``figure`` as ``{format: bytes}``; the PNG and SVG carry no date or version, so they are reproducible."""
    import matplotlib as mpl

    out = {}
    # A fixed hash salt makes the SVG's element ids the same from run to run.
    with mpl.rc_context({"svg.hashsalt": "initlab"}):
        for fmt in formats:
            metadata = {"Software": None} if fmt == "png" else {"Date": None}
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, dpi=110, metadata=metadata)
            out[fmt] = buffer.getvalue()
    return out


def std_plot_files(comparison: Comparison) -> dict[str, bytes]:
    """The std figure and, where a backward pass ran, the gradient figure, by file name: ``std.png``,
    ``std.svg``, ``grad.png``, ``grad.svg``. A sweep with ``--grid`` axes also draws its verdicts over
    them (:func:`initlab.grid_plot.grid_figures`: ``heatmap.*`` or ``axis.*``)."""
    figures = {"std": std_figure(comparison), "grad": grad_figure(comparison)}
    if comparison.plan.grid:
        from initlab.grid_plot import grid_figures

        figures |= grid_figures(comparison)
    return {f"{name}.{fmt}": data for name, figure in figures.items() if figure is not None
            for fmt, data in figure_files(figure).items()}
