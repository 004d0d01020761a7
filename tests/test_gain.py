"""Tests for initlab.gain: the gain definitions, their accuracy, and the variance-map fates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import integrate
from torch.nn.init import calculate_gain

from initlab import gain as G
from initlab.activations import Activation, names, parse_activation

ALL = names()
#: Registered activations with their defaults, plus a few non-default parameters.
VARIANTS: list[str | dict[str, Any]] = [
    *ALL,
    {"name": "leaky_relu", "negative_slope": 0.2},
    {"name": "elu", "alpha": 0.5},
    {"name": "gelu", "approximate": "tanh"},
    {"name": "softplus", "beta": 2.0},
]


def _id(value: str | dict[str, Any]) -> str:
    return parse_activation(value).label()


def _scipy_moments(activation: Activation) -> tuple[float, float]:
    """E[phi(z)] and E[phi(z)^2] by scipy's adaptive quadrature, split at the kink at 0."""
    fn = activation.function()

    def phi(x: float) -> float:
        return float(fn(torch.tensor([x], dtype=torch.float64))[0])

    def density(x: float) -> float:
        return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)

    def expect(f: Any) -> float:
        total = 0.0
        for lo, hi in ((-math.inf, 0.0), (0.0, math.inf)):
            value, _ = integrate.quad(
                lambda x: f(x) * density(x), lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200
            )
            total += value
        return total

    return expect(phi), expect(lambda x: phi(x) ** 2)


# --------------------------------------------------------------------------- second moment


def test_exact_second_moment_gains() -> None:
    assert G.second_moment_gain(parse_activation("relu")) == pytest.approx(math.sqrt(2.0), rel=1e-6, abs=0)
    assert G.second_moment_gain(parse_activation("linear")) == pytest.approx(1.0, rel=1e-12)
    assert G.second_moment_gain(parse_activation("selu")) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 0.5, 1.0, 3.0])
def test_leaky_relu_second_moment_gain(slope: float) -> None:
    activation = parse_activation({"name": "leaky_relu", "negative_slope": slope})
    expected = math.sqrt(2.0 / (1.0 + slope**2))
    assert G.second_moment_gain(activation) == pytest.approx(expected, rel=1e-6, abs=0)


def test_quadrature_rule_moments() -> None:
    x, w = G._normal_rule()
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    assert float((x**2) @ w) == pytest.approx(1.0, abs=1e-13)
    assert float((x**4) @ w) == pytest.approx(3.0, abs=1e-12)
    assert float(x.abs() @ w) == pytest.approx(math.sqrt(2.0 / math.pi), abs=1e-14)  # kink at 0
    assert G.gaussian_moments(parse_activation("linear"), 2.5) == pytest.approx((0.0, 2.5), abs=1e-13)


