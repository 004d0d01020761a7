"""The input-output Jacobian's spectrum (initlab.jacobian) and its prediction (initlab.jacobian_theory).

Expected values come by a second route: torch.autograd.functional.jacobian for J itself, the
papers' closed forms (Pennington, Schoenholz & Ganguli 2017, at criticality) for the prediction, and
Monte Carlo over seeds for the prediction against finite networks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from initlab import devices, jacobian, jacobian_theory, runner
from initlab.cli import app
from initlab.config import Config
from initlab.errors import InitlabError
from initlab.model import build, draw_input
from initlab.theory import input_second_moment, predict
from tests.conftest import CONFIGS


def _config(depth: int, width: int, activation: Any, init: dict[str, Any], seed: int = 0, bias: bool = False,
            batch: int = 8, samples: int | None = None) -> Config:
    return Config.model_validate({
        "name": "j", "seed": seed, "model": {"depth": depth, "width": width, "activation": activation, "bias": bias},
        "init": init, "data": {"batch_size": batch}, "jacobian": {"samples": samples} if samples else False,
    })


def _network(config: Config, dtype: torch.dtype = torch.float64) -> tuple[Any, torch.Tensor]:
    generator = torch.Generator().manual_seed(config.seed)
    model = build(config, generator, dtype)
    return model, draw_input(config, generator, dtype)


def _theory(config: Config) -> jacobian_theory.JacobianPrediction:
    return jacobian_theory.predict(config, predict(config, input_second_moment(config.data)))


# ---------------------------------------------------------------- J itself


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "softplus", {"name": "leaky_relu",
                                                                             "negative_slope": 0.2}, "selu"])
def test_jacobian_equals_autograd(activation: Any) -> None:
    init = {"scheme": "xavier_normal", "gain": 1.3, "bias": {"scheme": "normal", "std": 0.3}}
    config = _config(4, 12, activation, init, seed=2, bias=True, batch=5)
    model, x = _network(config)
    jac, finite = jacobian.jacobians(model, x[:3])
    assert finite.all()
    spectrum = jacobian.measure(model, x[:3])
    for i in range(3):
        expected = torch.autograd.functional.jacobian(model, x[i])  # (n, n): width backward passes
        torch.testing.assert_close(jac[i], expected, rtol=1e-12, atol=1e-14)
        exact = torch.linalg.svdvals(expected).numpy()
        kept = ~np.isnan(spectrum.singular_values[i])  # resolved: at or above n eps sigma_max
        assert kept[0] and (exact[~kept] < 12 * np.finfo(np.float64).eps * exact[0]).all()
        np.testing.assert_allclose(spectrum.singular_values[i][kept], exact[kept], rtol=1e-10, atol=1e-14)


def test_derivative_is_phi_prime_of_a_float32_model() -> None:
    model, x = _network(_config(2, 8, "tanh", {"scheme": "xavier_normal"}), torch.float32)
    pre = model.blocks[0].linear(x)
    slope = jacobian.derivative(model.blocks[0], pre)
    assert slope.dtype == torch.float64
    torch.testing.assert_close(slope, 1.0 - torch.tanh(pre.double()) ** 2, rtol=1e-14, atol=0.0)


def test_orthogonal_linear_network_is_an_isometry() -> None:
    """Saxe et al. 2014: every singular value of a product of orthogonal matrices is exactly 1."""
    config = _config(50, 64, "linear", {"scheme": "orthogonal"}, seed=1, batch=4, samples=4)
    result = runner.run(config)  # float32 weights, as a study has them
    assert result.jacobian is not None
    np.testing.assert_allclose(result.jacobian.singular_values, 1.0, atol=1e-5, rtol=0.0)
    figures = result.summary["jacobian"]
    assert figures["var_sigma2"] < 1e-10 and figures["condition"] == pytest.approx(1.0, abs=1e-5)
    assert figures["theory_mean_sigma2"] == pytest.approx(1.0, rel=1e-12)
    assert figures["theory_var_sigma2"] == pytest.approx(0.0, abs=1e-12)


EPS = float(np.finfo(np.float64).eps)


def test_figures_are_means_over_inputs_and_none_where_undefined() -> None:
    spectrum = jacobian.Spectrum(np.array([[2.0, 1.0], [4.0, 2.0]]), np.array([4 * EPS, 8 * EPS]))
    assert spectrum.summary() == {"samples": 2, "nonfinite_samples": 0, "mean_sigma2": (2.5 + 10.0) / 2,
                                  "var_sigma2": (2.25 + 36.0) / 2, "max_sigma": 3.0, "min_sigma": 1.5,
                                  "min_sigma_below": None, "condition": 2.0, "condition_above": None,
                                  "unresolved": 0.0, "width": 2}
    partial = jacobian.Spectrum(np.array([[2.0, 1.0], [math.nan, math.nan]]), np.array([4 * EPS, math.nan]))
    assert partial.summary()["nonfinite_samples"] == 1
    assert all(partial.summary()[k] is None for k in ("mean_sigma2", "var_sigma2", "max_sigma", "min_sigma",
                                                      "condition", "unresolved"))
    below = jacobian.Spectrum(np.array([[2.0, math.nan], [4.0, 1.0]]), np.array([4 * EPS, 8 * EPS])).summary()
    assert below["min_sigma"] is None and below["min_sigma_below"] == pytest.approx(6 * EPS)
    assert below["condition"] is None and below["condition_above"] == pytest.approx(1 / (2 * EPS))
    assert below["unresolved"] == 0.5 and below["mean_sigma2"] == pytest.approx((2.0 + 8.5) / 2)


def test_values_below_float64_resolution_are_unresolved_not_zero() -> None:
    """ReLU zeroes rows of J (inactive output units): svdvals gives ~1e-17 there, rounding: left unresolved
    (NaN, empty in jacobian.csv), and min sigma and the condition number become bounds."""
    model, x = _network(_config(3, 16, "relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"}, seed=5))
    jac, _ = jacobian.jacobians(model, x, 2)
    dead = int((jac[0].abs().sum(dim=1) == 0).sum())
    assert dead > 0
    spectrum = jacobian.measure(model, x, 2)
    values = spectrum.singular_values[0]
    assert np.isnan(values).sum() >= dead and np.nanmin(values) >= 16 * EPS * values[0]
    assert spectrum.summary()["min_sigma"] is None and spectrum.summary()["min_sigma_below"] is not None
    kept, floor = jacobian.resolved(torch.tensor([[4.0, 1.0, 1e-15, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    np.testing.assert_array_equal(kept, [[4.0, 1.0, math.nan, math.nan], [0.0, 0.0, 0.0, 0.0]])  # exact 0: kept
    np.testing.assert_array_equal(floor, [16 * EPS, 0.0])


def test_the_jacobian_is_taken_at_the_studys_own_forward_pass_of_the_first_inputs() -> None:
    """A chaotic tanh net amplifies the rounding of a pass over K rows alone; J is that of the whole-batch pass
    the study measured, at rows 0..K-1 (float32 autograd through the study's own network and x)."""
    config = _config(40, 64, "tanh", {"scheme": "xavier_uniform", "gain": 5 / 3}, seed=1, batch=16, samples=3)
    result = runner.run(config)
    model, x = _network(config, torch.float32)
    assert result.jacobian is not None
    for i in range(3):
        def row(inputs: torch.Tensor, i: int = i) -> torch.Tensor:
            return model(torch.cat([x[:i], inputs.unsqueeze(0), x[i + 1:]]))[i]

        exact = torch.linalg.svdvals(torch.autograd.functional.jacobian(row, x[i]).double()).numpy()
        other = torch.linalg.svdvals(torch.autograd.functional.jacobian(row, x[i + 3]).double()).numpy()
        np.testing.assert_allclose(result.jacobian.singular_values[i][:8], exact[:8], rtol=1e-4)
        assert np.abs(result.jacobian.singular_values[i][:8] / other[:8] - 1).max() > 1e-2  # another input differs


# ---------------------------------------------------------------- prediction: the papers' closed forms


@pytest.mark.parametrize(("activation", "init", "per_layer"), [
    ("linear", {"scheme": "normal", "std": 1 / 8}, 1.0),  # linear Gaussian: L (p = 1)
    ("linear", {"scheme": "orthogonal"}, 0.0),  # linear orthogonal: 0
    ("relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"}, 2.0),  # ReLU Gaussian: L/p, p = 1/2
    ("relu", {"scheme": "kaiming_uniform", "nonlinearity": "relu"}, 2.0),  # i.i.d. uniform: the same limit
    ("relu", {"scheme": "orthogonal", "gain": math.sqrt(2)}, 1.0),  # ReLU orthogonal: L(1-p)/p
])
def test_critical_piecewise_linear_variance_is_the_papers(activation: str, init: dict[str, Any],
                                                          per_layer: float) -> None:
    """Pennington, Schoenholz & Ganguli 2017 at criticality: var = L/p (Gaussian), L(1-p)/p (orthogonal), mean 1."""
    for depth in (3, 40):
        predicted = _theory(_config(depth, 64, activation, init))
        assert predicted.mean_sigma2 == pytest.approx(1.0, rel=1e-10)
        assert predicted.var_sigma2 == pytest.approx(per_layer * depth, rel=1e-10, abs=1e-10)


