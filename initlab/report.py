"""Rendering for people (Rich tables and verdict lines) and for scripts (JSON documents)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from initlab.results import table_records, to_json
from initlab.signals import BACKWARD, FORWARD, SignalColumns

if TYPE_CHECKING:
    import pandas as pd

    from initlab.regimes import Signal
    from initlab.seeds import SeedStudy
    from initlab.sweep import Comparison
    from initlab.sweep.grid import Axis

#: One colour per regime, shared by tables and plots.
COLOURS = {"explosion": "red", "vanishing": "blue", "saturated": "magenta", "stable": "green"}
PLOT_COLOURS = {"explosion": "#d62728", "vanishing": "#1f77b4", "saturated": "#9467bd", "stable": "#2ca02c"}

#: Table columns: (layers.csv column, header). Headers are short to fit 80 columns; each mean-field
#: prediction sits right after the measurement it predicts.
_COLUMNS = [
    ("layer", "layer"), ("weight_std", "w std"), ("pre_std", "pre std"), ("theory_pre_std", "pre std\ntheory"),
    ("std", "std"), ("theory_std", "std\ntheory"), ("mean", "mean"),
    ("absmax", "max|x|"), ("nonfinite", "nonfin"), ("saturated", "satur."), ("zero", "zeros"), ("dead", "dead"),
    ("norm_std", "norm\nstd"), ("branch_std", "branch\nstd"), ("branch_saturated", "branch\nsatur."),
    ("branch_dead", "branch\ndead"), ("skip_ratio", "skip/\nbranch"),
    ("grad_rms", "grad\nrms"), ("theory_grad_rms", "grad rms\ntheory"), ("grad_nonfinite", "grad\nnonfin"),
    ("weight_grad_std", "w grad\nstd"), ("grad_ratio", "w grad/\nw std"),
]
_COUNTS = ("layer", "nonfinite", "grad_nonfinite")


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: ``-`` for missing, general format otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e6 and digits == 0:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def shown_rows(layers: pd.DataFrame, every: int, marks: Sequence[int | None]) -> list[int]:
    """Every ``every``-th layer plus the first, the last and the marked ones."""
    depth = len(layers)
    rows = set(range(0, depth, max(every, 1))) | {0, depth - 1}
    rows |= {m for m in marks if m is not None and 0 <= m < depth}
    return sorted(rows)


def layer_table(layers: pd.DataFrame, summary: dict[str, Any], every: int = 1) -> FittedTable:
    """The per-layer statistics, split into as many tables as the terminal's width needs."""
    bad = summary.get("first_nonfinite_layer")
    backward = summary.get("backward") or {}
    marks = [bad, summary.get("first_zero_layer"), backward.get("first_nonfinite_layer"),
             backward.get("first_zero_layer")]
    rows = shown_rows(layers, every, marks)
    columns = [
        Col(title, [fmt(layers[key].iloc[i], 0 if key in _COUNTS else 3) for i in rows])
        for key, title in _COLUMNS if key in layers.columns and _shown(layers[key])
    ]
    styles = ["red" if bad is not None and i >= bad else None for i in rows]
    return FittedTable(f"{summary['name']}: per-layer statistics", columns[:1], columns[1:], row_styles=styles)


def _shown(column: pd.Series[Any]) -> bool:
    """A prediction column only where the theory gives a number (the theory line says why not)."""
    return not str(column.name).startswith("theory_") or bool(column.notna().any())


def verdict_line(summary: dict[str, Any], forward_extra: str | None = None, backward_extra: str | None = None
                 ) -> Text:
    """The verdicts: the forward one and, where the backward pass ran (``summary["backward"]``), the
    backward one, each with its figures, one line saying why (and any notes), then its ``*_extra`` line."""
    backward = summary.get("backward")
    text = _verdict(summary, "forward: " if backward else "verdict: ", "forward")
    if forward_extra:
        text.append("\n" + forward_extra)
    if backward:
        text.append("\n")
        text.append_text(_verdict(backward, "backward: ", "backward"))
        if backward_extra:
            text.append("\n" + backward_extra)
    return text


