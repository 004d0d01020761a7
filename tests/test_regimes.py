from __future__ import annotations

import math

import numpy as np
import pytest

from initlab.config import VerdictConfig
from initlab.regimes import Trace, classify

DEFAULT = VerdictConfig()


def trace(values: np.ndarray, input_std: float | None = None, **extra: object) -> Trace:
    return Trace([float(v) for v in values], [0.0] * len(values), input_std, **extra)  # type: ignore[arg-type]


def test_steady_geometric_growth_is_an_explosion() -> None:
    std = 1.05 ** np.arange(100) * np.exp(np.random.default_rng(0).normal(0, 0.01, 100))
    verdict = classify(trace(std), DEFAULT)
    assert verdict.regime == "explosion" and not verdict.nonfinite
    assert verdict.growth_per_layer == pytest.approx((std[-1] / std[0]) ** (1 / 99))


def test_the_input_is_the_reference_when_given() -> None:
    std = np.full(10, 0.8)
    verdict = classify(trace(std, input_std=2.0), DEFAULT)
    assert verdict.ratio == pytest.approx(0.4) and verdict.growth_per_layer == pytest.approx(0.4 ** (1 / 10))
    assert verdict.decades == pytest.approx(math.log10(0.4))
    assert classify(trace(std), DEFAULT).ratio == pytest.approx(1.0)  # without one, layer 0


def test_steady_power_law_decay_is_vanishing() -> None:
    layers = np.arange(1, 101)
    std = 0.6 / np.sqrt(layers) * np.exp(np.random.default_rng(1).normal(0, 0.01, 100))
    assert classify(trace(std), DEFAULT).regime == "vanishing"


def test_a_random_walk_that_ends_far_away_is_still_stable() -> None:
    """Finite width makes a critical net's log-std a random walk: no trend, no verdict."""
    steps = np.random.default_rng(2).normal(0, 0.15, 99)
    steps -= steps.mean() - math.log(0.3) / 99  # ends at 0.3x with no consistent drift
    verdict = classify(trace(np.exp(np.concatenate([[0.0], np.cumsum(steps)]))), DEFAULT)
    assert verdict.ratio == pytest.approx(0.3)
    assert abs(verdict.trend_t) < DEFAULT.trend_t  # type: ignore[arg-type]
    assert verdict.regime == "stable"


def test_thresholds_come_from_the_config() -> None:
    std = 0.99 ** np.arange(50) * (1 + 0.001 * np.sin(np.arange(50)))
    assert classify(trace(std), DEFAULT).regime == "stable"  # x0.61 > vanish_ratio 0.5
    assert classify(trace(std), VerdictConfig(vanish_ratio=0.7)).regime == "vanishing"
    assert classify(trace(std), VerdictConfig(orders=0.2)).regime == "vanishing"


def test_non_finite_layers_are_an_explosion_with_a_marker() -> None:
    verdict = classify(Trace([1.0, 16.0, 256.0, None, None], [0, 0, 0, 5, 16]), DEFAULT)
    assert (verdict.regime, verdict.nonfinite, verdict.first_nonfinite_layer) == ("explosion", True, 3)
    assert (verdict.last_finite_layer, verdict.last_std, verdict.nonfinite_site) == (2, 256.0, "output")
    assert verdict.growth_per_layer == pytest.approx(16)


def test_underflow_to_zero_is_vanishing() -> None:
    verdict = classify(trace(np.array([1.0, 1e-30, 0.0, 0.0])), DEFAULT)
    assert (verdict.regime, verdict.first_zero_layer) == ("vanishing", 2)


def test_one_layer_has_no_trend() -> None:
    verdict = classify(trace(np.array([0.7])), DEFAULT)
    assert verdict.regime == "stable" and verdict.trend_t is None