def test_the_note_says_when_width_is_small_for_the_depth() -> None:
    init = {"scheme": "kaiming_normal", "nonlinearity": "relu"}
    assert _theory(_config(6, 64, "relu", init)).note is None  # L/n < 0.1
    note = _theory(_config(7, 64, "relu", init)).note
    assert note is not None and "depth/width = 0.109" in note


def test_variance_is_undefined_for_weights_that_are_neither_iid_nor_orthogonal() -> None:
    predicted = _theory(_config(5, 64, "tanh", {"scheme": "sparse", "sparsity": 0.5, "std": 0.2}))
    assert predicted.mean_sigma2 is not None and predicted.var_sigma2 is None
    assert predicted.note is not None and "sparse" in predicted.note
    constant = _theory(_config(5, 64, "tanh", {"scheme": "constant", "val": 0.1}))
    assert constant.mean_sigma2 is None and constant.var_sigma2 is None and "constant" in (constant.note or "")


# ---------------------------------------------------------------- prediction against finite networks


def _monte_carlo(depth: int, width: int, activation: str, init: dict[str, Any],
                 seeds: int) -> tuple[float, float, float, float]:
    """Mean over seeds (8 inputs each) of mean σ² and var σ², and their standard errors."""
    means, variances = [], []
    for seed in range(seeds):
        model, x = _network(_config(depth, width, activation, init, seed=seed))
        figures = jacobian.measure(model, x).summary()  # unresolved values count as 0: below rounding
        means.append(figures["mean_sigma2"])
        variances.append(figures["var_sigma2"])
    m, v = np.asarray(means), np.asarray(variances)
    return m.mean(), m.std() / math.sqrt(seeds), v.mean(), v.std() / math.sqrt(seeds)