def _verdict(summary: dict[str, Any], label: str, signal: str) -> Text:
    regime = summary["regime"]
    text = Text(label, style="bold")
    text.append(regime.upper() + (" (non-finite)" if summary["nonfinite"] else ""), style=f"bold {COLOURS[regime]}")
    text.append("  " + verdict_figures(summary, signal))
    why = "; ".join([summary["reason"], *(summary.get("notes") or [])])
    text.append(f"\n  why: {why}", style="dim")
    return text


def verdict_figures(summary: dict[str, Any], signal: str = "forward") -> str:
    """``std x0.644 of the input's at layer 99 (-0.19 decades, x0.9956/layer)``; for a run that went
    non-finite, the figures are those of the last finite layer, named. Backward: ``gradient x1.78e+04 of
    the upstream's at layer 0 (...)``, the gradient's root mean square from the last block down."""
    last = summary["last_finite_layer"]
    if last is None:
        return "no finite layer"
    reference = "the input's" if summary.get("input_std") is not None else "layer 0's"
    what = "std"
    if signal == "backward":
        what, reference = "gradient", "the upstream's"
    where = f"layer {last}" + (", the last finite one" if summary["nonfinite"] else "")
    decades = summary.get("decades")
    scale = [] if decades is None else [f"{decades:+.2f} decades"]
    if summary["growth_per_layer"] is not None:
        scale.append(f"x{fmt(summary['growth_per_layer'])}/layer")
    return f"{what} x{fmt(summary['ratio'], 3)} of {reference} at {where}" + (f" ({', '.join(scale)})" if scale else "")


def print_run(console: Console, layers: pd.DataFrame, summary: dict[str, Any], every: int, folder: Path | None) -> None:
    """The terminal report of one study."""
    console.print(layer_table(layers, summary, every))
    console.print(verdict_line(summary))
    _print_theory(console, summary.get("theory"))
    if summary.get("jacobian") is not None:
        console.print(jacobian_line(summary["jacobian"]))
    if folder is not None:
        console.print(f"results: {folder}", soft_wrap=True)  # a path is never wrapped: it is copied


def jacobian_line(figures: dict[str, Any]) -> Text:
    """The Jacobian's spectrum (summary.json's ``jacobian``), each figure the mean over the inputs, with the
    prediction beside it; Rich wraps it between words, never inside a number."""
    k, bad = figures["samples"], figures["nonfinite_samples"]
    inputs = f"{k} input{'s' * (k != 1)}" + (f", {bad} with non-finite values" if bad else "")
    text = Text("jacobian: ", style="bold")
    low, above = figures.get("min_sigma_below"), figures.get("condition_above")
    smallest = f"min σ < {fmt(low)}" if low is not None else f"min σ {fmt(figures['min_sigma'])}"
    condition = f"condition > {fmt(above)}" if above is not None else f"condition {fmt(figures['condition'])}"
    unresolved = figures.get("unresolved") or 0
    text.append(f"mean σ² {fmt(figures['mean_sigma2'])} (theory {fmt(figures.get('theory_mean_sigma2'))}), "
                f"var σ² {fmt(figures['var_sigma2'])} (theory {fmt(figures.get('theory_var_sigma2'))}), "
                f"max σ {fmt(figures['max_sigma'])}, {smallest}, {condition}; mean over {inputs}"
                + (f"; {fmt(unresolved)} of the {figures['width']} σ below float64 resolution"
                   if unresolved and figures.get("width") else ""))
    if figures.get("theory_note"):
        text.append(f"\n  theory: {figures['theory_note']}", style="dim")
    return text


def run_json(layers: pd.DataFrame, summary: dict[str, Any], config: dict[str, Any], folder: Path | None) -> str:
    """The ``--json`` document of one study."""
    return to_json(
        {
            "config": config,
            "summary": summary,
            "layers": table_records(layers),
            "results_dir": str(folder) if folder is not None else None,
        }
    )


