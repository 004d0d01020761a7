"""Tests for initlab.theory (mean-field predictions) and its numerics (quadrature, numpy activations).

Every expected value is recomputed by a second route: scipy's adaptive quadrature, closed forms
(ReLU's arc-cosine kernel), Monte Carlo, weights drawn by torch, or wide networks run by initlab.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import integrate, optimize

from initlab import theory as T
from initlab.activations import REGISTRY, Activation, names, parse_activation
from initlab.config import Config
from initlab.elementwise import elementwise
from initlab.runner import run
from initlab.schemes import parse_scheme

VARIANTS: list[str | dict[str, Any]] = [
    *names(),
    {"name": "leaky_relu", "negative_slope": 0.2},
    {"name": "elu", "alpha": 0.5},
    {"name": "gelu", "approximate": "tanh"},
    {"name": "softplus", "beta": 2.0},
]
SMOOTH_AND_KINKED = ["tanh", "relu", "selu", "gelu", "sigmoid", {"name": "leaky_relu", "negative_slope": 0.2}]
TANH = parse_activation("tanh")


def _id(value: str | dict[str, Any]) -> str:
    return parse_activation(value).label()


def _density(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _quad(f: Any) -> float:
    """E[f(z)] by scipy's adaptive quadrature, split at 0 (the kinks)."""
    return sum(
        integrate.quad(lambda x: f(x) * _density(x), lo, hi, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
        for lo, hi in ((-math.inf, 0.0), (0.0, math.inf))
    )


def _torch_fn(activation: Activation) -> Any:
    fn = activation.function()
    return lambda x: float(fn(torch.tensor([x], dtype=torch.float64))[0])


def _torch_dphi(activation: Activation) -> Any:
    fn = activation.function()

    def d(x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(t).sum(), t)
        return float(g[0])

    return d


# --------------------------------------------------------------------------- numpy activations


def test_every_registered_activation_has_a_numpy_form() -> None:
    for name in REGISTRY:
        elementwise(parse_activation(name))


@pytest.mark.parametrize("spec", VARIANTS, ids=_id)
def test_numpy_activation_and_derivatives_equal_torch_and_autograd(spec: str | dict[str, Any]) -> None:
    activation = parse_activation(spec)
    e = elementwise(activation)
    x = np.linspace(-25.0, 25.0, 5001)
    x = x[np.abs(x) > 1e-6]  # a.e. derivatives: not at the kink
    t = torch.tensor(x, requires_grad=True)
    y = activation.function()(t)
    (d1,) = torch.autograd.grad(y.sum(), t, create_graph=True)
    d2 = torch.autograd.grad(d1.sum(), t)[0] if d1.requires_grad else torch.zeros_like(t)
    for mine, ref, rtol in ((e.phi, y, 1e-13), (e.dphi, d1, 1e-13), (e.ddphi, d2, 1e-8)):
        expected = ref.detach().numpy()
        np.testing.assert_allclose(mine(x), expected, rtol=rtol, atol=rtol)


# --------------------------------------------------------------------------- 1-D expectations


@pytest.mark.parametrize("spec", SMOOTH_AND_KINKED, ids=_id)
@pytest.mark.parametrize("q", [0.3, 2.0, 7.5])
def test_one_dimensional_expectations_match_scipy(spec: str | dict[str, Any], q: float) -> None:
    activation = parse_activation(spec)
    phi, dphi = _torch_fn(activation), _torch_dphi(activation)
    s = math.sqrt(q)
    assert T.length_map(activation, q, 1.7, 0.2)[0] == pytest.approx(1.7 * _quad(lambda z: phi(s * z) ** 2) + 0.2,
                                                                     rel=1e-10)
    assert T.chi1(activation, q, 1.7)[0] == pytest.approx(1.7 * _quad(lambda z: dphi(s * z) ** 2), rel=1e-10)
    mean, second = _quad(lambda z: phi(s * z)), _quad(lambda z: phi(s * z) ** 2)
    assert T.post_std(activation, q)[0] == pytest.approx(math.sqrt(second - mean**2), rel=1e-9)


@pytest.mark.parametrize("spec", SMOOTH_AND_KINKED, ids=_id)
def test_expectations_match_monte_carlo(spec: str | dict[str, Any]) -> None:
    """neural-tangents style: a second, statistical route with its tolerance stated (5 standard errors)."""
    activation = parse_activation(spec)
    e = elementwise(activation)
    rng = np.random.default_rng(0)
    q, c, n = 1.8, 0.6, 1_000_000
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    for theory, samples in (
        (T.length_map(e, q, 1.0, 0.0)[0], e.phi(u1) ** 2),
        (T.chi1(e, q, 1.0)[0], e.dphi(u1) ** 2),
        (T.correlation_map(e, c, q, 1.0, 0.0)[0], e.phi(u1) * e.phi(u2) / q),
        (T.correlation_slope(e, c, q, 1.0)[0], e.dphi(u1) * e.dphi(u2)),
    ):
        se = samples.std() / math.sqrt(n)
        assert abs(theory - samples.mean()) <= 5 * se + 1e-12, (theory, samples.mean(), se)


# --------------------------------------------------------------------------- 2-D expectations


@pytest.mark.parametrize("c", [-0.9, -0.3, 0.0, 0.25, 0.8, 0.999, 1.0])
def test_relu_correlation_map_is_the_arc_cosine_kernel(c: float) -> None:
    """Cho & Saul 2009: E[relu(u1)relu(u2)] = q/(2π)(sin θ + (π − θ)cos θ), E[step·step] = (π − θ)/(2π)."""
    relu, q, theta = parse_activation("relu"), 2.3, math.acos(c)
    kernel = (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
    assert T.correlation_map(relu, c, q, 2.0, 0.0)[0] == pytest.approx(2.0 * kernel, rel=1e-10, abs=1e-12)
    assert T.correlation_slope(relu, c, q, 2.0)[0] == pytest.approx(2.0 * (math.pi - theta) / (2 * math.pi),
                                                                    rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("c", [-0.5, 0.12, 0.7, 0.95])
def test_tanh_correlation_map_matches_scipy_dblquad(c: float) -> None:
    q, s = 4.0, math.sqrt(1 - c * c)

    def integrand(z2: float, z1: float) -> float:
        u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + s * z2)
        return math.tanh(u1) * math.tanh(u2) * _density(z1) * _density(z2)

    pair = integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-12, epsrel=1e-11)[0]
    assert T.correlation_map(TANH, c, q, 2.5, 0.1)[0] == pytest.approx((2.5 * pair + 0.1) / q, rel=1e-8, abs=1e-10)


def _features(activation: Activation) -> tuple[float, list[float]]:
    """The bend's scale and the kinks/jumps of φ, read off the activation's own parameters."""
    if activation.name == "softplus":
        beta, threshold = activation.model_dump()["beta"], activation.model_dump()["threshold"]
        return 1.0 / beta, [0.0, threshold / beta]
    return 1.0, [0.0]


def _quad_u(f: Any, q: float, scale: float, kinks: list[float]) -> float:
    """E[f(u)], u ~ N(0, q), by scipy's adaptive quadrature in u itself, with breakpoints at the
    activation's kinks, at ±scale·4^k (its bend) and at ±√q·2^k (the Gaussian's width), over ±14√q."""
    s, reach = math.sqrt(q), 14.0 * math.sqrt(q)
    marks = [*kinks, *(sign * scale * 4.0**k for k in range(-2, 4) for sign in (-1, 1)),
             *(sign * s * 2.0**k for k in range(-3, 4) for sign in (-1, 1))]
    points = sorted({-reach, reach, *(m for m in marks if -reach < m < reach)})

    def integrand(u: float) -> float:
        return float(f(np.array([u]))[0]) * math.exp(-0.5 * u * u / q) / (math.sqrt(2.0 * math.pi) * s)

    return sum(integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-10, limit=400)[0]
               for a, b in itertools.pairwise(points))


