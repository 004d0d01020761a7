"""Rendering for people (Rich tables and verdict lines) and for scripts (JSON documents)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from initlab.results import table_records, to_json

if TYPE_CHECKING:
    import pandas as pd

    from initlab.compare import Comparison

#: One colour per regime, shared by tables and plots.
COLOURS = {"explosion": "red", "vanishing": "blue", "saturated": "magenta", "stable": "green"}
PLOT_COLOURS = {"explosion": "#d62728", "vanishing": "#1f77b4", "saturated": "#9467bd", "stable": "#2ca02c"}

#: Table columns: (layers.csv column, header). Headers are short to fit 80 columns.
_COLUMNS = [
    ("layer", "layer"), ("weight_std", "w std"), ("pre_std", "pre std"), ("std", "std"), ("mean", "mean"),
    ("absmax", "max|x|"), ("nonfinite", "nonfin"), ("saturated", "satur."), ("zero", "zeros"), ("dead", "dead"),
]


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


def layer_table(layers: pd.DataFrame, summary: dict[str, Any], every: int = 1) -> Table:
    """The per-layer statistics as a Rich table."""
    columns = [(key, title) for key, title in _COLUMNS if key in layers.columns]
    table = Table(
        title=f"{summary['name']}: per-layer statistics",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for _, title in columns:
        table.add_column(title, justify="right")
    bad = summary.get("first_nonfinite_layer")
    for i in shown_rows(layers, every, [bad, summary.get("first_zero_layer")]):
        row = layers.iloc[i]
        style = "red" if bad is not None and i >= bad else None
        table.add_row(
            *[fmt(row[key], 0 if key in ("layer", "nonfinite") else 3) for key, _ in columns], style=style
        )
    return table


def verdict_line(summary: dict[str, Any]) -> Text:
    """The verdict, once: the regime and its figures, then one line saying why (and any notes)."""
    regime = summary["regime"]
    text = Text("verdict: ", style="bold")
    text.append(regime.upper() + (" (non-finite)" if summary["nonfinite"] else ""), style=f"bold {COLOURS[regime]}")
    text.append("  " + verdict_figures(summary))
    why = "; ".join([summary["reason"], *(summary.get("notes") or [])])
    text.append(f"\n  why: {why}", style="dim")
    return text


def verdict_figures(summary: dict[str, Any]) -> str:
    """``std x0.644 of the input's at layer 99 (-0.19 decades, x0.9956/layer)``; for a run that went
    non-finite, the figures are those of the last finite layer, named."""
    last = summary["last_finite_layer"]
    if last is None:
        return "no finite layer"
    reference = "the input's" if summary.get("input_std") is not None else "layer 0's"
    where = f"layer {last}" + (", the last finite one" if summary["nonfinite"] else "")
    decades = summary.get("decades")
    scale = [] if decades is None else [f"{decades:+.2f} decades"]
    if summary["growth_per_layer"] is not None:
        scale.append(f"x{fmt(summary['growth_per_layer'])}/layer")
    return f"std x{fmt(summary['ratio'], 3)} of {reference} at {where}" + (f" ({', '.join(scale)})" if scale else "")


def print_run(console: Console, layers: pd.DataFrame, summary: dict[str, Any], every: int, folder: Path | None) -> None:
    """The terminal report of one study."""
    console.print(layer_table(layers, summary, every))
    console.print(verdict_line(summary))
    if folder is not None:
        console.print(f"results: {folder}", soft_wrap=True)  # a path is never wrapped: it is copied


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


# ---------------------------------------------------------------- gain


_DEFINITION_TITLES = {"torch": "torch", "second_moment": "second moment", "std_ratio": "std ratio"}


def gain_table(report: Any) -> Table:
    """One activation's gains by every definition, with where each takes a deep net's variance."""
    table = Table(title=f"gain for {report.activation}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("definition")
    table.add_column("gain", justify="right")
    table.add_column("deep net, from q0 = 1")
    for name, title in _DEFINITION_TITLES.items():
        value = getattr(report, name)
        if value is None:
            table.add_row(title, "n/a", "not in calculate_gain's table")
            continue
        shown = f"{value:.6g}" + (f" ± {report.std_ratio_se:.2g}" if name == "std_ratio" else "")
        fate = report.fates[name]
        style = "green" if fate.stable else COLOURS.get(fate.kind, "yellow")
        table.add_row(title, shown, Text(_fate_text(fate), style=style))
    return table


def _fate_text(fate: Any) -> str:
    """Where the variance map takes q0, saying what the layer count counts: ``q*=1.178, stable:
    reached in 23 layers`` (within 1e-9), ``vanishing: q < 1e-9 q0 by layer 55``."""
    if fate.kind in ("vanishing", "explosion"):
        if fate.iterations is None:
            return f"{fate.kind}, slowly (a power law)"
        bound = "q < 1e-9 q0" if fate.kind == "vanishing" else "q > 1e9 q0"
        return f"{fate.kind}: {bound} by layer {fate.iterations}"
    if fate.kind == "fixed_point":
        reached = ("q0 is already q*" if fate.iterations == 0 else "approached slowly" if fate.iterations is None
                   else f"reached in {fate.iterations} layers")
        return f"q*={fate.q:.4g}, stable: {reached}"
    return f"q*={fate.q:.4g}, {fate.kind} (slope {fate.slope:.3g})"


def gain_explanation(report: Any) -> Text:
    return Text(report.explanation, style="dim")


def gain_overview(reports: Sequence[Any]) -> Table:
    """Every activation in one table that reads in 80 columns."""
    table = Table(
        title="gain by definition", caption="auto: the variance fixed point q* at the gain `auto` picks",
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )
    for title in ("activation", "torch", "2nd moment", "std ratio", "auto"):
        table.add_column(title, justify="left" if title in ("activation", "auto") else "right")
    for report in reports:
        auto = "torch" if report.torch is not None else "second_moment"
        table.add_row(
            report.activation,
            f"{report.torch:.5g}" if report.torch is not None else "n/a",
            f"{report.second_moment:.5g}",
            f"{report.std_ratio:.4g}",
            _short_fate(report.fates[auto]),
        )
    return table


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
    """One matrix cell: the verdict, growth per layer, first non-finite layer, seed agreement."""
    if row["status"] == "failed":
        return Text("FAILED", style="bold yellow")
    if row["regime"] is None:
        return Text("not run", style="dim")
    style = COLOURS[row["regime"]]
    text = Text(row["regime"].upper(), style=f"bold {style}")
    text.append(f"\nx{fmt(row['growth_per_layer'], 3)}/layer", style=style)
    if row["first_nonfinite_layer"] is not None:
        text.append(f"\nnonfinite@{row['first_nonfinite_layer']}", style=style)
    if row["seeds"] > 1:
        text.append(f"\n{row['agree']}/{row['finished']} seeds agree", style=style)
        if row["finished"] < row["seeds"]:
            text.append(f" ({row['seeds'] - row['finished']} not run)", style="dim")
    return text


def _rows(summary: pd.DataFrame) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Summary rows by (scheme, activation, depth, width), missing values as None."""
    records = table_records(summary)
    return {(r["scheme"], r["activation"], r["depth"], r["width"]): r for r in records}