def study_json(study: SeedStudy, folder: Path | None) -> str:
    """The ``--json`` document of ``initlab run``; with several seeds, ``layers`` has a seed column
    and ``traces`` the median and band per layer."""
    config = study.config.model_dump(mode="json")
    if len(study.runs) == 1:
        return run_json(study.runs[0].layers, study.summary, config, folder)
    return to_json({"config": config, "summary": study.summary, "traces": table_records(study.traces),
                    "layers": table_records(study.layers), "results_dir": str(folder) if folder else None})


def seeds_table(study: SeedStudy, every: int = 1) -> FittedTable:
    """Per layer: the median std over seeds, its prediction, the band (min and max of the finite ones), and
    how many seeds are non-finite there; the same of the gradient's rms where the backward pass ran."""
    traces, summary = study.traces, study.summary
    rows = shown_rows(traces, every, [summary.get("first_nonfinite_layer"), summary.get("first_zero_layer")])
    columns = [Col("layer", [str(v) for v in traces.iloc[rows]["layer"]])]
    columns += _band_columns(study, rows, FORWARD, "std", " ", "nonfinite\nseeds")
    columns += _band_columns(study, rows, BACKWARD, "grad rms", "\n", "nonfinite\ngrad seeds")
    what = "std and gradient rms" if BACKWARD.median in traces.columns else "std"
    title = f"{study.config.name}: per-layer {what} over {len(study.runs)} seeds ({study.seeds[0]}-{study.seeds[-1]})"
    return FittedTable(title, columns[:1], columns[1:])


def _band_columns(study: SeedStudy, rows: list[int], signal: SignalColumns, what: str, gap: str, bad: str
                  ) -> list[Col]:
    """One signal's columns of :func:`seeds_table`: the median, its prediction, the band and the seeds whose
    value is non-finite at the layer; none where the study did not follow that signal."""
    traces = study.traces
    if signal.median not in traces.columns:
        return []
    picked = traces.iloc[rows]
    predicted = traces.get(signal.predicted)  # the same prediction for every seed
    columns = [Col(f"median{gap}{what}", [_std_text(v).plain for v in picked[signal.median]]),
               *([Col(f"{what}\ntheory", [fmt(predicted.iloc[i], 3) for i in rows])]
                 if predicted is not None and _shown(predicted) else []),
               Col(f"min{gap}{what}", [fmt(v, 3) for v in picked[signal.low]]),
               Col(f"max{gap}{what}", [fmt(v, 3) for v in picked[signal.high]])]
    layers = study.layers
    nonfinite = layers["layer"] < 0  # none yet
    for name in signal.nonfinite:  # as the median trace counts them: a hidden overflow is one too
        if name in layers.columns:
            nonfinite |= layers[name].fillna(0) > 0
    per_layer = nonfinite.groupby(layers["layer"]).sum()
    if per_layer.any():
        columns.append(Col(bad, [str(int(per_layer[layer])) for layer in picked["layer"]]))
    return columns


def print_seeds(console: Console, study: SeedStudy, every: int, folder: Path | None) -> None:
    """The terminal report of one study over several seeds: median and band, the median's verdict."""
    console.print(seeds_table(study, every))
    forward = _seeds_agree("the verdict is the median trace's", study.agree, [r.verdict.regime for r in study.runs])
    backward = None
    if study.backward is not None and study.backward_agree is not None:
        backward = _seeds_agree("the backward verdict is the median gradient trace's", study.backward_agree,
                                [r.backward.regime if r.backward else "no backward pass" for r in study.runs])
    console.print(verdict_line(study.summary, forward, backward))
    _print_theory(console, study.runs[0].summary.get("theory"))  # the same prediction for every seed
    if study.summary.get("jacobian") is not None:
        console.print(jacobian_line(study.summary["jacobian"]))
    if folder is not None:
        console.print(f"results: {folder}")


