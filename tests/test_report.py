"""Terminal output is whole at any width: no number, header or name is ever cut (issue 9, item 1)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console, RenderableType
from typer.testing import CliRunner

from initlab import report, sweep
from initlab.activations import parse_activation
from initlab.cli import app
from initlab.config import load_config
from initlab.gain import gain_report, variance_map_fate
from initlab.runner import run
from tests.conftest import CONFIGS, ROOT

WIDTHS = [60, 80, 120]
RELU_XAVIER = [str(CONFIGS / "relu-xavier.yaml"), "--every", "33", "--no-save"]


def render(renderable: RenderableType, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return text


def assert_whole(out: str, expected: list[str], width: int) -> None:
    """Every expected string is a whole whitespace-separated word; nothing is cut or wider than ``width``."""
    assert "…" not in out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= width
    words = set(out.split())
    missing = [value for value in expected if value not in words]
    assert not missing, f"cut or missing: {missing}\n{out}"


def shown_values() -> list[str]:
    """The numbers of relu-xavier's table at --every 33, formatted independently of the table code."""
    result = run(load_config(CONFIGS / "relu-xavier.yaml"))
    rows = result.layers.iloc[[0, 33, 66, 99]]
    columns = ["weight_std", "pre_std", "std", "mean", "absmax", "zero", "dead"]
    values = [f"{v:.3g}" for c in columns for v in rows[c]]
    assert any("e-" in v for v in values)  # the exponents the issue saw cut
    return values + [str(v) for v in rows["layer"]]


@pytest.fixture(scope="module")
def relu_xavier_values() -> list[str]:
    return shown_values()


@pytest.mark.parametrize("width", WIDTHS)
def test_run_table_is_whole_at_every_width(width: int, relu_xavier_values: list[str]) -> None:
    result = CliRunner().invoke(app, ["run", *RELU_XAVIER], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    table = result.stdout.split("verdict:")[0]
    assert_whole(table, relu_xavier_values, width)
    for header in ("w std", "pre std", "max|x|", "nonfin", "zeros", "dead"):
        assert header in table


def test_run_table_is_whole_through_a_pipe(relu_xavier_values: list[str]) -> None:
    """Rich falls back to 80 columns when stdout is not a terminal: still no number is cut."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([sys.executable, "-m", "initlab.cli", "run", *RELU_XAVIER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # a pipe, not a terminal
    assert done.returncode == 0, done.stderr
    assert_whole(done.stdout.split("verdict:")[0], relu_xavier_values, 80)


def test_too_narrow_for_any_table_prints_one_value_per_line() -> None:
    table = report.FittedTable("t", [report.Col("layer", ["0", "1"])],
                               [report.Col("std", ["9.51e-16", "1.5"]), report.Col("max|x|", ["3.93e-15", "2"])])
    out = render(table, 16)
    assert_whole(out, ["9.51e-16", "3.93e-15", "1.5", "2"], 16)
    assert "  std: 9.51e-16" in out and "layer 1" in out


@pytest.fixture(scope="module")
def comparison() -> sweep.Comparison:
    base = sweep.base_config(None, depth=12, width=16)
    schemes = sweep.parse_schemes("xavier,kaiming,xavier:gain=auto,orthogonal,normal:std=0.5")
    plan = sweep.plan_sweep(base, schemes, sweep.parse_activations("tanh,relu,linear"), seeds=2)
    return sweep.run_sweep(plan)


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_tables_are_whole_at_every_width(width: int, comparison: sweep.Comparison) -> None:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    report.print_compare(console, comparison, None, None)
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    traces = comparison.traces[comparison.traces["layer"].isin(report.pick_layers(12, None))]
    medians = [f"{m:.3g}" if m != float("inf") else "nonfinite" for m in traces["median"]]
    growth = [f"x{g:.3g}/layer" for g in comparison.summary["growth_per_layer"].dropna()]
    names = ["kaiming_normal", "xavier_uniform", "orthogonal", "(gain=auto)", "(std=0.5)"]
    assert_whole(out, medians + growth + ["tanh", "relu", "linear"], width)
    for name in names:
        assert name in out


@pytest.mark.parametrize("width", [30, 60, 80])
def test_gain_tables_are_whole(width: int) -> None:
    tanh = gain_report(parse_activation("tanh"), samples=1000)
    out = render(report.gain_table(tanh), width)
    assert_whole(out, [f"{tanh.torch:.6g}", f"{tanh.second_moment:.6g}", f"{tanh.std_ratio:.6g}"], width)
    reports = [gain_report(parse_activation(name), samples=1000) for name in ("relu", "tanh", "leaky_relu")]
    out = render(report.gain_overview(reports), width)
    assert_whole(out, [f"{r.second_moment:.5g}" for r in reports] + ["leaky_relu", "1.4141"], width)


@pytest.mark.parametrize(
    ("activation", "gain", "expected"),
    [
        ("tanh", 5 / 3, "q*=1.178, stable: within 1e-9 of q* after 23 layers"),
        ("linear", 1.1, "explosion: q above 1e9 after 109 layers"),
        ("linear", 0.9, "vanishing: q below 1e-9 after 99 layers"),
        ("tanh", 1.0, "vanishing: q still above 1e-9 after 1000 layers"),
        ("relu", 2**0.5, "q*=1, marginal (slope V'(q*) = 1)"),
    ],
)
def test_gain_fate_says_what_the_layers_count(activation: str, gain: float, expected: str) -> None:
    assert report.fate_text(variance_map_fate(parse_activation(activation), gain)) == expected


def test_gain_fate_at_the_fixed_point_is_reached_at_once() -> None:
    tanh = gain_report(parse_activation("tanh"), samples=1000)
    assert report.fate_text(tanh.fates["second_moment"]) == "q*=1, stable: q0 is q*, reached at once"
