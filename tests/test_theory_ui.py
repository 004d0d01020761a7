"""What a user sees of the mean-field theory (issue 10): the predicted columns and the theory line
of ``run``, the dashed predicted traces of the plots, and ``initlab theory``'s help and refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from initlab import plots, sweep, theory
from initlab.cli import app
from initlab.config import load_config
from initlab.runner import run
from initlab.seeds import run_seeds
from tests.conftest import CONFIGS, ROOT
from tests.test_report import WIDTHS, assert_whole


def invoke(*args: str, columns: int = 100) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- initlab theory


def test_theory_help_shows_metavars_not_python_types() -> None:
    code, out, _ = invoke("theory", "--help")
    assert code == 0
    assert "Usage: initlab theory [OPTIONS] ACTIVATION\n" in out
    assert re.search(r"^\s+ACTIVATION\s+Activation name", out, re.MULTILINE)
    assert "--param NAME=VALUE" in out and "--depth N " in out and "--sw2 NUMBER" in out and "--out DIR" in out
    leaks = re.findall(r"<[^>]*>|\{[^}]*\}", out)  # <list[str]>, <int range>, {activation}
    assert not leaks, leaks


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_theory_phase_refuses_an_uncreatable_out_before_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the diagram was computed before --out was checked")

    monkeypatch.setattr(theory, "phase_diagram", never)
    code, out, err = invoke("theory", "tanh", "--phase", "--out", "/proc/initlab-x")
    assert code == 2, err
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: ") and "/proc/initlab-x" in err


# ---------------------------------------------------------------- initlab run


TANH_XAVIER = [str(CONFIGS / "tanh-xavier.yaml"), "--every", "33", "--no-save"]


def tanh_xavier_theory() -> tuple[float, float, float]:
    """q*, χ₁ and ξ_c of tanh with σw² = (5/3)², σb² = 0, from q0 = E[x²] = 1, by Gauss–Hermite
    quadrature written here (an independent route to initlab.theory's)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(201)
    weights = weights / weights.sum()  # E[f(z)], z ~ N(0, 1)
    sw2, q = 25 / 9, 1.0 * 25 / 9  # q0 = σw²·E[x²]
    for _ in range(2000):
        q = sw2 * float(weights @ np.tanh(np.sqrt(q) * nodes) ** 2)
    sech2 = 1 / np.cosh(np.sqrt(q) * nodes) ** 2
    chi1 = sw2 * float(weights @ sech2**2)
    chi_c = sw2 * float(weights @ sech2) ** 2  # at c* = 0: E[φ′(u₁)φ′(u₂)] = E[φ′(u)]²
    return q, chi1, -1 / np.log(chi_c)


@pytest.fixture(scope="module")
def predicted() -> list[str]:
    """The predicted pre and post std at the shown layers, formatted here."""
    rows = run(load_config(CONFIGS / "tanh-xavier.yaml")).layers.iloc[[0, 33, 66, 99]]
    return [f"{v:.3g}" for column in ("theory_pre_std", "theory_std") for v in rows[column]]


@pytest.mark.parametrize("width", WIDTHS)
def test_run_shows_the_prediction_beside_the_measurement_whole(width: int, predicted: list[str]) -> None:
    code, out, err = invoke("run", *TANH_XAVIER, columns=width)
    assert code == 0, err
    table = out.split("forward:")[0]
    assert_whole(table, predicted, width)
    headers = " ".join(line for line in table.splitlines() if "layer" in line or "theory" in line)
    assert "pre std pre std std std" in " ".join(headers.split())  # measured, then its prediction


def test_run_prints_the_theory_line_after_the_verdict() -> None:
    q, chi1, xi_c = tanh_xavier_theory()
    code, out, _ = invoke("run", *TANH_XAVIER, columns=200)
    assert code == 0
    after = out.split("forward:")[1]
    line = next(line for line in after.splitlines() if line.startswith("theory:"))
    assert f"q* = {q:.6g}, χ₁ = {chi1:.6g}, phase chaotic, ξ_c = {xi_c:.6g} layers" in line


def test_run_theory_line_through_a_pipe_is_whole(predicted: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([sys.executable, "-m", "initlab.cli", "run", *TANH_XAVIER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # a pipe: 80 columns
    assert done.returncode == 0, done.stderr
    q, chi1, _ = tanh_xavier_theory()
    assert_whole(done.stdout, [*predicted, f"{q:.6g},", f"{chi1:.6g},"], 80)


def test_run_where_the_theory_does_not_apply_says_why_and_shows_no_prediction() -> None:
    code, out, _ = invoke("run", *TANH_XAVIER, "init.scheme=constant", "init.val=0.01", columns=120)
    assert code == 0
    assert "theory\n" not in out.split("forward:")[0] + "\n"
    assert re.search(r"^theory: does not apply: .*constant", out.split("forward:")[1], re.MULTILINE)


def test_run_seeds_shows_the_predicted_std_and_the_theory_line() -> None:
    code, out, _ = invoke("run", *TANH_XAVIER, "--seeds", "2", "model.depth=12", columns=120)
    assert code == 0
    expected = run(load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=12"])).layers["theory_std"]
    table, after = out.split("forward:")
    rows = {line.split()[0]: line.split() for line in table.splitlines() if re.match(r"^\s*\d+\s", line)}
    assert rows["11"][2] == f"{expected.iloc[11]:.3g}"  # layer, median std, then the prediction
    assert re.search(r"^theory: q\* = [\d.]+, χ₁ = ", after, re.MULTILINE)


# ---------------------------------------------------------------- compare and plots


@pytest.fixture(scope="module")
def small_comparison() -> sweep.Comparison:
    base = sweep.base_config(None, depth=6, width=16)
    schemes = sweep.parse_schemes("xavier:gain=auto,constant:val=0.01")
    return sweep.run_sweep(sweep.plan_sweep(base, schemes, sweep.parse_activations("tanh"), seeds=2))


def test_median_traces_carry_the_prediction_of_each_cell(small_comparison: sweep.Comparison) -> None:
    traces, layers = small_comparison.traces, small_comparison.layers
    for scheme, applies in (("xavier_uniform(gain=auto)", True), ("constant(val=0.01)", False)):
        got = traces[traces["scheme"] == scheme].sort_values("layer")["theory_std"].to_numpy(np.float64)
        seed0 = layers[(layers["scheme"] == scheme) & (layers["seed"] == layers["seed"].min())]
        expected = seed0.sort_values("layer")["theory_std"].to_numpy(np.float64)
        assert np.isfinite(got).all() == applies and np.isnan(got).all() != applies
        np.testing.assert_array_equal(got, expected)


def predicted_lines(figure: object) -> list[object]:
    return [line for ax in figure.axes for line in ax.get_lines()  # type: ignore[attr-defined]
            if line.get_linewidth() == plots.PREDICTED_WIDTH and len(line.get_xdata()) > 0]


def test_compare_plot_draws_a_thin_dashed_prediction_where_the_theory_applies(
    small_comparison: sweep.Comparison,
) -> None:
    figure = plots.std_figure(small_comparison)
    (line,) = predicted_lines(figure)  # xavier only: none for the constant scheme
    assert line.get_color() == plots.SCHEME_COLOURS[0] and line.get_linestyle() == "--"  # type: ignore[attr-defined]
    traces = small_comparison.traces
    expected = traces[traces["scheme"] == "xavier_uniform(gain=auto)"].sort_values("layer")["theory_std"]
    np.testing.assert_allclose(line.get_ydata(), expected.to_numpy(np.float64))  # type: ignore[attr-defined]
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert "dashed thin: mean-field prediction" in labels


def test_run_plot_draws_the_prediction() -> None:
    study = run_seeds(load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=8"]), 1)
    (line,) = predicted_lines(plots.study_figure(study))
    np.testing.assert_allclose(line.get_ydata(), study.runs[0].layers["theory_std"])  # type: ignore[attr-defined]


def test_readme_theory_section_runs_the_venv_command_like_the_rest() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Theory"):readme.index("## Benchmarks")]
    commands = re.findall(r"^\$ (\S+)", section, re.MULTILINE)
    assert commands and set(commands) == {".venv/bin/initlab"}
    assert "theory: q* = " in section and "dashed thin: mean-field prediction" in section


@pytest.mark.parametrize("columns", [40, 60, 80, 120])
@pytest.mark.parametrize("args", [["tanh", "--sw2", "2.5", "--sb2", "0.05", "--depth", "4"],
                                  ["tanh", "--critical", "--sb2", "0.05"], ["relu", "--critical", "--sb2", "0.1"]])
def test_theory_text_is_never_wider_than_the_terminal(columns: int, args: list[str]) -> None:
    result = CliRunner().invoke(app, ["theory", *args], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= columns
    assert "…" not in result.stdout