def _seeds_agree(what: str, agree: int, regimes: list[str]) -> str:
    counts = ", ".join(f"{regimes.count(r)} {r}" for r in dict.fromkeys(regimes))
    return f"  seeds: {what}; {agree} of {len(regimes)} seeds' own verdicts agree ({counts})"


def _print_theory(console: Console, theory: dict[str, Any] | None) -> None:
    """The mean-field summary line (:func:`initlab.report_theory.summary_line`), when there is a prediction."""
    if theory is not None:
        from initlab.report_theory import summary_line

        console.print(Text(summary_line(theory)))


# ---------------------------------------------------------------- gain


_DEFINITION_TITLES = {"torch": "torch", "second_moment": "second moment", "std_ratio": "std ratio"}


def gain_table(report: Any) -> FittedTable:
    """One activation's gains by every definition, with where each takes a deep net's variance."""
    names, gains, fates = [], [], []
    for name, title in _DEFINITION_TITLES.items():
        value = getattr(report, name)
        names.append(title)
        if value is None:
            gains.append("n/a")
            fates.append(Text("not in calculate_gain's table"))
            continue
        gains.append(f"{value:.6g}" + (f" ± {report.std_ratio_se:.2g}" if name == "std_ratio" else ""))
        fate = report.fates[name]
        fates.append(Text(fate_text(fate), style="green" if fate.stable else COLOURS.get(fate.kind, "yellow")))
    return FittedTable(
        f"gain for {report.activation}", [Col("definition", names, "left")],
        [Col("gain", gains), Col("deep net, from q0 = 1", fates, "left", prose=True)],
    )


def fate_text(fate: Any) -> str:
    """Where the variance map takes q0 = 1, and what the number of layers counts.

    E.g. ``q*=1.178, stable: within 1e-09 of q* after 23 layers`` or ``explosion: q above
    1e+09 after 55 layers`` (:attr:`initlab.gain.Fate.iterations`).
    """
    from initlab.gain import FATE_MAX_ITERATIONS, FATE_TOL

    if fate.kind not in ("vanishing", "explosion", "fixed_point"):
        return f"q*={fate.q:.4g}, {fate.kind} (slope V'(q*) = {fate.slope:.3g})"
    low, high, near = _power(FATE_TOL * fate.q0), _power(fate.q0 / FATE_TOL), _power(FATE_TOL)
    reached, missed = {
        "vanishing": (f"q below {low}", f"q still above {low}"),
        "explosion": (f"q above {high}", f"q still below {high}"),
        "fixed_point": (f"within {near} of q*", f"not yet within {near} of q*"),
    }[fate.kind]
    head = fate.kind if fate.q is None else f"q*={fate.q:.4g}, stable"
    if fate.iterations is None:
        return f"{head}: {missed} after {FATE_MAX_ITERATIONS} layers"
    if fate.iterations == 0:
        return f"{head}: q0 is q*, reached at once" if fate.q is not None else f"{head}: {reached} at once"
    return f"{head}: {reached} after {fate.iterations} layer{'s' if fate.iterations > 1 else ''}"


