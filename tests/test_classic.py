"""The six classic outcomes of the initialization tutorial, from the shipped configs."""

from __future__ import annotations

import pytest

import initlab
from initlab.config import load_config
from tests.conftest import CONFIGS

EXPECTED = {
    "linear-normal": "explosion",
    "linear-normal-scaled": "stable",
    "tanh-normal-scaled": "vanishing",
    "tanh-xavier": "stable",
    "relu-kaiming": "stable",
    "relu-xavier": "vanishing",
}


@pytest.mark.parametrize(("name", "regime"), sorted(EXPECTED.items()))
def test_classic_verdicts(name: str, regime: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert (config.model.depth, config.model.width, config.data.batch_size, config.model.bias) == (100, 256, 16, False)
    result = initlab.run(config)
    assert result.verdict.regime == regime
    assert result.verdict.nonfinite == (name == "linear-normal")


def test_tanh_xavier_settles_near_065() -> None:
    result = initlab.run(load_config(CONFIGS / "tanh-xavier.yaml"))
    assert result.layers["std"].iloc[50:].between(0.6, 0.7).all()


def test_linear_normal_overflows_before_layer_40() -> None:
    verdict = initlab.run(load_config(CONFIGS / "linear-normal.yaml")).verdict
    assert verdict.first_nonfinite_layer is not None and 25 <= verdict.first_nonfinite_layer < 40