@pytest.mark.parametrize("spec", VARIANTS, ids=_id)
def test_expectations_match_scipy_from_tiny_to_huge_variance(spec: str | dict[str, Any]) -> None:
    """E[φ²] and E[φ′²] (the length map and χ₁) for q over 1e-8 … 1e12, against scipy in u.

    The fixed-node rule in z missed φ′²'s peak of width 1/√q: tanh's χ₁ at σw² = 1e8 came out 8e-24.
    """
    activation = parse_activation(spec)
    e = elementwise(activation)
    scale, kinks = _features(activation)
    for q in np.geomspace(1e-8, 1e12, 6):
        want_phi2 = _quad_u(lambda u: e.phi(u) ** 2, q, scale, kinks)
        want_chi = _quad_u(lambda u: e.dphi(u) ** 2, q, scale, kinks)
        assert T.length_map(e, q, 1.0, 0.0)[0] == pytest.approx(want_phi2, rel=1e-8), q
        assert T.chi1(e, q, 1.0)[0] == pytest.approx(want_chi, rel=1e-8), q


@pytest.mark.parametrize("spec", VARIANTS, ids=_id)
def test_expectations_at_zero_and_tiny_variance(spec: str | dict[str, Any]) -> None:
    """q = 0 is φ(0)²; as q → 0, E[φ′²] → the mean of φ′(0±)² (a kink's two sides), and where
    φ(0) = 0, E[φ(√q z)²] = q·(that mean) + O(q²)."""
    e = elementwise(parse_activation(spec))
    phi0, d0 = float(e.phi(np.zeros(1))[0]), float(e.dphi(np.zeros(1))[0])
    sides = float(np.mean(e.dphi(np.array([-1e-200, 1e-200])) ** 2))
    assert T.length_map(e, 0.0, 2.0, 0.1)[0] == pytest.approx(2.0 * phi0**2 + 0.1, rel=1e-15, abs=1e-300)
    assert T.chi1(e, 0.0, 1.0)[0] == pytest.approx(d0**2, rel=1e-15)
    assert T.chi1(e, [1e-300, 1e-24], 1.0) == pytest.approx([sides] * 2, rel=1e-9)
    if phi0 == 0.0:
        assert T.length_map(e, 1e-300, 1.0, 0.0)[0] == pytest.approx(1e-300 * sides, rel=1e-9)
    assert np.isfinite(T.post_std(e, [0.0, 1e-300])).all()


