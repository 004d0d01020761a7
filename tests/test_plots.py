"""Figures: colour is the scheme in every panel, the verdict is the line style, panels share y;
``initlab run`` writes the std plot and the histogram picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import matplotlib.lines
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from initlab import plots, sweep
from initlab.cli import app
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def comparison() -> sweep.Comparison:
    base = sweep.base_config(None, depth=10, width=16)
    plan = sweep.plan_sweep(base, sweep.parse_schemes("xavier,kaiming,normal:std=1"),
                              sweep.parse_activations("tanh,relu,linear"), widths=[16, 24], seeds=2)
    return sweep.run_sweep(plan)


def drawn_lines(ax) -> list:  # type: ignore[no-untyped-def]
    """The measured traces of a panel (lines with more than one point: markers are single points;
    not the thin dashed predictions)."""
    return [line for line in ax.get_lines()
            if len(line.get_xdata()) > 1 and line.get_linewidth() != plots.PREDICTED_WIDTH]


def test_colour_is_the_scheme_and_line_style_the_verdict_in_every_panel(comparison: sweep.Comparison) -> None:
    figure = plots.std_figure(comparison)
    axes = comparison.plan.axes
    regimes = {(r.scheme, r.activation, r.width): r.regime for r in comparison.summary.itertuples()}
    panels = figure.axes
    assert len(panels) == len(axes["activations"]) * len(axes["widths"])
    for panel, (width, activation) in zip(panels, [(w, a) for w in axes["widths"] for a in axes["activations"]],
                                          strict=True):
        lines = drawn_lines(panel)
        assert len(lines) == len(axes["schemes"])
        for i, (scheme, line) in enumerate(zip(axes["schemes"], lines, strict=True)):
            assert matplotlib.colors.to_hex(line.get_color()) == plots.SCHEME_COLOURS[i]
            style = plots.VERDICT_STYLES[regimes[(scheme, activation, width)]][0]
            expected = matplotlib.lines.Line2D([], [], linestyle=style).get_linestyle()
            assert line.get_linestyle() == expected
    # The verdicts differ across the panels, so colour cannot have been the verdict.
    assert len({r for r in regimes.values()}) >= 3


def test_legend_explains_schemes_and_verdicts_and_panels_share_y(comparison: sweep.Comparison) -> None:
    figure = plots.std_figure(comparison)
    (legend,) = figure.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:3] == comparison.plan.axes["schemes"]
    assert {"verdict: stable", "verdict: vanishing", "verdict: explosion"} <= set(labels)
    limits = {panel.get_ylim() for panel in figure.axes}
    assert len(limits) == 1
    title = figure.get_suptitle()
    assert "depth 10" in title and "width 16, 24" in title and "2 seeds" in title and "share the y axis" in title


def test_run_writes_the_std_plot_and_the_histogram(tmp_path: Path) -> None:
    import matplotlib.image

    args = ["run", str(CONFIGS / "relu-xavier.yaml"), "model.depth=20", "--out", str(tmp_path)]
    for out in ("a", "b"):
        result = CliRunner().invoke(app, [*args[:-1], str(tmp_path / out)], env={"COLUMNS": "120"})
        assert result.exit_code == 0, result.output
    folders = [next((tmp_path / out / "relu-xavier").iterdir()) for out in ("a", "b")]
    names = {p.name for p in folders[0].iterdir()}
    assert {"std.png", "std.svg", "histogram.png", "histogram.csv", "layers.csv"} <= names
    for name in ("std.svg", "std.png", "histogram.png", "histogram.csv", "layers.csv"):  # reproducible
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    assert matplotlib.image.imread(folders[0] / "histogram.png").ndim == 3
    histogram = pd.read_csv(folders[0] / "histogram.csv")
    assert list(histogram.columns) == ["layer", "site", "bin_low", "bin_high", "count"]
    assert (histogram.groupby("layer")["count"].sum() == 16 * 256).all() and histogram["layer"].nunique() == 20
    # The vanishing signal and the zeros of ReLU are both in the picture's data.
    assert histogram["bin_low"].iloc[0] == 0 and histogram["bin_low"].min() == 0
    positive = histogram[histogram["bin_low"] > 0]
    assert np.log2(positive["bin_low"]).max() - np.log2(positive["bin_low"]).min() > 20


def test_histogram_figure_labels_its_axes_and_bands() -> None:
    import initlab
    from initlab.config import load_config

    result = initlab.run(load_config(CONFIGS / "linear-normal.yaml", ["model.depth=40"]))
    assert result.histogram is not None
    figure = plots.histogram_figure(result.histogram, "linear-normal, depth 40, width 256, seed 1")
    ax = figure.axes[0]
    assert "log10 |x|" in ax.get_ylabel() and "powers of 2" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "inf/NaN"
    assert ax.get_xlabel() == "layer"


def test_every_regime_has_a_line_style_and_a_colour() -> None:
    from initlab.plots import VERDICT_STYLES
    from initlab.regimes import REGIMES
    from initlab.report import COLOURS

    assert set(REGIMES) <= set(VERDICT_STYLES)
    assert set(REGIMES) <= set(COLOURS)


def test_zero_and_nonfinite_bands_are_visible_on_a_wide_axis() -> None:
    """Over 40 decades, one bin's height (0.3 decades) would hide a layer that is all inf/NaN."""
    low = np.array([0.0, *(2.0 ** np.arange(-20, 110)), np.nan])
    high = np.array([2.0**-126, *(2.0 ** np.arange(-19, 111)), np.nan])
    edges, _, bands = plots._bin_edges(low, high)
    span = edges[-1] - edges[0]
    assert edges[1] - edges[0] >= 0.08 * span and edges[-1] - edges[-2] >= 0.08 * span
    assert [label for _, _, label in bands] == ["< 2^-126", "inf/NaN"]