def _power(value: float) -> str:
    """``1e-9`` rather than ``1e-09``."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def gain_explanation(report: Any) -> Text:
    return Text(report.explanation, style="dim")


def gain_overview(reports: Sequence[Any]) -> FittedTable:
    """Every activation in one table (split into several where the terminal is narrow)."""
    autos = [report.fates["torch" if report.torch is not None else "second_moment"] for report in reports]
    return FittedTable(
        "gain by definition",
        [Col("activation", [report.activation for report in reports], "left")],
        [
            Col("torch", [f"{r.torch:.5g}" if r.torch is not None else "n/a" for r in reports]),
            Col("2nd moment", [f"{r.second_moment:.5g}" for r in reports]),
            Col("std ratio", [f"{r.std_ratio:.4g}" for r in reports]),
            Col("auto", [_short_fate(fate) for fate in autos], "left"),
        ],
        caption="auto: the variance fixed point q* at the gain `auto` picks",
    )


def _short_fate(fate: Any) -> Text:
    if fate.kind in ("vanishing", "explosion"):
        return Text(fate.kind, style=COLOURS[fate.kind])
    label = {"fixed_point": "q*", "marginal": "marginal q*", "unstable": "unstable q*"}[fate.kind]
    return Text(f"{label}={fate.q:.3g}", style="green" if fate.stable else "yellow")


def gain_json(reports: Sequence[Any]) -> str:
    """The ``--json`` document of ``initlab gain``."""
    from dataclasses import asdict

    return to_json({"gains": [asdict(report) for report in reports]})


# ---------------------------------------------------------------- compare


def cell_text(row: dict[str, Any]) -> Text:
    """One matrix cell: the verdict, growth per layer, first non-finite layer, seed agreement; with a
    backward pass, both verdicts (``fwd STABLE x0.996/layer``, ``bwd EXPLOSION x1.1/layer``)."""
    if row["status"] == "failed":
        return Text("FAILED", style="bold yellow")
    if row["regime"] is None:
        return Text("not run", style="dim")
    if row.get("backward_regime") is None:  # no backward pass: the forward verdict alone
        text = _verdict_cell(row, "", "\n")
        text.append(_agree_text(row, [("", row["agree"])]))
        return text
    text = _verdict_cell(row, "", " ", "fwd ")
    text.append("\n")
    text.append(_verdict_cell(row, "backward_", " ", "bwd "))
    text.append(_agree_text(row, [("fwd ", row["agree"]), ("bwd ", row["backward_agree"])]))
    return text


def _verdict_cell(row: dict[str, Any], prefix: str, gap: str, label: str = "") -> Text:
    """``label REGIME{gap}x1.1/layer``, then ``nonfinite@L`` on a line of its own, in the regime's colour."""
    regime = row[prefix + "regime"]
    style = COLOURS[regime]
    text = Text(label, style=style)
    text.append(regime.upper(), style=f"bold {style}")
    text.append(f"{gap}x{fmt(row[prefix + 'growth_per_layer'], 3)}/layer", style=style)
    if row[prefix + "first_nonfinite_layer"] is not None:
        text.append(f"\n{'    ' if label else ''}nonfinite@{row[prefix + 'first_nonfinite_layer']}", style=style)
    return text


def _agree_text(row: dict[str, Any], counts: list[tuple[str, Any]]) -> Text:
    """``3/3 seeds agree`` (with both verdicts: ``seeds agree: fwd 3/3, bwd 2/3``), or nothing for one seed."""
    text = Text()
    if row["seeds"] <= 1:
        return text
    agree = ", ".join(f"{label}{count}/{row['finished']}" for label, count in counts)
    text.append("\n" + (f"{agree} seeds agree" if len(counts) == 1 else f"seeds agree: {agree}"))
    if row["finished"] < row["seeds"]:
        text.append(f" ({row['seeds'] - row['finished']} not run)", style="dim")
    return text


def _rows(summary: pd.DataFrame, grid: Sequence[Axis] = ()) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Summary rows by (scheme, activation, depth, width, grid values...), missing values as None."""
    records = table_records(summary)
    keys = ["scheme", "activation", "depth", "width", *(axis.name for axis in grid)]
    return {tuple(r[key] for key in keys): r for r in records}


def _combos(grid: Sequence[Axis]) -> list[tuple[Any, ...]]:
    """Every combination of the grid axes' values, in plan order (one empty one without a grid)."""
    return list(itertools.product(*(axis.values for axis in grid)))


def _grid_text(grid: Sequence[Axis], combo: Sequence[Any]) -> str:
    """``init.gain 0.8, data.batch_size 16``: where a cell sits on the grid axes."""
    return ", ".join(f"{axis.name} {_value_text(value)}" for axis, value in zip(grid, combo, strict=True))


def _grid_lines(grid: Sequence[Axis], combo: Sequence[Any]) -> list[str]:
    """A column header's lines for a cell's grid values: the axis, then its value."""
    return [line for axis, value in zip(grid, combo, strict=True) for line in (axis.name, _value_text(value))]


