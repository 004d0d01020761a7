from __future__ import annotations

import math

import numpy as np
import pytest

from initlab.config import VerdictConfig
from initlab.regimes import classify

DEFAULT = VerdictConfig()


def trace(values: np.ndarray) -> tuple[list[float | None], list[float]]:
    return [float(v) for v in values], [0.0] * len(values)


def test_steady_geometric_growth_is_an_explosion() -> None:
    std, bad = trace(1.05 ** np.arange(100) * np.exp(np.random.default_rng(0).normal(0, 0.01, 100)))
    verdict = classify(std, bad, DEFAULT)
    assert verdict.regime == "explosion" and not verdict.nonfinite
    assert verdict.growth_per_layer == pytest.approx((std[-1] / std[0]) ** (1 / 99))


def test_steady_power_law_decay_is_vanishing() -> None:
    layers = np.arange(1, 101)
    std, bad = trace(0.6 / np.sqrt(layers) * np.exp(np.random.default_rng(1).normal(0, 0.01, 100)))
    assert classify(std, bad, DEFAULT).regime == "vanishing"


def test_a_random_walk_that_ends_far_away_is_still_stable() -> None:
    """Finite width makes a critical net's log-std a random walk: no trend, no verdict."""
    steps = np.random.default_rng(2).normal(0, 0.15, 99)
    steps -= steps.mean() - math.log(0.3) / 99  # ends at 0.3x with no consistent drift
    std, bad = trace(np.exp(np.concatenate([[0.0], np.cumsum(steps)])))
    verdict = classify(std, bad, DEFAULT)
    assert verdict.ratio == pytest.approx(0.3)
    assert abs(verdict.trend_t) < DEFAULT.trend_t  # type: ignore[arg-type]
    assert verdict.regime == "stable"


def test_thresholds_come_from_the_config() -> None:
    std, bad = trace(0.99 ** np.arange(50) * (1 + 0.001 * np.sin(np.arange(50))))
    assert classify(std, bad, DEFAULT).regime == "stable"  # x0.61 > vanish_ratio 0.5
    assert classify(std, bad, VerdictConfig(vanish_ratio=0.7)).regime == "vanishing"


def test_non_finite_layers_are_an_explosion_with_a_marker() -> None:
    std: list[float | None] = [1.0, 16.0, 256.0, None, None]
    verdict = classify(std, [0, 0, 0, 5, 16], DEFAULT)
    assert (verdict.regime, verdict.nonfinite, verdict.first_nonfinite_layer) == ("explosion", True, 3)
    assert verdict.growth_per_layer == pytest.approx(16)


def test_underflow_to_zero_is_vanishing() -> None:
    verdict = classify([1.0, 1e-30, 0.0, 0.0], [0, 0, 0, 0], DEFAULT)
    assert (verdict.regime, verdict.first_zero_layer) == ("vanishing", 2)


def test_one_layer_has_no_trend() -> None:
    assert classify([0.7], [0], DEFAULT).regime == "stable"