@pytest.mark.parametrize("spec", ["tanh", "selu", "softplus", {"name": "elu", "alpha": 0.5}])
def test_length_map_slope_at_large_variance_is_its_derivative(spec: str | dict[str, Any]) -> None:
    """At large q ∂V/∂q is tiny for saturating φ: a relative central difference of the length map."""
    act = parse_activation(spec)
    for q in (1e4, 1e8):
        h = 1e-4 * q
        numeric = (T.length_map(act, q + h, 1.0, 0.0)[0] - T.length_map(act, q - h, 1.0, 0.0)[0]) / (2 * h)
        assert T.length_map_slope(act, q, 1.0)[0] == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("sw2", [1e6, 1e8, 1e60])
def test_tanh_at_huge_weight_variance_is_chaotic(sw2: float) -> None:
    """q* → σw² (tanh saturates: E[tanh²] → 1) and χ₁ = σw² E[sech⁴(√q* z)] → σw²(4/3)/√(2πq*) (Laplace:
    ∫sech⁴ = 4/3 against the Gaussian's density 1/√(2πq*) at 0); c* = 0 (odd φ, σb² = 0) with
    χ_c = σw² E[sech²]² → σw²·(2/√(2πq*))² = 2/π. Before: χ₁ = 51 at 1e6, 8e-24 ('ordered') at 1e8."""
    at = T.point(TANH, sw2, 0.0)
    assert at.fate == "fixed_point" and at.q_star is not None
    assert at.q_star == pytest.approx(sw2 * (1 - 2 / math.sqrt(2 * math.pi * sw2)), rel=1e-5)
    assert at.chi1 == pytest.approx(sw2 * 4 / 3 / math.sqrt(2 * math.pi * at.q_star), rel=2e-5)
    assert at.phase == "chaotic" and at.c_star == pytest.approx(0.0, abs=1e-12)
    assert at.chi_c == pytest.approx(2 / math.pi, rel=2e-3) and at.xi_c == pytest.approx(-1 / math.log(at.chi_c))
    assert at.xi_q is not None and 0 < at.xi_q < 1  # ∂V/∂q ≈ σw²/(√(2π) q*^1.5): q settles at once