#: Width of the Monte Carlo networks, and seeds per point (8 inputs each).
_N, _SEEDS = 128, 30


@pytest.mark.parametrize(("activation", "init", "active"), [
    ("linear", {"scheme": "normal", "std": _N**-0.5}, 1.0),
    ("relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"}, 0.5),
    ("tanh", {"scheme": "xavier_normal", "gain": 1.2}, None),
    ("tanh", {"scheme": "orthogonal", "gain": 1.05}, None),
])
def test_spectrum_spreads_with_depth_as_predicted(activation: str, init: dict[str, Any], active: float | None) -> None:
    """Measured mean and variance of σ² against the prediction at two depths.

    The mean (E tr JJᵀ/n) has no finite-width bias to speak of: within 4 standard errors plus
    3% (tanh's q_l fluctuates with the input's norm, ~sqrt(2/n) = 12% at n = 128). The variance
    is a wide-network limit; measured at widths 32-128 it comes out higher by a relative
    0.7-1.1 L/n (linear) and 1.6-2.5 L/n (ReLU), about L/(p n): the band allows twice that
    (for tanh, p = 1/2), above 4 standard errors. A wrong law (ReLU's L/p read as L, or
    Gaussian read as orthogonal) misses by a factor 2.
    """
    variances = []
    for depth in (4, 12):
        config = _config(depth, _N, activation, init)
        predicted = _theory(config)
        assert predicted.mean_sigma2 is not None and predicted.var_sigma2 is not None
        mean, mean_se, var, var_se = _monte_carlo(depth, _N, activation, init, _SEEDS)
        assert abs(mean - predicted.mean_sigma2) <= 4 * mean_se + 0.03 * predicted.mean_sigma2
        finite_width = 2 * depth / ((active or 0.5) * _N)
        low, high = predicted.var_sigma2, predicted.var_sigma2 * (1 + finite_width)
        assert low - 4 * var_se <= var <= high + 4 * var_se, (depth, var, var_se, predicted.var_sigma2)
        variances.append(var / mean**2)
    if init["scheme"] != "orthogonal":  # Gaussian: the normalised spread grows ~linearly with depth
        assert variances[1] > 2 * variances[0]


# ---------------------------------------------------------------- refusals, non-finite, the CLI


def test_refused_before_anything_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args: Any) -> None:
        raise AssertionError("built a model")

    monkeypatch.setattr(runner, "build", no_build)
    slow = _config(10, 8192, "tanh", {"scheme": "xavier_normal"}, batch=1, samples=1)
    with pytest.raises(InitlabError, match=r"1\.6e\+13 flops .* over the limit of 1e\+13"):
        runner.run(slow)
    monkeypatch.setattr(devices, "available_bytes", lambda device: 50 * 2**20)
    big = _config(2, 1024, "tanh", {"scheme": "xavier_normal"}, batch=4, samples=4)
    with pytest.raises(InitlabError, match=r"4 Jacobians of 1024 x 1024 in float64 need about 0\.09 GiB"):
        runner.run(big)