def _shapes(axes: dict[str, list[Any]]) -> list[tuple[int, int]]:
    return [(depth, width) for depth in axes["depths"] for width in axes["widths"]]


def compare_matrices(summary: pd.DataFrame, axes: dict[str, list[Any]]) -> list[Table]:
    """The regime matrix, rows schemes and columns activations; one per (depth, width)."""
    rows = _rows(summary)
    seeds = len(axes["seeds"])
    tables = []
    for depth, width in _shapes(axes):
        title = f"regime matrix: depth {depth}, width {width}, {seeds} seed{'s' if seeds > 1 else ''}"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_lines=True,
                      min_width=len(title))
        table.add_column("scheme")
        for activation in axes["activations"]:
            table.add_column(activation)
        for scheme in axes["schemes"]:
            cells = [cell_text(rows[(scheme, activation, depth, width)]) for activation in axes["activations"]]
            table.add_row(_break_label(scheme), *cells)
        tables.append(table)
    return tables


def compare_failures(summary: pd.DataFrame, axes: dict[str, list[Any]]) -> Text | None:
    """One line per failed scheme and error, naming the cells it failed in; None when nothing failed."""
    groups: dict[tuple[str, str], list[str]] = {}
    several = len(_shapes(axes)) > 1
    for r in table_records(summary):
        if r["status"] == "failed":
            where = r["activation"] + (f" (depth {r['depth']}, width {r['width']})" if several else "")
            groups.setdefault((r["scheme"], r["error"]), []).append(where)
    if not groups:
        return None
    text = Text()
    for (scheme, error), cells in groups.items():
        text.append("failed: ", style="bold yellow")
        text.append(f"{scheme} with {', '.join(cells)}: {error}\n")
    text.rstrip()
    return text


