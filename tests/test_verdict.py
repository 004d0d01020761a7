"""The verdict on the cases issue 10 lists, and the calibration of its trend statistic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import initlab
from initlab import compare
from initlab.cli import app
from initlab.config import VerdictConfig, load_config
from initlab.regimes import Trace, classify, critical_t, newey_west_t
from initlab.runner import Result
from tests.conftest import CONFIGS

DEFAULT = VerdictConfig()


# ---------------------------------------------------------------- the trend statistic on synthetic traces


def random_walk_steps(rng: np.random.Generator, draws: int, n: int, phi: float = 0.0) -> np.ndarray:
    """``draws`` rows of ``n`` zero-mean steps, AR(1) with coefficient ``phi`` (started stationary)."""
    e = rng.normal(size=(draws, n))
    steps = np.empty_like(e)
    steps[:, 0] = e[:, 0] / math.sqrt(1 - phi * phi)
    for i in range(1, n):
        steps[:, i] = phi * steps[:, i - 1] + e[:, i]
    return steps


def rejection_rate(steps: np.ndarray, z: float) -> float:
    n = steps.shape[1]
    ts = [newey_west_t(row.tolist()) for row in steps]
    return float(np.mean([abs(t) >= critical_t(z, n - 1) for t in ts if t is not None]))


@pytest.mark.parametrize(("n", "most"), [(10, 0.05), (50, 0.03), (250, 0.025)])
def test_a_random_walk_without_drift_is_rarely_called_a_trend(n: int, most: float) -> None:
    """The false-positive rate at the default trend_t (2.5: 1.24 % two-sided for N(0, 1)) over 2000 walks.

    Newey-West underestimates the long-run variance in short samples: 3.4 % at 10 steps, near
    nominal by 250 (binomial sd about 0.25 %).
    """
    rate = rejection_rate(random_walk_steps(np.random.default_rng(n), 2000, n), DEFAULT.trend_t)
    assert rate <= most


def test_the_false_positive_rate_at_5_percent_is_close_to_nominal() -> None:
    rate = rejection_rate(random_walk_steps(np.random.default_rng(7), 3000, 100), 1.96)
    assert 0.03 <= rate <= 0.08  # binomial sd 0.004 around 0.05, plus the estimator's small-sample bias


def test_dependent_steps_are_what_the_hac_error_is_for() -> None:
    """AR(1) steps (phi = 0.5) inflate the plain t's false positives; Newey-West keeps most of them out."""
    steps = random_walk_steps(np.random.default_rng(3), 2000, 250, phi=0.5)
    plain = np.mean(np.abs(steps.mean(1) / (steps.std(1, ddof=1) / math.sqrt(250))) >= 1.96)
    hac = rejection_rate(steps, 1.96)
    assert plain >= 0.18 and hac <= 0.13


def test_a_real_drift_is_found() -> None:
    steps = random_walk_steps(np.random.default_rng(4), 1000, 50) + 0.5  # drift of half a step's sd
    assert rejection_rate(steps, DEFAULT.trend_t) >= 0.8


def test_critical_t_is_students_quantile() -> None:
    # Student's t quantiles (two-sided 5 % and 0.27 %), from tables: df 9 -> 2.262 and 4.094, df 49 -> 2.010, 3.130.
    assert critical_t(1.96, 9) == pytest.approx(2.262, rel=0.01)
    assert critical_t(3.0, 9) == pytest.approx(4.094, rel=0.02)
    assert critical_t(1.96, 49) == pytest.approx(2.010, rel=0.005)
    assert critical_t(3.0, 49) == pytest.approx(3.130, rel=0.01)


# ---------------------------------------------------------------- shapes of decay, at two depths


def noisy(values: np.ndarray, seed: int, sd: float = 0.01) -> list[float | None]:
    return [float(v) for v in values * np.exp(np.random.default_rng(seed).normal(0, sd, len(values)))]


@pytest.mark.parametrize("depth", [100, 500])
def test_a_power_law_decay_is_vanishing_at_every_depth(depth: int) -> None:
    """tanh at sigma_w^2 = 1: std ~ (1 + 2l/3)^-1/2 (q_l ~ 1/l); a decay to zero, not a fixed point."""
    std = noisy(0.63 / np.sqrt(1 + 2 * np.arange(depth) / 3), depth)
    assert classify(Trace(std, [0.0] * depth, 1.0), DEFAULT).regime == "vanishing"


