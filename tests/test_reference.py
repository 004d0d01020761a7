"""The reproducibility contract: initlab's numbers equal a plain hand-written PyTorch script."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initlab
from initlab.config import load_config
from tests.conftest import CONFIGS, make_config


def hand_written(seed: int, depth: int, width: int, batch: int, init, act, bias: bool = False,
                 dtype: torch.dtype = torch.float32) -> tuple[list[float], list[float], list[float]]:  # type: ignore[no-untyped-def]
    """What every tutorial writes: seed, build the ModuleList, init in order, draw x, loop."""
    torch.manual_seed(seed)
    layers = nn.ModuleList([nn.Linear(width, width, bias=bias, dtype=dtype) for _ in range(depth)])
    with torch.no_grad():
        for i, layer in enumerate(layers):
            init(i, layer)
    x = torch.randn(batch, width, dtype=dtype)
    std32, std64 = [], []
    with torch.no_grad():
        for layer in layers:
            x = act(layer(x))
            std32.append(x.std().item())
            std64.append(x.double().std().item())
    return std32, std64, [layer.weight.double().std().item() for layer in layers]


CASES = {
    "tanh-xavier": (lambda i, lin: nn.init.xavier_uniform_(lin.weight, gain=5 / 3), torch.tanh),
    "relu-kaiming": (lambda i, lin: nn.init.kaiming_normal_(lin.weight, nonlinearity="relu"), torch.relu),
    "relu-xavier": (lambda i, lin: nn.init.xavier_uniform_(lin.weight), torch.relu),
    "tanh-normal-scaled": (lambda i, lin: nn.init.normal_(lin.weight, std=1 / 16), torch.tanh),
    "linear-normal-scaled": (lambda i, lin: nn.init.normal_(lin.weight, std=1 / 16), lambda x: x),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_classic_configs_equal_the_hand_written_script(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    init, act = CASES[name]
    std32, std64, wstd = hand_written(config.seed, 100, 256, 16, init, act)
    result = initlab.run(config)
    # float64 accumulation agrees with the float64 std of the very same outputs...
    assert result.layers["std"].tolist() == pytest.approx(std64, rel=1e-12)
    # ...and with what the script prints (float32 std) to float32 precision.
    assert result.layers["std"].tolist() == pytest.approx(std32, rel=1e-5)
    assert result.layers["weight_std"].tolist() == pytest.approx(wstd, rel=1e-12)


def test_bias_default_init_per_layer_overrides_and_float64() -> None:
    config = make_config(
        model={"depth": 5, "width": 24, "activation": "tanh", "bias": True},
        init={"scheme": "default", "layers": [{"index": 1, "scheme": "orthogonal", "gain": 2},
                                              {"index": -1, "scheme": "constant", "val": 0.05}],
              "bias": {"scheme": "uniform", "a": -0.5, "b": 0.5}},
        dtype="float64",
    )

    def init(i: int, layer: nn.Linear) -> None:
        if i == 1:
            nn.init.orthogonal_(layer.weight, gain=2)
        elif i == 4:
            nn.init.constant_(layer.weight, 0.05)
        nn.init.uniform_(layer.bias, -0.5, 0.5)

    _, std64, wstd = hand_written(3, 5, 24, 8, init, torch.tanh, bias=True, dtype=torch.float64)
    result = initlab.run(config)
    assert result.layers["std"].tolist() == pytest.approx(std64, rel=1e-12)
    assert result.layers["weight_std"].tolist() == pytest.approx(wstd, rel=1e-12)


def test_explosion_is_a_result_with_float64_statistics_up_to_the_overflow() -> None:
    config = load_config(CONFIGS / "linear-normal.yaml")
    result = initlab.run(config)
    layers = result.layers
    bad = result.verdict.first_nonfinite_layer
    assert bad is not None and bad < 40
    assert layers["nonfinite"].iloc[:bad].eq(0).all() and layers["nonfinite"].iloc[bad] > 0
    finite = layers["std"].iloc[:bad]
    assert finite.map(math.isfinite).all()
    assert layers["std"].iloc[bad:].isna().all()
    # Just below the overflow, float32's own std already overflows; ours does not.
    assert finite.iloc[-1] > 1e36
    growth = result.verdict.growth_per_layer
    assert growth == pytest.approx(16, rel=0.02)  # sqrt(width)


def test_same_config_same_numbers() -> None:
    config = make_config(model={"depth": 8, "width": 16, "activation": "relu"}, init={"scheme": "kaiming"})
    first, second = initlab.run(config), initlab.run(config)
    assert first.layers.equals(second.layers)
    other = initlab.run(config.model_copy(update={"seed": 4}))
    assert not first.layers["std"].equals(other.layers["std"])


def test_run_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    initlab.run(make_config())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("definition", ["auto", "second_moment", "std_ratio"])
def test_gain_names_in_configs_resolve_through_the_gain_module(definition: str) -> None:
    from initlab.activations import parse_activation
    from initlab.gain import resolve_gain

    base = {"model": {"depth": 4, "width": 16, "activation": "gelu"}}
    named = initlab.run(make_config(**base, init={"scheme": "xavier_normal", "gain": definition}))
    number = resolve_gain(parse_activation("gelu"), definition)
    explicit = initlab.run(make_config(**base, init={"scheme": "xavier_normal", "gain": number}))
    assert named.layers.equals(explicit.layers)