def compare_notes(summary: pd.DataFrame, axes: dict[str, list[Any]]) -> Text | None:
    """One line per cell worth a second look: seeds that disagree, a theory that disagrees or does not
    apply, finite width, dead units; the line gives the seeds' spread and the verdict's notes."""
    text = Text()
    several = len(_shapes(axes)) > 1
    for r in table_records(summary):
        if r["regime"] is None or not r["notes"]:
            continue
        split = r["agree"] is not None and r["agree"] < r["finished"]
        if not (split or r["theory_agrees"] is not True or "finite width" in r["notes"] or "dead" in r["notes"]):
            continue
        where = f"{r['scheme']} + {r['activation']}" + (f" (depth {r['depth']}, width {r['width']})" if several else "")
        text.append(f"{where}: ", style="bold")
        text.append(f"{r['regime'].upper()}, {r['agree']}/{r['finished']} seeds agree; {r['notes']}\n")
    text.rstrip()
    return text if text.plain else None


def pick_layers(depth: int, chosen: Sequence[int] | None) -> list[int]:
    """Layers of the side-by-side table: ``chosen`` (negative from the end) or 0, 1, 10%, 50%, last."""
    if chosen is None:
        chosen = [0, 1, depth // 10, depth // 2, depth - 1]
    return sorted({layer % depth for layer in chosen if -depth <= layer < depth})


def std_tables(
    traces: pd.DataFrame, axes: dict[str, list[Any]], chosen: Sequence[int] | None, width: int
) -> list[Table]:
    """Median block-output std at a few layers, one column per cell, split to fit ``width`` columns."""
    tables = []
    for depth, net_width in _shapes(axes):
        layers = pick_layers(depth, chosen)
        shape = traces[(traces["depth"] == depth) & (traces["width"] == net_width)]
        median = {(s, a, int(layer)): m for s, a, layer, m in
                  zip(shape["scheme"], shape["activation"], shape["layer"], shape["median"], strict=True)}
        drawn = set(zip(shape["scheme"], shape["activation"], strict=True))
        cells = [(s, a) for a in axes["activations"] for s in axes["schemes"] if (s, a) in drawn]
        if not cells:  # every cell of this shape failed: nothing to tabulate
            continue
        title = f"std by layer (median over seeds): depth {depth}, width {net_width}"
        for chunk in _fit(cells, width):
            headers = [[activation, *_break_label(scheme).splitlines()] for scheme, activation in chunk]
            lines = max(len(h) for h in headers)
            table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                          min_width=len(title))
            table.add_column("layer", justify="right", vertical="bottom")
            for header in headers:  # pad to equal height: Rich aligns headers at the bottom
                table.add_column("\n".join(header + [""] * (lines - len(header))), justify="right")
            for layer in layers:
                table.add_row(str(layer), *[_std_text(median.get((s, a, layer))) for s, a in chunk])
            tables.append(table)
    return tables


def _break_label(label: str) -> str:
    """``xavier_uniform(gain=auto)`` over two lines, so columns stay narrow."""
    name, paren, rest = label.partition("(")
    return f"{name}\n{paren}{rest}" if paren else name


def _fit(cells: list[tuple[str, str]], width: int) -> list[list[tuple[str, str]]]:
    """Consecutive groups of cells whose columns fit in ``width`` characters next to the layer column."""
    chunks: list[list[tuple[str, str]]] = [[]]
    used = len("layer")
    for scheme, activation in cells:
        need = 2 + max(9, len(activation), *(len(line) for line in _break_label(scheme).splitlines()))
        if chunks[-1] and used + need > width:
            chunks.append([])
            used = len("layer")
        chunks[-1].append((scheme, activation))
        used += need
    return chunks


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
    axes = comparison.plan.axes
    for table in compare_matrices(comparison.summary, axes):
        console.print(table)
    failures = compare_failures(comparison.summary, axes)
    if failures is not None:
        console.print(failures)
        console.print()
    notes = compare_notes(comparison.summary, axes)
    if notes is not None:
        console.print(notes)
        console.print()
    for table in std_tables(comparison.traces, axes, layers, console.width):
        console.print(table)
    if folder is not None:
        console.print(f"results: {folder}", soft_wrap=True)  # a path is never wrapped: it is copied


def compare_json(comparison: Comparison, folder: Path | None) -> str:
    """The ``--json`` document of a comparison."""
    return to_json(
        {
            "axes": comparison.plan.axes,
            "summary": table_records(comparison.summary),
            "failed": comparison.failed,
            "cells": [run.as_dict() for run in comparison.plan.runs],
            "layers": table_records(comparison.layers),
            "results_dir": str(folder) if folder is not None else None,
        }
    )