@pytest.mark.parametrize("value", VARIANTS, ids=_id)
def test_quadrature_runs_on_one_thread_with_the_same_bits(value: str | dict[str, Any]) -> None:
    """Small tensors in a row: one thread is faster; the moments must equal the multi-threaded
    computation bit for bit, and the caller's thread count must be restored."""
    fn = parse_activation(value).function()
    scales = np.geomspace(1e-3, 1e3, 100)  # the fate's largest batch of scales
    seen: list[int] = []

    def watched(t: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return fn(t)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, w = G._normal_rule()
        with torch.no_grad():
            y = fn(torch.from_numpy(scales)[:, None] * x[None, :])  # the plain route, on two threads
            expected = ((y @ w).numpy(), ((y * y) @ w).numpy())
        mean, second = G._moments(watched, scales)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    assert np.array_equal(mean, expected[0]) and np.array_equal(second, expected[1])


@pytest.mark.parametrize("value", VARIANTS, ids=_id)
def test_std_ratio_elementwise_on_one_thread_with_the_same_bits(value: str | dict[str, Any]) -> None:
    """The elementwise passes run on one thread, in place; ratio and error equal the plain
    expressions (reductions on two threads, as torch splits them) bit for bit."""
    activation = parse_activation(value)
    seen: list[int] = []

    class Watched(Activation):  # the same activation, recording torch's thread count when applied
        name: str = "watched"

        def function(self) -> Any:
            fn = activation.function()

            def watched(t: torch.Tensor) -> torch.Tensor:
                seen.append(torch.get_num_threads())
                return fn(t)

            return watched

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(200_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        y = activation.function()(x)
        sx, sy = x.std(), y.std()
        u = (x - x.mean()) ** 2 / sx**2 - (y - y.mean()) ** 2 / sy**2
        ratio = float(sx / sy)
        expected = (ratio, ratio * float(u.std()) / (2.0 * math.sqrt(200_000)))
        assert G.std_ratio_gain(Watched(), samples=200_000, seed=3) == expected
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


@pytest.mark.parametrize("value", VARIANTS, ids=_id)
def test_quadrature_matches_scipy(value: str | dict[str, Any]) -> None:
    activation = parse_activation(value)
    mean, second = G.gaussian_moments(activation)
    ref_mean, ref_second = _scipy_moments(activation)
    assert second == pytest.approx(ref_second, rel=1e-9)
    assert mean == pytest.approx(ref_mean, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_quadrature_matches_monte_carlo(name: str) -> None:
    activation = parse_activation(name)
    generator = torch.Generator().manual_seed(1234)
    n = 400_000
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    squares = activation.function()(z) ** 2
    mc, se = float(squares.mean()), float(squares.std()) / math.sqrt(n)
    _, second = G.gaussian_moments(activation)
    assert abs(second - mc) <= 4.0 * se + 1e-15, f"{name}: quad {second}, MC {mc} ± {se}"


# --------------------------------------------------------------------------- std ratio


@pytest.mark.parametrize(("name", "approx"), [("tanh", 1.59), ("relu", 1.71)])
def test_std_ratio_close_to_exact(name: str, approx: float) -> None:
    activation = parse_activation(name)
    ratio, se = G.std_ratio_gain(activation, samples=1_000_000, seed=0)
    mean, second = _scipy_moments(activation)
    exact = 1.0 / math.sqrt(second - mean**2)
    assert 0.0 < se < 0.005
    assert abs(ratio - exact) <= 4.0 * se
    assert ratio == pytest.approx(approx, abs=0.01)


def test_std_ratio_standard_error_is_honest() -> None:
    """Across seeds the estimates scatter by about the reported standard error."""
    activation = parse_activation("relu")
    runs = [G.std_ratio_gain(activation, samples=4_000, seed=seed) for seed in range(300)]
    values = np.array([r for r, _ in runs])
    ses = np.array([s for _, s in runs])
    assert float(values.std(ddof=1)) / float(ses.mean()) == pytest.approx(1.0, abs=0.15)


def test_std_ratio_reproducible_and_linear_exact() -> None:
    tanh = parse_activation("tanh")
    assert G.std_ratio_gain(tanh, samples=10_000, seed=3) == G.std_ratio_gain(tanh, samples=10_000, seed=3)
    assert G.std_ratio_gain(tanh, samples=10_000, seed=3) != G.std_ratio_gain(tanh, samples=10_000, seed=4)
    ratio, se = G.std_ratio_gain(parse_activation("linear"), samples=10_000)
    assert ratio == pytest.approx(1.0, abs=1e-12)
    assert se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 3 samples"):
        G.std_ratio_gain(tanh, samples=2)


# --------------------------------------------------------------------------- torch column


TORCH_TABLE: dict[str, float | None] = {
    "linear": calculate_gain("linear"),
    "tanh": calculate_gain("tanh"),
    "sigmoid": calculate_gain("sigmoid"),
    "relu": calculate_gain("relu"),
    "leaky_relu": calculate_gain("leaky_relu", 0.01),
    "selu": calculate_gain("selu"),
    "elu": None,
    "gelu": None,
    "silu": None,
    "mish": None,
    "softplus": None,
}


def test_torch_table_covers_registry() -> None:
    assert sorted(TORCH_TABLE) == ALL


@pytest.mark.parametrize("name", ALL)
def test_report_torch_column_is_calculate_gain(name: str) -> None:
    report = G.gain_report(parse_activation(name), samples=10_000, max_iterations=50)
    assert report.torch == TORCH_TABLE[name]
    assert ("torch" in report.fates) == (TORCH_TABLE[name] is not None)
    assert report.second_moment == G.second_moment_gain(parse_activation(name))
    assert report.std_ratio_exact >= report.second_moment * (1.0 - 1e-12)
    assert report.explanation.endswith(".")


def test_report_leaky_relu_parameter_reaches_calculate_gain() -> None:
    report = G.gain_report(parse_activation({"name": "leaky_relu", "negative_slope": 0.2}), samples=10_000)
    assert report.torch == calculate_gain("leaky_relu", 0.2)
    assert report.activation == "leaky_relu(negative_slope=0.2)"


def test_explanations_follow_properties() -> None:
    tanh = G.gain_report(parse_activation("tanh"), samples=10_000)
    assert tanh.odd
    assert "is odd" in tanh.explanation
    assert "heuristic" in tanh.explanation
    relu = G.gain_report(parse_activation("relu"), samples=10_000)
    assert not relu.odd
    assert "not odd" in relu.explanation
    assert "exactly" in relu.explanation
    gelu = G.gain_report(parse_activation("gelu"), samples=10_000)
    assert "no entry" in gelu.explanation
    selu = G.gain_report(parse_activation("selu"), samples=10_000)
    assert "≈ 0" in selu.explanation  # SELU is built to have E[phi(z)] = 0


@pytest.mark.parametrize(
    ("value", "odd"),
    [
        ("tanh", True),
        ("linear", True),
        ({"name": "leaky_relu", "negative_slope": 1.0}, True),
        ("relu", False),
        ("selu", False),
        ("gelu", False),
        ("sigmoid", False),
    ],
)
def test_is_odd(value: str | dict[str, Any], odd: bool) -> None:
    assert G.is_odd(parse_activation(value)) is odd


# --------------------------------------------------------------------------- fates


def test_relu_fates() -> None:
    relu = parse_activation("relu")
    marginal = G.variance_map_fate(relu, math.sqrt(2.0))
    assert marginal.kind == "marginal"
    assert marginal.stable
    assert marginal.q == pytest.approx(1.0)
    assert marginal.iterations == 0
    vanishing = G.variance_map_fate(relu, 1.0)
    assert vanishing.kind == "vanishing"
    assert not vanishing.stable
    assert vanishing.q is None
    assert vanishing.iterations == 30  # q_l = 2**-l falls below 1e-9 at l = 30
    assert G.variance_map_fate(relu, 1.5).kind == "explosion"


def test_tanh_fates() -> None:
    tanh = parse_activation("tanh")
    # g = 1: V(q) = q - 2q^2 + ..., a power-law collapse no step tolerance would catch.
    collapse = G.variance_map_fate(tanh, 1.0)
    assert collapse.kind == "vanishing"
    fixed = G.variance_map_fate(tanh, 5.0 / 3.0)
    assert fixed.kind == "fixed_point"
    assert fixed.stable
    assert fixed.q is not None
    assert 1.0 < fixed.q < 1.5
    assert fixed.slope is not None
    assert 0.0 < fixed.slope < 1.0
    assert G.variance_map(tanh, 5.0 / 3.0, fixed.q) == pytest.approx(fixed.q, rel=1e-8)
    q = 1.0
    for _ in range(200):  # plain iteration agrees with the structural answer
        q = G.variance_map(tanh, 5.0 / 3.0, q)
    assert q == pytest.approx(fixed.q, rel=1e-8)
    assert fixed.post_std == pytest.approx(math.sqrt(G.gaussian_moments(tanh, fixed.q)[1]), rel=1e-12)
    # just above g = 1 the fixed point sits near (1 - 1/g^2)/2
    small = G.variance_map_fate(tanh, 1.01)
    assert small.kind == "fixed_point"
    assert small.q == pytest.approx((1 - 1 / 1.01**2) / 2, rel=0.05)


def test_linear_fates() -> None:
    linear = parse_activation("linear")
    fate = G.variance_map_fate(linear, 1.0)
    assert fate.kind == "marginal"
    assert fate.stable
    assert fate.q == 1.0
    assert fate.iterations == 0
    assert G.variance_map_fate(linear, 1.0, q0=3.0).q == 3.0
    explosion = G.variance_map_fate(linear, 1.1)
    assert explosion.kind == "explosion"
    assert explosion.q is None
    assert explosion.iterations == 109  # 1.21**l exceeds 1e9 at l = 109
    assert G.variance_map_fate(linear, 0.9).kind == "vanishing"
    assert G.variance_map_fate(linear, 0.0).kind == "vanishing"


def test_other_fates() -> None:
    # sigmoid(0) != 0, so V(0) > 0 and there is always a positive fixed point
    assert G.variance_map_fate(parse_activation("sigmoid"), 1.0).kind == "fixed_point"
    # GELU's V(q)/q grows with q, so its second-moment fixed point q = 1 is unstable
    gelu = parse_activation("gelu")
    assert G.variance_map_fate(gelu, G.second_moment_gain(gelu)).kind == "unstable"
    assert G.variance_map_fate(gelu, 1.0).kind == "vanishing"


@pytest.mark.parametrize("name", ALL)
def test_second_moment_gain_fixes_unit_variance(name: str) -> None:
    activation = parse_activation(name)
    fate = G.variance_map_fate(activation, G.second_moment_gain(activation), max_iterations=10)
    assert fate.kind in ("fixed_point", "marginal", "unstable")
    assert fate.q == 1.0
    assert fate.iterations == 0


@pytest.mark.parametrize("name", ALL)
def test_variance_map_is_increasing(name: str) -> None:
    """The fate analysis assumes V is increasing in q; check it for every registered activation."""
    activation = parse_activation(name)
    values = np.array([G.variance_map(activation, 1.0, q) for q in np.geomspace(1e-6, 1e4, 60)])
    assert bool((np.diff(values) > 0).all())


def test_fate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="q0 > 0"):
        G.variance_map_fate(parse_activation("tanh"), 1.0, q0=0.0)
    with pytest.raises(ValueError, match="finite gain"):
        G.variance_map_fate(parse_activation("tanh"), math.nan)


# --------------------------------------------------------------------------- resolve_gain


def test_resolve_gain() -> None:
    tanh, gelu = parse_activation("tanh"), parse_activation("gelu")
    assert G.resolve_gain(tanh) == calculate_gain("tanh")
    assert G.resolve_gain(tanh, "torch") == calculate_gain("tanh")
    assert G.resolve_gain(gelu, "auto") == G.second_moment_gain(gelu)
    assert G.resolve_gain(tanh, "second_moment") == pytest.approx(1.5925374, rel=1e-7)
    assert G.resolve_gain(tanh, "std_ratio", samples=10_000, seed=5) == G.std_ratio_gain(tanh, 10_000, 5)[0]
    assert set(G.GAIN_CHOICES) == {"auto", *G.GAIN_DEFINITIONS}


def test_resolve_gain_errors() -> None:
    with pytest.raises(ValueError, match="calculate_gain defines no gain for gelu"):
        G.resolve_gain(parse_activation("gelu"), "torch")
    with pytest.raises(ValueError, match="unknown gain definition 'kaiming'"):
        G.resolve_gain(parse_activation("tanh"), "kaiming")


def test_report_gain_lookup() -> None:
    report = G.gain_report(parse_activation("gelu"), samples=10_000)
    assert report.gain("auto") == report.second_moment
    assert report.gain("torch") is None
    assert report.gain("std_ratio") == report.std_ratio
    with pytest.raises(ValueError, match="unknown gain definition"):
        report.gain("bogus")