@pytest.mark.parametrize("q", [1e-8, 1e8, 1e12])
def test_relu_correlation_map_is_the_arc_cosine_kernel_at_any_variance(q: float) -> None:
    relu, c = parse_activation("relu"), 0.4
    theta = math.acos(c)
    kernel = (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
    assert T.correlation_map(relu, c, q, 2.0, 0.0)[0] == pytest.approx(2.0 * kernel, rel=1e-10)
    assert T.correlation_slope(relu, c, q, 2.0)[0] == pytest.approx((math.pi - theta) / math.pi, rel=1e-10)


@pytest.mark.parametrize("c", [0.0, 0.3, -0.6, 0.9])
def test_tanh_correlation_expectations_at_large_variance(c: float) -> None:
    """q = 1e8: E[sech²(u1)sech²(u2)] = (∫sech²)² p(0, 0) (1 + O(1/q)) = 4/(2πq√(1−c²)), and
    E[tanh u1 tanh u2] → E[sign u1 sign u2] = (2/π) arcsin c (Sheppard) up to O(1/√q)."""
    q = 1e8
    assert T.correlation_slope(TANH, c, q, 1.0)[0] == pytest.approx(4 / (2 * math.pi * q * math.sqrt(1 - c * c)),
                                                                    rel=1e-6)
    assert T.correlation_map(TANH, c, q, q, 0.0)[0] == pytest.approx(2 / math.pi * math.asin(c), abs=1e-3)


def test_fixed_point_is_found_far_from_q0() -> None:
    """q* is searched over the float range, not a fixed number of octaves from q0: tanh's q* ≈ σw²
    from q0 = 1e82 (it was 'vanishing', q* = 0) and from q0 = 1 at σw² = 1e60 and 1e300 (it was
    'explosion'); and a tiny q* = σb²/(1 − σw²) (to O(q*²)) from q0 = 1 (it was 'vanishing')."""
    for sw2, q0 in ((2.56e62, 2.56e82), (1e60, 1.0), (1e300, 1.0)):
        fixed = T.length_fixed_point(TANH, sw2, 0.0, q0)
        assert fixed.kind == "fixed_point" and fixed.q == pytest.approx(sw2, rel=1e-12)
    tiny = T.length_fixed_point(TANH, 0.5, 1e-40)
    assert tiny.kind == "fixed_point" and tiny.q == pytest.approx(2e-40, rel=1e-9)
    relu = parse_activation("relu")
    assert T.length_fixed_point(relu, 3.0, 0.0).kind == "explosion"
    assert T.length_fixed_point(relu, 1.0, 0.0).kind == "vanishing"


def test_run_prediction_at_an_overflowing_weight_std_is_chaotic_not_ordered() -> None:
    """The issue's ``init.std=1e30`` (σw² = 1e60·256): the verdict printed 'chi1 = 0 (ordered)'."""
    base = {"name": "t", "seed": 0, "model": {"depth": 8, "width": 256, "activation": "tanh"},
            "init": {"scheme": "normal", "std": 1e30}, "data": {"batch_size": 8, "std": 1e10}}
    prediction = T.predict(Config.model_validate(base), 1e20)
    sw2 = 1e60 * 256
    assert prediction.q_star == pytest.approx(sw2, rel=1e-12) and prediction.phase == "chaotic"
    assert prediction.chi1 == pytest.approx(4 / 3 * math.sqrt(sw2 / (2 * math.pi)), rel=1e-6)
    assert prediction.q[0] == pytest.approx(sw2 * 1e20) and prediction.q[1] == pytest.approx(sw2, rel=1e-12)


def test_theory_command_at_huge_weight_variance() -> None:
    code, out, err = _invoke("tanh", "--sw2", "1e8", "--json", "--depth", "2")
    doc = json.loads(out)
    assert code == 0, err
    assert doc["phase"] == "chaotic" and doc["chi1"] == pytest.approx(5319.44, rel=1e-5)


def test_length_map_slope_is_the_derivative_of_the_length_map() -> None:
    for spec in ("tanh", "selu", "gelu", "softplus"):
        act, q, h = parse_activation(spec), 1.3, 1e-5
        numeric = (T.length_map(act, q + h, 2.0, 0.0)[0] - T.length_map(act, q - h, 2.0, 0.0)[0]) / (2 * h)
        assert T.length_map_slope(act, q, 2.0)[0] == pytest.approx(numeric, rel=1e-7)


# --------------------------------------------------------------------------- published numbers


def test_tanh_edge_of_chaos_at_bias_variance_0_05() -> None:
    sw2 = T.critical_sigma_w2(TANH, 0.05)
    assert sw2 is not None and sw2 == pytest.approx(1.761, abs=5e-4)
    q_star = optimize.brentq(lambda q: sw2 * _quad(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + 0.05 - q, 1e-3, 10)
    chi = sw2 * _quad(lambda z: (1 - math.tanh(math.sqrt(q_star) * z) ** 2) ** 2)
    assert chi == pytest.approx(1.0, abs=1e-9)
    assert T.critical_sigma_b2(TANH, sw2) == pytest.approx(0.05, rel=1e-8)


def test_tanh_chaotic_point_of_poole_et_al() -> None:
    """σw = 2.5, σb² = 0.09: q* ≈ 4.079, χ₁ ≈ 1.585, c* ≈ 0.122; each checked by scipy at the returned value."""
    at = T.point(TANH, 2.5**2, 0.09)
    assert at.q_star == pytest.approx(4.079, abs=1e-3) and at.chi1 == pytest.approx(1.585, abs=1e-3)
    assert at.c_star == pytest.approx(0.122, abs=1e-3) and at.phase == "chaotic"
    s = math.sqrt(at.q_star)
    assert 6.25 * _quad(lambda z: math.tanh(s * z) ** 2) + 0.09 == pytest.approx(at.q_star, rel=1e-10)
    assert 6.25 * _quad(lambda z: (1 - math.tanh(s * z) ** 2) ** 2) == pytest.approx(at.chi1, rel=1e-10)
    assert T.correlation_map(TANH, at.c_star, at.q_star, 6.25, 0.09)[0] == pytest.approx(at.c_star, abs=1e-12)
    assert at.xi_c == pytest.approx(-1 / math.log(at.chi_c)) and 0 < at.chi_c < 1


def test_phases_and_depth_scales() -> None:
    relu = T.point(parse_activation("relu"), 2.0, 0.0)
    assert relu.chi1 == pytest.approx(1.0, abs=1e-12) and relu.phase == "critical" and relu.xi_c == math.inf
    ordered = T.point(TANH, 1.2, 0.3)
    assert ordered.phase == "ordered" and ordered.c_star == 1.0 and ordered.chi_c == ordered.chi1
    assert ordered.xi_q == pytest.approx(-1 / math.log(ordered.length_slope))
    collapse = T.point(TANH, 0.8, 0.0)  # power-law collapse to q* = 0
    assert collapse.fate == "vanishing" and collapse.q_star == 0.0 and collapse.chi1 == pytest.approx(0.8)
    creep = T.point(parse_activation("relu"), 2.0, 0.1)  # q grows by σb² per layer: no fixed point
    assert creep.fate == "explosion" and creep.q_star is None


# --------------------------------------------------------------------------- configs


def _config(**model: Any) -> dict[str, Any]:
    return {"name": "t", "seed": 0, "model": {"depth": 6, "width": 64, **model}, "data": {"batch_size": 8}}


@pytest.mark.parametrize(
    ("scheme", "activation"),
    [("default", "tanh"), ("xavier_uniform", "tanh"), ({"scheme": "xavier_normal", "gain": "auto"}, "tanh"),
     ("kaiming_normal", "relu"), ({"scheme": "kaiming_uniform", "nonlinearity": "auto"}, "leaky_relu"),
     ({"scheme": "normal", "std": 0.05}, "tanh"), ({"scheme": "uniform", "a": -0.1, "b": 0.1}, "tanh"),
     ({"scheme": "trunc_normal", "std": 0.08, "a": -0.1, "b": 0.1}, "tanh"), ({"scheme": "sparse", "sparsity": 0.3,
                                                                              "std": 0.06}, "tanh"),
     ({"scheme": "lecun_normal", "gain": 1.3}, "selu"), ({"scheme": "orthogonal", "gain": 1.2}, "tanh")],
    ids=str,
)
def test_sigma_w2_equals_the_variance_of_drawn_weights(scheme: Any, activation: str) -> None:
    """Draw a 512 x 512 weight with the scheme itself: Var(W)·fan_in is σw² within sampling error."""
    n, act, chosen = 512, parse_activation(activation), parse_scheme(scheme)
    weight = torch.empty(n, n, dtype=torch.float64)
    chosen.init_(weight, act, torch.Generator().manual_seed(1))
    if chosen.scheme == "default":
        from initlab.schemes import linear_default_

        linear_default_(weight, None, torch.Generator().manual_seed(1))
    measured = float(weight.var()) * n
    assert T.sigma_w2(chosen, act, n) == pytest.approx(measured, rel=0.02)


@pytest.mark.parametrize("scheme", [{"scheme": "constant", "val": 0.3}, "ones", {"scheme": "normal", "mean": 0.01},
                                    {"scheme": "uniform", "a": 0.0, "b": 1.0}])
def test_theory_does_not_apply_to_weights_with_a_mean(scheme: Any) -> None:
    config = Config.model_validate({**_config(), "init": scheme if isinstance(scheme, dict) else {"scheme": scheme}})
    prediction = T.predict(config, 1.0)
    assert not prediction.applicable and prediction.q == [] and prediction.chi1 is None
    assert prediction.reason is not None and "mean-field" in prediction.reason


def test_relu_kaiming_is_critical_and_linear_keeps_the_input_second_moment() -> None:
    relu = Config.model_validate({**_config(activation="relu"), "init": {"scheme": "kaiming_normal"}})
    prediction = T.predict(relu, 1.0)
    assert prediction.chi1 == pytest.approx(1.0, abs=1e-12) and prediction.phase == "critical"
    assert prediction.finite_width_log_std_spread == pytest.approx(0.5 * math.sqrt(5 * 6 / 64))
    data = {"batch_size": 8, "distribution": "uniform", "low": -0.5, "high": 2.0}
    linear = Config.model_validate({**_config(), "init": {"scheme": "normal", "std": 1 / 8}, "data": data})
    ex2 = T.input_second_moment(linear.data)
    assert ex2 == pytest.approx(np.random.default_rng(0).uniform(-0.5, 2.0, 2_000_000).__pow__(2).mean(), rel=2e-3)
    assert T.predict(linear, ex2).q == pytest.approx([ex2] * 6, rel=1e-13)


def test_tanh_xavier_five_thirds_settles_at_post_std_0_6513() -> None:
    config = Config.model_validate({**_config(activation="tanh", depth=60),
                                    "init": {"scheme": "xavier_uniform", "gain": 5 / 3}})
    prediction = T.predict(config, 1.0)
    assert prediction.post_std[-1] == pytest.approx(0.6513, abs=5e-5)
    s = math.sqrt(prediction.q[-1])
    assert prediction.post_std[-1] == pytest.approx(math.sqrt(_quad(lambda z: math.tanh(s * z) ** 2)), rel=1e-10)


# --------------------------------------------------------------------------- theory against networks


def _wide(activation: str, weight: dict[str, Any], bias: dict[str, Any] | None) -> Config:
    model = {"depth": 24, "width": 1024, "activation": activation, "bias": bias is not None}
    init = {**weight, **({"bias": bias} if bias else {})}
    return Config.model_validate({"name": "wide", "seed": 0, "model": model, "init": init,
                                  "data": {"batch_size": 512}})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gain", "bias"),
    [(1.5, None), (5 / 3, {"scheme": "normal", "std": 0.3}), (2.5, {"scheme": "normal", "std": 0.3})],
    ids=["gain1.5", "gain5/3+bias", "gain2.5+bias"],
)
def test_wide_tanh_network_follows_the_predicted_std_at_every_layer(gain: float, bias: dict[str, Any] | None) -> None:
    """Width 1024, batch 512, 24 blocks: finite-width fluctuations are O(1/√n) ≈ 3 %."""
    result = run(_wide("tanh", {"scheme": "xavier_normal", "gain": gain}, bias))
    layers = result.layers
    assert np.abs(np.log(layers["std"] / layers["theory_std"])).max() <= 0.03
    assert np.abs(np.log(layers["pre_std"] / layers["theory_pre_std"])).max() <= 0.05


@pytest.mark.slow
def test_wide_relu_network_stays_within_the_finite_width_drift() -> None:
    """ReLU at Kaiming is critical: no restoring force, so the std random-walks by Hanin–Rolnick's amount."""
    result = run(_wide("relu", {"scheme": "kaiming_normal"}, None))
    assert result.theory is not None and result.theory.finite_width_log_std_spread is not None
    drift, spread = result.theory.finite_width_log_std_drift, result.theory.finite_width_log_std_spread
    assert drift is not None
    error = np.log(result.layers["std"] / result.layers["theory_std"])
    assert np.abs(error).max() <= abs(drift) + 3 * spread
    predicted = result.layers["theory_std"].to_numpy()
    assert np.ptp(predicted) <= 1e-12 * predicted[0]  # q_l is the same at every layer


def test_hanin_rolnick_spread_matches_monte_carlo_over_narrow_relu_nets() -> None:
    """1000 independent ReLU nets (width 64, 12 blocks, N(0, 2/n) weights) in plain torch."""
    n, blocks, trials = 64, 12, 1000
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(trials, n, 1, generator=generator, dtype=torch.float64)
    start = h.square().mean((1, 2))
    for layer in range(blocks):
        weight = torch.randn(trials, n, n, generator=generator, dtype=torch.float64) * math.sqrt(2 / n)
        h = weight @ (torch.relu(h) if layer else h)
        if layer == 0:
            start = h.square().mean((1, 2))
    log_std = (0.5 * torch.log(h.square().mean((1, 2)) / start)).numpy()
    drift, spread = T.finite_width_log_std([n] * (blocks - 1))
    se = spread / math.sqrt(trials)
    assert log_std.mean() == pytest.approx(drift, abs=5 * se + 0.02)
    assert log_std.std() == pytest.approx(spread, rel=0.1)


def test_run_writes_theory_columns_and_summary_and_keeps_measured_columns() -> None:
    base = {"name": "t", "seed": 3, "model": {"depth": 6, "width": 32, "activation": "tanh"},
            "init": {"scheme": "xavier_uniform", "gain": 5 / 3}, "data": {"batch_size": 8}}
    result = run(Config.model_validate(base))
    measured = [c for c in result.layers.columns if not c.startswith("theory_")]
    assert list(result.layers.columns) == [*measured, "theory_pre_std", "theory_std", "theory_grad_std",
                                           "theory_grad_rms"]
    assert result.summary["theory"]["phase"] == "chaotic" and result.summary["theory"]["q_star"] > 0
    forward = run(Config.model_validate({**base, "backward": False}))
    assert list(forward.layers.columns) == [c for c in result.layers.columns if "grad" not in c]
    constant = run(Config.model_validate({**base, "init": {"scheme": "constant", "val": 0.1}}))
    assert constant.layers["theory_std"].isna().all() and constant.summary["theory"]["applicable"] is False
    assert constant.summary["theory"]["chi1"] is None


# --------------------------------------------------------------------------- the command


def _invoke(*args: str, columns: int = 120) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from initlab.cli import app

    result = CliRunner().invoke(app, ["theory", *args], env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


def test_theory_command_prints_every_number_whole_even_in_a_narrow_terminal() -> None:
    code, out, err = _invoke("tanh", "--sw2", "6.25", "--sb2", "0.09", "--depth", "4", columns=20)
    assert code == 0, err
    for name, value in (("q*", "4.07912"), ("χ₁", "1.58522"), ("c*", "0.122104"), ("phase", "chaotic")):
        # Too narrow for the table: one value per line, whole.
        assert re.search(rf"^name {re.escape(name)}\n  value: {re.escape(value)}\b", out, re.MULTILINE), (name, out)
    assert max(len(line) for line in out.splitlines()) <= 20  # the per-layer table split into pieces that fit
    assert {"2.02464", "0.79938", "1.58162"} <= set(out.split())  # layer 3's pre std, post std and χ_l, whole


def test_theory_json_matches_the_library() -> None:
    code, out, _ = _invoke("relu", "--sw2", "2", "--json", "--depth", "3")
    doc = json.loads(out)
    assert code == 0 and doc["phase"] == "critical" and doc["chi1"] == pytest.approx(1.0)
    assert doc["xi_c"] is None  # ∞ is not JSON: null
    # q0 = σw²·E[x²] + σb² for a unit-variance input, as in `run`; marginal: q stays there
    assert doc["q0"] == 2.0 and [row["q"] for row in doc["layers"]] == pytest.approx([2.0, 2.0, 2.0])


def test_theory_critical_both_ways() -> None:
    code, out, _ = _invoke("tanh", "--critical", "--sb2", "0.05")
    assert code == 0 and "σw² = 1.76095" in out
    code, out, _ = _invoke("tanh", "--critical", "--sw2", "1.7609546396", "--json")
    assert code == 0 and json.loads(out)["sb2"] == pytest.approx(0.05, rel=1e-6)
    code, out, _ = _invoke("tanh", "--critical", "--sw2", "0.5")
    assert code == 0 and "no σb² puts χ₁ = 1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["tanh", "--critical", "--sw2", "1", "--sb2", "1"], "not both"), (["tanh", "--sw2", "nan"], "--sw2"),
     (["tanh", "--q0", "0"], "--q0"), (["tanh", "--phase", "--critical"], "separate"),
     (["swish2"], "unknown activation"), (["leaky_relu", "--param", "negative_slope=-1"], "negative_slope")],
)
def test_theory_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = _invoke(*args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err


def test_theory_command_imports_no_torch() -> None:
    code = ("import sys; from typer.testing import CliRunner; from initlab.cli import app; "
            "r = CliRunner().invoke(app, ['theory', 'tanh', '--critical', '--sb2', '0.05']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_theory_phase_writes_png_and_svg(tmp_path: Path) -> None:
    code, out, err = _invoke("tanh", "--phase", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    line = {round(p["sb2"], 6): p["sw2"] for p in doc["critical_line"]}
    assert line[0.0] == pytest.approx(1.0, abs=1e-6) and line[0.5] == pytest.approx(
        T.critical_sigma_w2(TANH, 0.5), rel=1e-6)
    assert {"ordered", "chaotic"} <= set(doc["phase"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theory-phase-tanh.png", "theory-phase-tanh.svg"]


def test_phase_diagram_regions_agree_with_chi1_and_its_svg_is_reproducible() -> None:
    from initlab.phase_plot import phase_plot_files

    diagram = T.phase_diagram(TANH, np.linspace(0.5, 4.0, 8), np.linspace(0.0, 0.3, 4), line_points=3)
    for i, b2 in enumerate(diagram.sb2):
        for j, w2 in enumerate(diagram.sw2):
            fine = T.phase_of(float(T.chi1_grid(TANH, w2, b2)[0]))  # the fine rule, not the grid's
            expected = {"ordered": -1, "critical": 0, "chaotic": 1}[fine]
            assert diagram.phase[i, j] == expected
    assert phase_plot_files(diagram)["svg"] == phase_plot_files(diagram)["svg"]


@pytest.mark.parametrize(("mean", "std", "a", "b"), [(0.0, 1e36, -2.0, 2.0), (0.0, 1.0, -0.2, 0.2),
                                                    (0.5, 1.0, -0.1, 0.3), (0.0, 1.0, -2.0, -1.6),
                                                    (0.0, 0.5, -2.0, 2.0)])
def test_truncated_normal_moments_hold_in_the_uniform_limit(mean: float, std: float, a: float, b: float) -> None:
    """A narrow [a, b] against std cancels in the closed form; scipy (or the uniform limit) is the reference."""
    from scipy import stats

    from initlab.theory import _truncated_normal

    got_mean, got_var = _truncated_normal(mean, std, a, b)
    if std > 1e6:  # beyond scipy's range: the uniform limit U(a, b)
        want_mean, want_var = (a + b) / 2, (b - a) ** 2 / 12
    else:
        dist = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
        want_mean, want_var = float(dist.mean()), float(dist.var())
    assert got_mean == pytest.approx(want_mean, abs=1e-12)
    assert got_var == pytest.approx(want_var, rel=1e-10)


# ----------------------------------------------------------------- no fixed point, no phase (issue-10 review)

RELU = parse_activation("relu")


@pytest.mark.parametrize(("activation", "sb2", "limit"), [("relu", 0.1, 2.0), ("linear", 0.1, 1.0),
                                                           ({"name": "softplus", "beta": 2.0}, 0.0, 2.0)])
def test_no_edge_of_chaos_where_q_has_no_fixed_point(activation: Any, sb2: float, limit: float) -> None:
    """χ₁ = 1 only as q → ∞ (ReLU/linear with bias: q grows by σb² a layer for ever; softplus grows like ReLU)."""
    act = parse_activation(activation)
    assert T.critical_sigma_w2(act, sb2) is None
    assert T.critical_sigma_w2(act, sb2, asymptotic=True) == pytest.approx(limit, rel=1e-6)  # σw²·E[φ′²] → σw²·slope²
    assert T.critical_sigma_b2(act, limit) is None or T.critical_sigma_b2(act, limit) == 0.0
    name = activation if isinstance(activation, str) else activation["name"]
    params = [] if isinstance(activation, str) else ["--param", "beta=2"]
    code, out, _ = _invoke(name, *params, "--critical", "--sb2", str(sb2), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["sw2"] is None and doc["q_star"] is None and "fixed point" in doc["reason"]
    assert doc["asymptotic"]["sw2"] == pytest.approx(limit, rel=1e-6)
    code, out, _ = _invoke(name, *params, "--critical", "--sb2", str(sb2))
    assert code == 0 and "no edge of chaos" in out and "q* = n/a" not in out


def test_relu_edge_of_chaos_only_without_bias() -> None:
    # V(q) = σw² q/2 + σb²: q stays where it starts iff σw² = 2 and σb² = 0
    assert T.critical_sigma_w2(RELU, 0.0) == pytest.approx(2.0, rel=1e-9)
    assert T.critical_sigma_b2(RELU, 2.0) == 0.0
    diagram = T.phase_diagram(RELU, np.linspace(0.5, 4.0, 8), np.linspace(0.0, 0.3, 4), line_points=4)
    assert diagram.critical_sw2[0] == pytest.approx(2.0, rel=1e-6) and np.isnan(diagram.critical_sw2[1:]).all()


@pytest.mark.parametrize(("activation", "sw2", "sb2", "phase"), [
    ("relu", 3.0, 0.0, "exploding"), ("relu", 1.0, 0.0, "vanishing"), ("relu", 2.0, 0.1, "exploding"),
    ({"name": "leaky_relu", "negative_slope": 0.2}, 2.5, 0.0, "exploding"), ("linear", 0.5, 0.0, "vanishing"),
    ("linear", 1.0, 0.1, "exploding"), ("relu", 2.0, 0.0, "critical"), ("relu", 1.0, 0.1, "ordered"),
    ("tanh", 0.5, 0.0, "ordered")])
def test_homogeneous_activations_without_a_fixed_point_have_no_phase(activation: Any, sw2: float, sb2: float,
                                                                     phase: str) -> None:
    """Closed form V(q) = σw²·E[φ(z)²]·q + σb² for positively homogeneous φ: no finite q* unless it is 1."""
    act = parse_activation(activation)
    at = T.point(act, sw2, sb2, 1.0)
    assert at.phase == phase
    if phase in ("exploding", "vanishing"):
        assert at.c_star is None and at.chi_c is None and at.xi_c is None
    name = activation if isinstance(activation, str) else activation["name"]
    params = [] if isinstance(activation, str) else ["--param", "negative_slope=0.2"]
    code, out, _ = _invoke(name, *params, "--sw2", str(sw2), "--sb2", str(sb2), "--depth", "1")
    shown = {"exploding": "exploding (no fixed point)", "vanishing": "vanishing (no fixed point)"}.get(phase, phase)
    assert code == 0 and re.search(rf"^ phase\s+{re.escape(shown)}", out, re.MULTILINE), out


def test_relu_phase_diagram_paints_no_chaos() -> None:
    """ReLU: q* = σb²/(1 − σw²/2) for σw² < 2 and σb² > 0 (ordered), none elsewhere."""
    w2, b2 = np.array([0.5, 1.5, 2.0, 2.5, 3.5]), np.array([0.0, 0.1, 0.3])
    diagram = T.phase_diagram(RELU, w2, b2, line_points=2)
    expected = [[-2, -2, 0, 2, 2], [-1, -1, 2, 2, 2], [-1, -1, 2, 2, 2]]
    assert diagram.phase.tolist() == expected


def test_finite_width_drift_only_at_the_edge_of_chaos() -> None:
    xavier = Config.model_validate({**_config(activation="relu", bias=False), "init": {"scheme": "xavier_uniform"}})
    prediction = T.predict(xavier, 1.0)
    assert prediction.finite_width_log_std_drift is None and prediction.finite_width_log_std_spread is None
    # the mean-field trend: q halves per block, log(last/first) of the std = (L−1)/2·ln(1/2)
    trend = math.log(prediction.pre_std[-1] / prediction.pre_std[0])
    assert trend == pytest.approx(0.5 * 5 * math.log(0.5), rel=1e-9)
    assert "log_std_drift" not in prediction.summary()
    kaiming = Config.model_validate({**_config(activation="relu", bias=False), "init": {"scheme": "kaiming_normal"}})
    assert T.predict(kaiming, 1.0).summary()["finite_width_log_std_drift"] == pytest.approx(-5 * 6 / 64 / 4)


def test_theory_starts_from_a_unit_variance_inputs_q0_like_run() -> None:
    code, out, _ = _invoke("tanh", "--sw2", "2.4", "--sb2", "0.1", "--depth", "1")
    assert code == 0 and "q0 = 2.5 (input E[x²] = 1)" in out
    assert re.search(r"^\s+0\s+2\.5\s", out, re.MULTILINE)
    code, out, _ = _invoke("tanh", "--sw2", "2.4", "--sb2", "0.1", "--depth", "1", "--q0", "0.3", "--json")
    assert code == 0 and json.loads(out)["q0"] == 0.3 and json.loads(out)["layers"][0]["q"] == 0.3
    config = Config.model_validate({**_config(), "init": {"scheme": "normal", "std": math.sqrt(2.4 / 64)},
                                    "model": {"depth": 3, "width": 64, "bias": False}})
    code, out, _ = _invoke("tanh", "--sw2", "2.4", "--depth", "1", "--json")
    assert json.loads(out)["q0"] == pytest.approx(T.predict(config, 1.0).q[0], rel=1e-12)


@pytest.mark.parametrize(("activation", "sw2"), [("tanh", 256.0), ("selu", 1.0)])
def test_c_star_below_the_quadrature_accuracy_is_zero(activation: str, sw2: float) -> None:
    """Odd φ without bias: C(0) = σw²·E[φ(u₁)]E[φ(u₂)]/q* = 0 exactly for tanh; SELU's c* is ~1e-31 by quadrature."""
    at = T.point(parse_activation(activation), sw2, 0.0, 1.0)
    assert at.c_star == 0.0
    code, out, _ = _invoke(activation, "--sw2", str(sw2), "--depth", "1")
    assert code == 0 and re.search(r"^ c\*\s+0\s", out, re.MULTILINE), out


def test_phase_command_starts_at_zero_and_draws_no_line_where_no_edge_exists(tmp_path: Path) -> None:
    code, out, err = _invoke("relu", "--phase", "--out", str(tmp_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["sw2"][0] == 0.0 and doc["sw2"][-1] == 4.0
    cells = {name for row in doc["phase"] for name in row}
    assert "chaotic" not in cells and {"exploding", "vanishing", "ordered"} <= cells
    line = [(p["sb2"], p["sw2"]) for p in doc["critical_line"] if p["sw2"] is not None]
    assert len(line) == 1 and line[0][0] == 0.0 and line[0][1] == pytest.approx(2.0, rel=1e-6)