def _value_text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _shapes(axes: dict[str, list[Any]]) -> list[tuple[int, int]]:
    return [(depth, width) for depth in axes["depths"] for width in axes["widths"]]


def compare_matrices(summary: pd.DataFrame, axes: dict[str, list[Any]], grid: Sequence[Axis] = ()
                     ) -> list[FittedTable]:
    """The regime matrix, rows schemes (and, with grid axes, one row per scheme and grid value, a key
    column per axis) and columns activations; one per (depth, width)."""
    rows = _rows(summary, grid)
    seeds = len(axes["seeds"])
    lines = [(scheme, combo) for scheme in axes["schemes"] for combo in _combos(grid)]
    tables = []
    for depth, width in _shapes(axes):
        title = f"regime matrix: depth {depth}, width {width}, {seeds} seed{'s' if seeds > 1 else ''}"
        columns = [Col(activation, [cell_text(rows[(scheme, activation, depth, width) + combo])
                                    for scheme, combo in lines], "left") for activation in axes["activations"]]
        keys = [Col("scheme", [_break_label(scheme) for scheme, _ in lines], "left")]
        keys += [Col(axis.name, [_value_text(combo[i]) for _, combo in lines]) for i, axis in enumerate(grid)]
        tables.append(FittedTable(title, keys, columns, show_lines=True))
    return tables


def _where(r: dict[str, Any], axes: dict[str, list[Any]], grid: Sequence[Axis]) -> str:
    """`` (depth 10, width 64, init.gain 1.2)``: a summary row's place beyond scheme and activation, where
    the sweep has more than one."""
    shape = [f"depth {r['depth']}, width {r['width']}"] if len(_shapes(axes)) > 1 else []
    place = ", ".join([*shape, *([_grid_text(grid, [r[a.name] for a in grid])] if grid else [])])
    return f" ({place})" if place else ""


def compare_failures(summary: pd.DataFrame, axes: dict[str, list[Any]], grid: Sequence[Axis] = ()) -> Text | None:
    """One line per failed scheme and error, naming the cells it failed in; None when nothing failed."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in table_records(summary):
        if r["status"] == "failed":
            where = r["activation"] + _where(r, axes, grid)
            groups.setdefault((r["scheme"], r["error"]), []).append(where)
    if not groups:
        return None
    text = Text()
    for (scheme, error), cells in groups.items():
        text.append("failed: ", style="bold yellow")
        text.append(f"{scheme} with {', '.join(cells)}: {error}\n")
    text.rstrip()
    return text


def compare_notes(summary: pd.DataFrame, axes: dict[str, list[Any]], grid: Sequence[Axis] = ()) -> Text | None:
    """One line per verdict worth a second look: seeds that disagree, a theory that disagrees or does not
    apply, finite width, dead units; the line gives the seeds' spread and the verdict's notes. A backward
    verdict's line is marked ``(backward)``."""
    text = Text()
    for r in table_records(summary):
        where = f"{r['scheme']} + {r['activation']}" + _where(r, axes, grid)
        for prefix, label in (("", ""), ("backward_", " (backward)")):
            if _worth_a_note(r, prefix):
                text.append(f"{where}{label}: ", style="bold")
                text.append(f"{r[prefix + 'regime'].upper()}, {r[prefix + 'agree']}/{r['finished']} seeds agree; "
                            f"{r[prefix + 'notes']}\n")
    text.rstrip()
    return text if text.plain else None


def _worth_a_note(r: dict[str, Any], prefix: str) -> bool:
    notes = r.get(prefix + "notes")
    if r.get(prefix + "regime") is None or not notes:
        return False
    split = r[prefix + "agree"] is not None and r[prefix + "agree"] < r["finished"]
    return split or r[prefix + "theory_agrees"] is not True or "finite width" in notes or "dead" in notes


