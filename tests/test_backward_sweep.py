"""The backward signal in ``compare`` and ``run --seeds``: the median gradient trace's verdict, its columns,
the matrix's two verdicts per cell, the gradient table and the grad figure."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.colors
import matplotlib.lines
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import initlab
from initlab import plots, report, sweep
from initlab.cli import app
from initlab.config import load_config
from initlab.gradient_theory import backward_theory_summary
from initlab.regimes import Trace, judge_backward
from initlab.seeds import run_seeds
from tests.conftest import CONFIGS

#: Depth 50, width 64, seeds 0-2: every seed of every cell gives these verdicts (measured: seeds 0-7 all agree).
EXPECTED = {  # (scheme, activation): (forward, backward)
    ("xavier_uniform", "tanh"): ("vanishing", "vanishing"),
    ("xavier_uniform", "relu"): ("vanishing", "vanishing"),  # the gradient reaching layer 0: ~4e-8 of upstream
    ("kaiming_normal", "tanh"): ("stable", "explosion"),  # gain 5/3, no bias: chaotic, chi ~ 1.21 per layer
    ("kaiming_normal", "relu"): ("stable", "stable"),
    ("xavier_uniform(gain=auto)", "tanh"): ("stable", "explosion"),  # the surprise of issue 11
    ("xavier_uniform(gain=auto)", "relu"): ("stable", "stable"),
}
BACKWARD_COLUMNS = ["backward_regime", "backward_agree", "backward_ratio", "backward_growth_per_layer",
                    "backward_first_nonfinite_layer", "backward_theory_regime", "backward_theory_agrees",
                    "backward_reason", "backward_notes"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[sweep.Comparison, Path]:
    base = sweep.base_config(None, depth=50, width=64)
    plan = sweep.plan_sweep(base, sweep.parse_schemes("xavier,kaiming,xavier:gain=auto"),
                              sweep.parse_activations("tanh,relu"), seeds=3)
    folder = sweep.SweepFolder.create(
        tmp_path_factory.mktemp("sweep"), plan, ["initlab", "compare"], plots.std_plot_files
    )
    return sweep.run_sweep(plan, folder), folder.path


def test_each_cell_gets_the_known_backward_verdict_and_every_seed_agrees(
    swept: tuple[sweep.Comparison, Path],
) -> None:
    summary = swept[0].summary
    got = {(r.scheme, r.activation): (r.regime, r.backward_regime) for r in summary.itertuples()}
    assert got == EXPECTED
    assert summary["backward_agree"].tolist() == [3] * 6
    assert summary["backward_theory_agrees"].tolist() == [True] * 6  # the mean-field backward map agrees
    relu = summary[(summary["scheme"] == "xavier_uniform") & (summary["activation"] == "relu")].iloc[0]
    assert relu["backward_ratio"] < 1e-6  # the gradient reaching layer 0, against the upstream one
    assert relu["backward_ratio_low"] <= relu["backward_ratio"] <= relu["backward_ratio_high"]


def test_summary_csv_has_the_backward_columns_with_nullable_dtypes(swept: tuple[sweep.Comparison, Path]) -> None:
    comparison, folder = swept
    summary = comparison.summary
    assert set(BACKWARD_COLUMNS) <= set(summary.columns)
    dtypes = summary.dtypes.astype(str)
    assert dtypes["backward_agree"] == "Int64" and dtypes["backward_first_nonfinite_layer"] == "Int64"
    assert dtypes["backward_theory_agrees"] == "boolean" and dtypes["backward_nonfinite"] == "boolean"
    assert dtypes["backward_ratio"] == "float64" and dtypes["backward_growth_per_layer"] == "float64"
    assert summary["backward_first_nonfinite_layer"].isna().all()  # nothing overflowed: empty, not "nan"
    written = pd.read_csv(folder / "summary.csv")
    assert written["backward_regime"].tolist() == summary["backward_regime"].tolist()
    np.testing.assert_array_equal(written["backward_ratio"], summary["backward_ratio"])
    text = (folder / "summary.csv").read_text()
    assert "nan" not in text.lower().replace("nonfinite", "") and "<NA>" not in text
    doc = json.loads(report.compare_json(comparison, folder))  # --json: the same columns
    assert [row["backward_regime"] for row in doc["summary"]] == summary["backward_regime"].tolist()
    assert doc["traces"][0]["grad_median"] == comparison.traces["grad_median"].iloc[0]


def test_traces_hold_the_median_gradient_trace_its_band_and_prediction(
    swept: tuple[sweep.Comparison, Path],
) -> None:
    comparison, folder = swept
    layers, traces = comparison.layers, comparison.traces
    for (scheme, activation), cell in traces.groupby(["scheme", "activation"], sort=False):
        seeds = layers[(layers["scheme"] == scheme) & (layers["activation"] == activation)]
        rms = seeds.pivot(index="layer", columns="seed", values="grad_rms").to_numpy()  # (layers, seeds)
        assert cell["grad_median"].tolist() == np.median(rms, axis=1).tolist()
        assert cell["grad_low"].tolist() == rms.min(axis=1).tolist()
        assert cell["grad_high"].tolist() == rms.max(axis=1).tolist()
        first = seeds[seeds["seed"] == 0]["theory_grad_rms"].to_numpy()
        np.testing.assert_array_equal(cell["theory_grad_rms"].to_numpy(), first)
    written = pd.read_csv(folder / "traces.csv")
    np.testing.assert_array_equal(written["grad_median"], traces["grad_median"])


def render(comparison: sweep.Comparison, columns: int) -> str:
    console = Console(width=columns, file=io.StringIO(), color_system=None)
    report.print_compare(console, comparison, None, None)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


@pytest.mark.parametrize("columns", [60, 120])
def test_matrix_cells_show_both_verdicts_whole_at_any_width(
    swept: tuple[sweep.Comparison, Path], columns: int
) -> None:
    comparison = swept[0]
    out = render(comparison, columns)
    assert max(len(line) for line in out.splitlines()) <= columns and "…" not in out
    for row in report.table_records(comparison.summary):
        for label, prefix in (("fwd", ""), ("bwd", "backward_")):
            words = f"{label} {row[prefix + 'regime'].upper()} x{report.fmt(row[prefix + 'growth_per_layer'], 3)}/layer"
            assert words in out
    assert out.count("seeds agree: fwd 3/3, bwd 3/3") == 6


def test_the_gradient_table_follows_the_std_table(swept: tuple[sweep.Comparison, Path]) -> None:
    comparison = swept[0]
    out = render(comparison, 120)
    assert out.index("std by layer (median over seeds)") < out.index("gradient rms by layer (median over seeds)")
    gradients = out[out.index("gradient rms by layer"):]
    rows = {line.split()[0]: line.split()[1:] for line in gradients.splitlines() if line.strip()[:1].isdigit()}
    assert list(rows) == ["0", "1", "5", "25", "49"]
    traces = comparison.traces[comparison.traces["layer"] == 0]
    first = {(s, a): v for s, a, v in zip(traces["scheme"], traces["activation"], traces["grad_median"], strict=True)}
    axes = comparison.plan.axes  # columns: activations, then schemes
    assert rows["0"] == [report.fmt(first[(s, a)], 3) for a in axes["activations"] for s in axes["schemes"]]


def grad_lines(ax) -> list:  # type: ignore[no-untyped-def]
    return [line for line in ax.get_lines()
            if len(line.get_xdata()) > 1 and line.get_linewidth() != plots.PREDICTED_WIDTH]


def test_the_grad_figure_draws_the_backward_verdicts_and_the_prediction(
    swept: tuple[sweep.Comparison, Path],
) -> None:
    comparison, folder = swept
    figure = plots.grad_figure(comparison)
    assert figure is not None and "gradient rms by layer" in figure.get_suptitle()
    summary = comparison.summary
    regimes = {(r.scheme, r.activation): r.backward_regime for r in summary.itertuples()}
    for panel, activation in zip(figure.axes, comparison.plan.axes["activations"], strict=True):
        assert panel.get_ylabel() == plots.BACKWARD.ylabel and panel.get_yscale() == "log"
        lines = grad_lines(panel)
        for i, (scheme, line) in enumerate(zip(comparison.plan.axes["schemes"], lines, strict=True)):
            assert matplotlib.colors.to_hex(line.get_color()) == plots.SCHEME_COLOURS[i]  # the std figure's colours
            style = plots.VERDICT_STYLES[regimes[(scheme, activation)]][0]
            assert line.get_linestyle() == matplotlib.lines.Line2D([], [], linestyle=style).get_linestyle()
            assert line.get_xdata()[-1] == 0  # the gradient travels down: the line ends at layer 0
        predicted = [line for line in panel.get_lines() if line.get_linewidth() == plots.PREDICTED_WIDTH]
        assert len(predicted) == len(comparison.plan.axes["schemes"])
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert {"verdict: explosion", "verdict: vanishing", "verdict: stable", "dashed thin: mean-field prediction"} \
        <= set(labels)
    assert (folder / "grad.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(folder / "grad.svg").getroot().tag.endswith("svg")


def test_an_x_marks_the_lowest_finite_layer_above_non_finite_gradients() -> None:
    inf = float("inf")
    traces = pd.DataFrame({"scheme": "s", "activation": "a", "depth": 5, "width": 4, "layer": range(5),
                           "seeds": 1, "median": [1.0] * 5, "low": [1.0] * 5, "high": [1.0] * 5,
                           "grad_median": [inf, inf, 4.0, 2.0, 1.0], "grad_low": np.nan, "grad_high": np.nan})
    summary = pd.DataFrame({"scheme": ["s"], "activation": ["a"], "depth": [5], "width": [4], "regime": ["stable"],
                            "backward_regime": ["explosion"]})
    axes = {"schemes": ["s"], "activations": ["a"], "depths": [5], "widths": [4], "seeds": [0]}
    figure = plots.trace_figure("t", traces, summary, axes, plots.BACKWARD)
    markers = {line.get_marker(): (list(line.get_xdata()), list(line.get_ydata()))
               for line in figure.axes[0].get_lines() if len(line.get_xdata()) == 1}
    assert markers["x"] == ([2], [4.0]) and markers["^"] == ([2], [4.0])  # explosion's end marker, where it stops
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert plots.BACKWARD.overflow in labels


def test_without_a_backward_pass_the_columns_are_empty_and_there_is_no_grad_figure(tmp_path: Path) -> None:
    base = sweep.base_config(None, depth=6, width=16, overrides=["backward=false"])
    plan = sweep.plan_sweep(base, sweep.parse_schemes("xavier,kaiming"), sweep.parse_activations("tanh"),
                              seeds=2)
    folder = sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files)
    comparison = sweep.run_sweep(plan, folder)
    summary = comparison.summary
    assert set(BACKWARD_COLUMNS) <= set(summary.columns) and summary[BACKWARD_COLUMNS].isna().all().all()
    assert summary["regime"].notna().all()  # the forward verdicts are there
    assert not any(c.startswith("grad_") or c == "theory_grad_rms" for c in comparison.traces.columns)
    assert plots.grad_figure(comparison) is None and report.std_tables(comparison.traces, plan.axes, None,
                                                                       "backward") == []
    assert {p.name for p in folder.path.iterdir()} >= {"std.png", "summary.csv", "traces.csv"}
    assert not (folder.path / "grad.png").exists() and not (folder.path / "grad.svg").exists()
    out = render(comparison, 80)
    assert "bwd" not in out and "gradient rms" not in out and "2/2 seeds agree" in out


def by_hand(name: str, overrides: list[str], seeds: int) -> tuple[list[initlab.Result], Trace, list[float]]:
    """Every seed's run, the median gradient trace from the last block down, and the prediction."""
    runs = [initlab.run(load_config(CONFIGS / f"{name}.yaml", [*overrides, f"seed={1 + i}"])) for i in range(seeds)]
    rms = np.stack([r.layers["grad_rms"].to_numpy(np.float64) for r in runs])  # (seeds, layers)
    bad = np.stack([(r.layers["grad_nonfinite"] + r.layers["pre_grad_nonfinite"]).to_numpy() > 0 for r in runs])
    median = np.median(np.where(bad | np.isnan(rms), np.inf, rms), axis=0)[::-1]  # the last block first
    depth = len(median)
    trace = Trace(std=[float(m) if np.isfinite(m) else None for m in median],
                  nonfinite=[0 if np.isfinite(m) else 1 for m in median], layers=list(range(depth - 1, -1, -1)),
                  width=runs[0].config.model.width, signal="backward")
    return runs, trace, runs[0].layers["theory_grad_rms"].tolist()