def _invoke(*args: str, columns: int = 80) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


def test_cli_refusal_is_one_line_exit_2(tmp_path: Path) -> None:
    code, out, err = _invoke("run", str(CONFIGS / "tanh-xavier.yaml"), "model.width=8192", "model.depth=10",
                             "data.batch_size=2", "jacobian.samples=2", "--out", str(tmp_path))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("error: jacobian.samples 2:") and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_nonfinite_forward_gives_nulls(tmp_path: Path) -> None:
    code, _, err = _invoke("run", str(CONFIGS / "linear-normal.yaml"), "jacobian.samples=2", "--out", str(tmp_path))
    assert code == 0, err
    (folder,) = (tmp_path / "linear-normal").iterdir()
    text = (folder / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    figures = json.loads(text)["jacobian"]
    assert figures["nonfinite_samples"] == 2
    assert all(figures[k] is None for k in ("mean_sigma2", "var_sigma2", "max_sigma", "min_sigma", "condition"))
    table = pd.read_csv(folder / "jacobian.csv")
    assert len(table) == 2 * 256 and table["singular_value"].isna().all()
    assert figures["unresolved"] is None and figures["min_sigma_below"] is None


@pytest.mark.parametrize("columns", [40, 120])
def test_cli_writes_the_spectrum_and_prints_the_line(tmp_path: Path, columns: int) -> None:
    code, out, err = _invoke("run", str(CONFIGS / "linear-normal-scaled.yaml"), "jacobian.samples=4",
                             "--out", str(tmp_path), columns=columns)
    assert code == 0, err
    (folder,) = (tmp_path / "linear-normal-scaled").iterdir()
    table = pd.read_csv(folder / "jacobian.csv")
    assert list(table.columns) == ["sample", "index", "singular_value"] and len(table) == 4 * 256
    for _, values in table.groupby("sample")["singular_value"]:
        kept = values.dropna().to_numpy()
        assert (np.diff(kept) <= 0).all() and values.iloc[: len(kept)].notna().all()  # descending, unresolved last
    figures = json.loads((folder / "summary.json").read_text())["jacobian"]
    sigma2 = np.nan_to_num(table["singular_value"].to_numpy().reshape(4, 256)) ** 2  # unresolved: ~0
    assert figures["mean_sigma2"] == pytest.approx(sigma2.mean(axis=1).mean(), rel=1e-12)
    assert figures["var_sigma2"] == pytest.approx(sigma2.var(axis=1).mean(), rel=1e-12)
    assert figures["theory_mean_sigma2"] == pytest.approx(1.0) and figures["theory_var_sigma2"] == pytest.approx(100)
    words = out[out.index("jacobian:"):].split()  # the line, wrapped between words only
    from initlab.report import fmt

    for number in (figures["mean_sigma2"], figures["var_sigma2"], figures["max_sigma"]):
        assert fmt(number) in words or fmt(number) + "," in words


def test_jacobian_leaves_the_forward_numbers_alone() -> None:
    with_jacobian = runner.run(_config(6, 32, "tanh", {"scheme": "xavier_normal"}, seed=4, samples=3))
    without = runner.run(_config(6, 32, "tanh", {"scheme": "xavier_normal"}, seed=4))
    pd.testing.assert_frame_equal(with_jacobian.layers, without.layers)
    assert "jacobian" not in without.summary and with_jacobian.summary["jacobian"]["samples"] == 3


def test_seeds_pool_every_seeds_inputs(tmp_path: Path) -> None:
    code, out, err = _invoke("run", str(CONFIGS / "relu-kaiming.yaml"), "model.depth=8", "model.width=32",
                             "jacobian.samples=3", "--seeds", "2", "--out", str(tmp_path), columns=120)
    assert code == 0, err
    (folder,) = (tmp_path / "relu-kaiming").iterdir()
    table = pd.read_csv(folder / "jacobian.csv")
    assert list(table.columns) == ["seed", "sample", "index", "singular_value"] and len(table) == 2 * 3 * 32
    assert sorted(table["seed"].unique()) == [1, 2]
    figures = json.loads((folder / "summary.json").read_text())["jacobian"]
    sigma2 = np.nan_to_num(table["singular_value"].to_numpy().reshape(6, 32)) ** 2  # unresolved: ~0
    assert figures["samples"] == 6 and figures["mean_sigma2"] == pytest.approx(sigma2.mean(), rel=1e-12)
    assert "jacobian: mean σ²" in out