def pick_layers(depth: int, chosen: Sequence[int] | None) -> list[int]:
    """Layers of the side-by-side table: ``chosen`` (negative from the end) or 0, 1, 10%, 50%, last."""
    if chosen is None:
        chosen = [0, 1, depth // 10, depth // 2, depth - 1]
    return sorted({layer % depth for layer in chosen if -depth <= layer < depth})


def std_tables(traces: pd.DataFrame, axes: dict[str, list[Any]], chosen: Sequence[int] | None,
               signal: Signal = "forward", grid: Sequence[Axis] = ()) -> list[FittedTable]:
    """Median block-output std at a few layers, one column per cell (split to fit the terminal; with grid
    axes, one per scheme, activation and grid value); ``signal="backward"``: the median gradient rms (none
    without a backward pass)."""
    column, what = ("median", "std") if signal == "forward" else ("grad_median", "gradient rms")
    if column not in traces.columns:
        return []
    tables = []
    for depth, net_width in _shapes(axes):
        layers = pick_layers(depth, chosen)
        shape = traces[(traces["depth"] == depth) & (traces["width"] == net_width) & traces[column].notna()]
        keys = [shape[name] for name in ("scheme", "activation", *(axis.name for axis in grid))]
        median = {(*key, int(layer)): m for *key, layer, m in zip(*keys, shape["layer"], shape[column], strict=True)}
        drawn = set(zip(*keys, strict=True))
        cells = [(s, a, *c) for a in axes["activations"] for s in axes["schemes"] for c in _combos(grid)
                 if (s, a, *c) in drawn]
        if not cells:  # every cell of this shape failed: nothing to tabulate
            continue
        columns = [Col("\n".join([a, _break_label(s), *_grid_lines(grid, c)]),
                       [_std_text(median.get((s, a, *c, layer))) for layer in layers]) for s, a, *c in cells]
        title = f"{what} by layer (median over seeds): depth {depth}, width {net_width}"
        tables.append(FittedTable(title, [Col("layer", [str(layer) for layer in layers])], columns))
    return tables


def _break_label(label: str) -> str:
    """``xavier_uniform(gain=auto)`` over two lines, so columns stay narrow."""
    name, paren, rest = label.partition("(")
    return f"{name}\n{paren}{rest}" if paren else name


def _std_text(value: float | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    if math.isinf(value):
        return Text("nonfinite", style=COLOURS["explosion"])
    return Text(fmt(value, 3))


def print_compare(
    console: Console, comparison: Comparison, layers: Sequence[int] | None, folder: Path | None
) -> None:
    """The terminal report of a comparison: matrices, failures, the side-by-side std table."""
    axes, grid = comparison.plan.axes, comparison.plan.grid
    for table in compare_matrices(comparison.summary, axes, grid):
        console.print(table)
    failures = compare_failures(comparison.summary, axes, grid)
    if failures is not None:
        console.print(failures)
        console.print()
    notes = compare_notes(comparison.summary, axes, grid)
    if notes is not None:
        console.print(notes)
        console.print()
    for signal in ("forward", "backward"):
        for table in std_tables(comparison.traces, axes, layers, signal, grid):
            console.print(table)
    if folder is not None:
        console.print(f"results: {folder}", soft_wrap=True)  # a path is never wrapped: it is copied


def compare_json(comparison: Comparison, folder: Path | None) -> str:
    """The ``--json`` document of a comparison."""
    return to_json(
        {
            "axes": comparison.plan.axes,
            "grid": [axis.as_dict() for axis in comparison.plan.grid],
            "summary": table_records(comparison.summary),
            "traces": table_records(comparison.traces),
            "failed": comparison.failed,
            "cells": [run.as_dict() for run in comparison.plan.runs],
            "layers": table_records(comparison.layers),
            "results_dir": str(folder) if folder is not None else None,
        }
    )


# ---------------------------------------------------------------- tables that fit


@dataclass(frozen=True)
class Col:
    """A table column: header, one cell per row, and whether it is prose (may wrap at spaces).

    Cells that are not prose (numbers, names, verdicts) are never wrapped or cut: a column
    is as wide as its widest line.
    """

    header: str
    cells: Sequence[str | Text]
    justify: JustifyMethod = "right"
    prose: bool = False


def _cell_width(cell: str | Text) -> int:
    plain = cell.plain if isinstance(cell, Text) else cell
    return max((cell_len(line) for line in plain.splitlines()), default=0)


def _column_width(column: Col) -> int:
    """Width the column needs: its widest line (prose: its longest word)."""
    texts = [column.header, *[c.plain if isinstance(c, Text) else c for c in column.cells]]
    if column.prose:
        return max((cell_len(word) for text in texts for word in text.split()), default=1)
    return max(_cell_width(text) for text in texts)


@dataclass(frozen=True)
class FittedTable:
    """A table that fits the width it is printed at without cutting a cell.

    Its ``keys`` columns (``layer``, ``scheme``) are repeated in every piece; the other
    columns are packed, in order, into as many tables as the width needs. Where even the
    keys and one column do not fit, the rows are printed one value per line (``header:
    value``), which fits any width that fits the longest value.
    """

    title: str
    keys: Sequence[Col]
    values: Sequence[Col]
    caption: str | None = None
    show_lines: bool = False
    row_styles: Sequence[str | None] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.pieces(console, options.max_width)

    def pieces(self, console: Console, width: int) -> list[RenderableType]:
        """The tables (or the long layout) that show every column within ``width`` characters."""
        chunks: list[list[Col]] = []
        for column in self.values:
            if chunks and self._fits(console, width, [*chunks[-1], column]):
                chunks[-1].append(column)
            elif self._fits(console, width, [column]):
                chunks.append([column])
            else:
                return [self._long()]
        last = len(chunks) - 1
        # The title once, above the pieces: a narrow piece would wrap it over several lines.
        title = Text(self.title, style="table.title", overflow="fold")
        return [title, *(self._table(chunk, caption=i == last) for i, chunk in enumerate(chunks or [[]]))]

    def _fits(self, console: Console, width: int, columns: list[Col]) -> bool:
        table = self._table(columns, caption=False)
        # The minimum: numbers at full width (their min_width), prose at its longest word.
        return Measurement.get(console, console.options.update_width(10_000), table).minimum <= width

    def _table(self, columns: Sequence[Col], caption: bool) -> Table:
        table = Table(caption=self.caption if caption else None,
                      title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                      show_lines=self.show_lines)
        chosen = [*self.keys, *columns]
        headers = [c.header.splitlines() for c in chosen]
        lines = max((len(h) for h in headers), default=1)
        for column, header in zip(chosen, headers, strict=True):
            # Pad headers to one height: Rich aligns them at the bottom, names read top-down.
            table.add_column("\n".join(header + [""] * (lines - len(header))), justify=column.justify,
                             min_width=_column_width(column), no_wrap=not column.prose)
        styles = self.row_styles or [None] * len(self.keys[0].cells)
        for i, style in enumerate(styles):
            table.add_row(*[c.cells[i] for c in chosen], style=style)
        return table

    def _long(self) -> Text:
        """One value per line: ``layer 10`` then ``  std: 0.642``, for widths no table fits."""
        text = Text(self.title + "\n", style="bold")
        styles = self.row_styles or [None] * len(self.keys[0].cells)
        for i, style in enumerate(styles):
            head = ", ".join(f"{_one_line(k.header)} {_plain(k.cells[i])}" for k in self.keys)
            text.append(f"\n{head}\n", style=style or "bold")
            for column in self.values:
                text.append(f"  {_one_line(column.header)}: ")
                cell = column.cells[i]
                lines = (cell if isinstance(cell, Text) else Text(cell)).split("\n")
                text.append(Text(", ").join(lines))  # a multi-line cell on one line
                text.append("\n")
        if self.caption:
            text.append(f"\n{self.caption}\n")
        text.rstrip()
        return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _plain(cell: str | Text) -> str:
    return _one_line(cell.plain if isinstance(cell, Text) else cell)