@pytest.mark.parametrize(("name", "overrides"), [("tanh-xavier", ["model.depth=30", "model.width=32"]),
                                                 ("linear-normal", ["model.depth=80", "model.width=16"])])
def test_the_seeds_study_backward_verdict_is_that_of_a_median_by_hand(name: str, overrides: list[str]) -> None:
    config = load_config(CONFIGS / f"{name}.yaml", overrides)
    study = run_seeds(config, 3)
    runs, trace, predicted = by_hand(name, overrides, 3)
    assert [r.config.seed for r in runs] == study.seeds
    theory = backward_theory_summary(runs[0].summary["theory"], "normal", config.model.activation)
    expected = judge_backward(trace, config.verdict, predicted if np.isfinite(predicted).any() else None, theory,
                              float(np.finfo(np.float32).max))
    assert study.backward == expected
    assert study.backward_agree == sum(r.backward is not None and r.backward.regime == expected.regime for r in runs)
    assert study.summary["backward"]["regime"] == expected.regime
    assert study.summary["backward"]["seed_regimes"] == [r.backward.regime for r in runs if r.backward]
    assert study.traces["grad_median"].tolist()[::-1] == [np.inf if s is None else s for s in trace.std]


def test_the_classic_outcomes_of_the_seeds_study() -> None:
    tanh = run_seeds(load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=30", "model.width=32"]), 3)
    linear = run_seeds(load_config(CONFIGS / "linear-normal.yaml", ["model.depth=80", "model.width=16"]), 3)
    assert (tanh.verdict.regime, tanh.backward and tanh.backward.regime) == ("stable", "explosion")
    assert linear.backward is not None and linear.backward.regime == "explosion" and linear.backward.nonfinite


def test_cli_run_seeds_prints_and_saves_the_backward_median(tmp_path: Path) -> None:
    args = ["run", str(CONFIGS / "relu-xavier.yaml"), "model.depth=15", "model.width=32", "--seeds", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "grad rms" in result.stdout and "the backward verdict is the median gradient trace's" in result.stdout
    (folder,) = (tmp_path / "relu-xavier").iterdir()
    assert {"std.png", "std.svg", "grad.png", "grad.svg", "traces.csv"} <= {p.name for p in folder.iterdir()}
    traces = pd.read_csv(folder / "traces.csv")
    assert {"grad_median", "grad_low", "grad_high", "theory_grad_rms"} <= set(traces.columns)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["backward"]["regime"] == "vanishing" and summary["backward"]["agree"] == 2

    off = CliRunner().invoke(app, [*args, "backward=false", "--out", str(tmp_path / "off")], env={"COLUMNS": "100"})
    assert off.exit_code == 0, off.output
    (folder,) = (tmp_path / "off" / "relu-xavier").iterdir()
    assert not (folder / "grad.png").exists() and "grad_median" not in pd.read_csv(folder / "traces.csv").columns
    assert json.loads((folder / "summary.json").read_text())["backward"] is None
    assert "grad rms" not in off.stdout
