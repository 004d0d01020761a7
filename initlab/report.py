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

#: One colour per regime, shared by tables and plots.
COLOURS = {"explosion": "red", "vanishing": "blue", "stable": "green"}
PLOT_COLOURS = {"explosion": "#d62728", "vanishing": "#1f77b4", "stable": "#2ca02c"}

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
    """``verdict: stable`` plus the figures that justify it, coloured by regime."""
    regime = summary["regime"]
    text = Text("verdict: ", style="bold")
    text.append(regime.upper() + (" (non-finite)" if summary["nonfinite"] else ""), style=f"bold {COLOURS[regime]}")
    figures = [
        f"growth/layer x{fmt(summary['growth_per_layer'])}",
        f"last/first {fmt(summary['ratio'])}",
        f"trend t {fmt(summary['trend_t'], 3)}",
    ]
    if summary["first_nonfinite_layer"] is not None:
        figures.append(f"first non-finite layer {summary['first_nonfinite_layer']}")
    text.append("  " + ", ".join(figures))
    text.append(f"\n  {summary['reason']}", style="dim")
    return text


def print_run(console: Console, layers: pd.DataFrame, summary: dict[str, Any], every: int, folder: Path | None) -> None:
    """The terminal report of one study."""
    console.print(layer_table(layers, summary, every))
    console.print(verdict_line(summary))
    if folder is not None:
        console.print(f"results: {folder}")


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
    """Where the variance map takes q0, e.g. ``q*=1.178, stable (23 layers)``."""
    layers = "slowly" if fate.iterations is None else f"{fate.iterations} layers"
    if fate.kind in ("vanishing", "explosion"):
        return f"{fate.kind} ({layers})"
    if fate.kind == "fixed_point":
        return f"q*={fate.q:.4g}, stable ({layers})"
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