@pytest.mark.parametrize("depth", [100, 500])
def test_a_transient_to_a_non_zero_fixed_point_is_stable(depth: int) -> None:
    std = noisy(0.2 + 0.8 * 0.8 ** np.arange(depth), depth)  # x0.2 of the input, then flat
    verdict = classify(Trace(std, [0.0] * depth, 1.0), DEFAULT)
    assert verdict.regime == "stable" and verdict.ratio == pytest.approx(0.2, rel=0.05)
    assert "settled" in verdict.reason


@pytest.mark.parametrize("depth", [100, 500])
def test_an_exponential_decay_is_vanishing_at_every_depth(depth: int) -> None:
    std = noisy(0.97 ** np.arange(depth), depth, sd=0.05)
    assert classify(Trace(std, [0.0] * depth, 1.0), DEFAULT).regime == "vanishing"


def test_a_random_walk_is_stable_with_a_finite_width_note() -> None:
    steps = np.random.default_rng(5).normal(0, 0.05, 100)
    std = np.exp(np.cumsum(steps - steps.mean()))
    verdict = classify(Trace([float(s) for s in std], [0.0] * 100, float(std[0]), width=32), DEFAULT)
    assert verdict.regime == "stable" and any("depth/width = 3.12" in n for n in verdict.notes)


def test_a_settled_trace_orders_of_magnitude_below_the_input_is_vanishing() -> None:
    std = noisy(np.full(100, 1e-4), 0)  # sigmoid with tiny weights: a fixed point, but no signal
    verdict = classify(Trace(std, [0.0] * 100, 1.0), DEFAULT)
    assert verdict.regime == "vanishing" and verdict.decades == pytest.approx(-4, abs=0.01)


# ---------------------------------------------------------------- the cases, measured


def run(config: str, *overrides: str) -> Result:
    return initlab.run(load_config(CONFIGS / f"{config}.yaml", overrides))


def test_one_layer_is_judged_against_the_input() -> None:
    result = run("linear-normal", "model.depth=1")
    verdict = result.verdict
    assert verdict.regime == "explosion"
    assert verdict.ratio == pytest.approx(result.layers["std"].iloc[0] / result.meta["input_std"])
    assert verdict.ratio == pytest.approx(16, rel=0.05)  # sigma_w = 1 x sqrt(256)


def test_a_pre_activation_overflow_is_an_explosion_even_behind_tanh() -> None:
    result = run("tanh-xavier", "init.scheme=normal", "init.std=1e37", "model.depth=8")
    verdict = result.verdict
    assert (result.layers["pre_nonfinite"] > 0).all() and (result.layers["nonfinite"] == 0).all()
    assert (verdict.regime, verdict.nonfinite, verdict.nonfinite_site) == ("explosion", True, "pre")
    assert verdict.first_nonfinite_layer == 0 and verdict.last_finite_layer is None and verdict.ratio is None


@pytest.mark.parametrize("depth", [100, 500])
def test_tanh_with_normal_1_over_n_vanishes_at_100_and_500(depth: int) -> None:
    result = run("tanh-xavier", "init.scheme=normal", "init.std=0.0625", f"model.depth={depth}")
    assert result.verdict.regime == "vanishing"
    assert result.verdict.theory_agrees is True


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["xavier_uniform", "orthogonal"])
def test_selu_at_torch_gain_settles_to_its_fixed_point_and_is_stable(scheme: str) -> None:
    result = run("tanh-xavier", "model.activation=selu", f"init.scheme={scheme}", "init.gain=torch")
    assert result.verdict.regime == "stable"
    assert result.layers["std"].iloc[50:].mean() == pytest.approx(0.1996, rel=0.1)  # post std at q* = 0.0230
    assert result.verdict.ratio < DEFAULT.vanish_ratio  # below the ratio threshold: the tail decides


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturation_is_not_stable(activation: str) -> None:
    result = run("tanh-xavier", "init.scheme=normal", "init.std=1", f"model.activation={activation}")
    assert result.layers["pre_std"].iloc[50:].mean() > 10
    assert result.verdict.regime == "saturated" and result.verdict.saturated_fraction > 0.5  # type: ignore[operator]


def test_dead_relu_units_are_noted() -> None:
    trace = Trace([1.0] * 20, [0.0] * 20, 1.0, dead=[0.95] * 20)
    assert any("95% of the units are dead" in note for note in classify(trace, DEFAULT).notes)


def cells(schemes: str, activations: str, depths: list[int], width: int, seeds: int) -> list[dict[str, object]]:
    base = compare.base_config(None, width=width)
    plan = compare.plan_sweep(base, compare.parse_schemes(schemes), compare.parse_activations(activations),
                              depths, seeds=seeds)
    records: list[dict[str, object]] = compare.sweep(plan).summary.to_dict("records")
    return records


@pytest.mark.slow
def test_selu_with_kaiming_at_width_32_explodes() -> None:
    rows = cells("kaiming", "selu", [100, 500], 32, 5)
    assert [r["regime"] for r in rows] == ["explosion", "explosion"]
    assert all(r["ratio_high"] > r["ratio_low"] > 1 for r in rows)  # type: ignore[operator]


@pytest.mark.slow
def test_gelu_with_xavier_auto_at_width_32_explodes() -> None:
    (row,) = cells("xavier:gain=auto", "gelu", [100], 32, 5)
    assert row["regime"] == "explosion" and row["ratio"] > 10  # type: ignore[operator]


def test_tanh_with_xavier_at_width_32_depth_500_vanishes() -> None:
    (row,) = cells("xavier", "tanh", [500], 32, 5)
    assert row["regime"] == "vanishing" and row["ratio"] < 1e-2  # type: ignore[operator]


@pytest.mark.slow
def test_relu_kaiming_at_width_32_depth_500_vanishes_for_every_seed_and_says_why() -> None:
    """Hanin & Rolnick: log-std drifts by -5L/(4n) = -19.5 with spread 4.4: finite width, not the init."""
    (row,) = cells("kaiming", "relu", [500], 32, 20)
    assert (row["regime"], row["agree"], row["finished"]) == ("vanishing", 20, 20)
    assert row["ratio_high"] < 1e-3 and row["theory_regime"] == "stable" and row["theory_agrees"] is False  # type: ignore[operator]
    assert "finite width, not the init" in str(row["notes"]) and "20 seeds: ratio" in str(row["notes"])


def test_two_layers_have_no_infinite_t_and_the_reason_matches_the_json() -> None:
    verdict = run("linear-normal", "model.depth=2").verdict
    assert verdict.trend_t is None and "too few layers for a trend" in verdict.reason
    assert "inf" not in verdict.reason and "t=" not in verdict.reason


def test_a_non_finite_run_names_the_layer_its_figures_come_from() -> None:
    result = run("linear-normal")
    verdict, layers = result.verdict, result.layers
    assert verdict.last_finite_layer == verdict.first_nonfinite_layer - 1  # type: ignore[operator]
    assert verdict.last_std == layers["std"].iloc[verdict.last_finite_layer]
    assert verdict.ratio == pytest.approx(verdict.last_std / result.meta["input_std"])  # type: ignore[operator]


def test_the_verdict_is_printed_once() -> None:
    out = CliRunner().invoke(app, ["run", str(CONFIGS / "linear-normal.yaml"), "--no-save"],
                             env={"COLUMNS": "200"}).stdout
    lines = out[out.index("verdict:"):].splitlines()
    assert out.count("verdict:") == 1 and lines[1].startswith("  why: ") and len(lines) == 3
    assert lines[2].startswith("theory: ")  # the mean-field line follows the verdict
    assert "at layer 30, the last finite one" in lines[0] and out.count("x15.99/layer") == 1
    assert "non-finite pre-activations from layer 31" in lines[1]


def test_summary_json_has_the_verdict_and_the_theory() -> None:
    out = CliRunner().invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), "--no-save", "--json"]).stdout
    summary = json.loads(out)["summary"]
    assert summary["regime"] == summary["theory_regime"] == "stable" and summary["theory_agrees"] is True
    assert summary["theory"]["q_star"] == pytest.approx(1.1785, rel=1e-3)
    assert summary["ratio"] == pytest.approx(summary["last_std"] / summary["input_std"])
    assert summary["decades"] == pytest.approx(math.log10(summary["ratio"]))


def test_gain_says_what_its_layer_count_counts() -> None:
    out = CliRunner().invoke(app, ["gain", "tanh"], env={"COLUMNS": "80"}).stdout
    assert "q*=1.178, stable: within 1e-9 of q* after" in out and "q*=1, stable: q0 is q*, reached at once" in out
    assert "(0 layers)" not in out


def test_compare_prints_each_cells_spread_finite_width_and_theory() -> None:
    args = ["compare", "--schemes", "kaiming", "--activations", "relu", "--depth", "64", "--width", "16",
            "--seeds", "3", "--no-save"]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "300"}).stdout
    start = out.index("kaiming_normal + relu:")
    line = " ".join(out[start:out.index("\n\n", start)].split())  # one cell's note, wrapped to the terminal
    assert "seeds agree" in line and "3 seeds: ratio" in line and "depth/width = 4:" in line
    assert "theory agrees" in line or "likely finite width, not the init" in line
