"""Tests for initlab.schemes, in the style of PyTorch's test/nn/test_init.py.

Every expected std, bound and gain is recomputed here from fan_in/fan_out and the
gain formulas of ``torch.nn.init.calculate_gain``; nothing is taken from the code under
test. Samples are checked against their exact target distribution with a
Kolmogorov–Smirnov test, and every scheme torch has a function for must reproduce that
function bit for bit, both with an explicit generator and under global seeding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from scipy import stats
from torch import nn
from torch.nn import init

from initlab.activations import Activation, parse_activation
from initlab.config import parse_cli_choice
from initlab.errors import ConfigError
from initlab.schemes import ALIASES, REGISTRY, linear_default_, names, parse_scheme

#: A non-square weight, ``(out_features, in_features)``, so that fan_in != fan_out.
ROWS, COLS = 300, 200
FAN_IN, FAN_OUT = COLS, ROWS
SEED = 1234
#: torch's test_init.py accepts a KS test at this significance.
P_MIN = 1e-4

RELU = parse_activation("relu")


# --------------------------------------------------------------------------- gain formulas


def gain_of(nonlinearity: str, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain`` written out (He et al. 2015; torch's selu gain)."""
    if nonlinearity in ("linear", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise AssertionError(nonlinearity)


def xavier_uniform_bound(gain: float) -> float:
    return gain * math.sqrt(6.0 / (FAN_IN + FAN_OUT))


def xavier_normal_std(gain: float) -> float:
    return gain * math.sqrt(2.0 / (FAN_IN + FAN_OUT))


def kaiming_std(gain: float, mode: str) -> float:
    fan = FAN_IN if mode == "fan_in" else FAN_OUT
    return gain / math.sqrt(fan)


def kaiming_uniform_bound(gain: float, mode: str) -> float:
    return math.sqrt(3.0) * kaiming_std(gain, mode)


# --------------------------------------------------------------------------- helpers


def _generator(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fill(config: str | dict[str, Any], activation: Activation = RELU, shape: tuple[int, ...] = (ROWS, COLS),
          dtype: torch.dtype = torch.float32, seed: int = SEED) -> torch.Tensor:
    tensor = torch.full(shape, float("nan"), dtype=dtype)
    parse_scheme(config).init_(tensor, activation, _generator(seed))
    return tensor


def _ks_pvalue(tensor: torch.Tensor, dist: Any) -> float:
    samples = tensor.detach().double().flatten().numpy()
    return float(stats.kstest(samples, dist.cdf).pvalue)


def _normal(mean: float, std: float) -> Any:
    return stats.norm(loc=mean, scale=std)


def _uniform(low: float, high: float) -> Any:
    return stats.uniform(loc=low, scale=high - low)


def _symmetric_uniform(bound: float) -> Any:
    return _uniform(-bound, bound)


def _trunc_normal(mean: float, std: float, a: float, b: float) -> Any:
    return stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)


# --------------------------------------------------------------------------- distributions

#: (config, activation, target distribution with recomputed parameters)
DISTRIBUTIONS: list[tuple[str | dict[str, Any], str | dict[str, Any], Any]] = [
    ("normal", "relu", _normal(0.0, 1.0)),
    ({"scheme": "normal", "mean": 0.3, "std": 0.5}, "relu", _normal(0.3, 0.5)),
    ("uniform", "relu", _uniform(0.0, 1.0)),
    ({"scheme": "uniform", "a": -2.0, "b": 3.0}, "relu", _uniform(-2.0, 3.0)),
    ("trunc_normal", "relu", _trunc_normal(0.0, 1.0, -2.0, 2.0)),
    ({"scheme": "trunc_normal", "mean": 1.0, "std": 2.0, "a": -1.0, "b": 4.0}, "relu",
     _trunc_normal(1.0, 2.0, -1.0, 4.0)),
    # mass inside [a, b] below 0.3: torch takes its rejection-sampling branch
    ({"scheme": "trunc_normal", "a": 2.0, "b": 3.0}, "relu", _trunc_normal(0.0, 1.0, 2.0, 3.0)),
    ("xavier_uniform", "relu", _symmetric_uniform(xavier_uniform_bound(1.0))),
    ({"scheme": "xavier_uniform", "gain": 2.0}, "relu", _symmetric_uniform(xavier_uniform_bound(2.0))),
    ({"scheme": "xavier_uniform", "gain": "auto"}, "tanh",
     _symmetric_uniform(xavier_uniform_bound(5.0 / 3.0))),
    ("xavier_normal", "relu", _normal(0.0, xavier_normal_std(1.0))),
    ({"scheme": "xavier_normal", "gain": 0.5}, "relu", _normal(0.0, xavier_normal_std(0.5))),
    ({"scheme": "xavier_normal", "gain": "auto"}, "relu", _normal(0.0, xavier_normal_std(math.sqrt(2.0)))),
    ("lecun_normal", "relu", _normal(0.0, 1.0 / math.sqrt(FAN_IN))),
    ({"scheme": "lecun_normal", "gain": 1.5}, "relu", _normal(0.0, 1.5 / math.sqrt(FAN_IN))),
    ({"scheme": "lecun_normal", "gain": "auto"}, "tanh", _normal(0.0, (5.0 / 3.0) / math.sqrt(FAN_IN))),
]

#: Kaiming: (nonlinearity, a, gain recomputed by hand); both modes and both shapes of distribution.
KAIMING_NONLINEARITIES: list[tuple[str, float, float]] = [
    ("leaky_relu", 0.0, math.sqrt(2.0)),  # the default: leaky_relu with a=0 is relu
    ("leaky_relu", 0.2, math.sqrt(2.0 / (1.0 + 0.2**2))),
    ("relu", 0.0, math.sqrt(2.0)),
    ("tanh", 0.0, 5.0 / 3.0),
    ("linear", 0.0, 1.0),
    ("selu", 0.0, 3.0 / 4.0),
]
for _mode in ("fan_in", "fan_out"):
    for _nonlinearity, _a, _gain in KAIMING_NONLINEARITIES:
        assert math.isclose(_gain, gain_of(_nonlinearity, _a))
        _args = {"mode": _mode, "nonlinearity": _nonlinearity, "a": _a}
        DISTRIBUTIONS += [
            ({"scheme": "kaiming_uniform", **_args}, "relu",
             _symmetric_uniform(kaiming_uniform_bound(_gain, _mode))),
            ({"scheme": "kaiming_normal", **_args}, "relu", _normal(0.0, kaiming_std(_gain, _mode))),
        ]
    # nonlinearity: auto takes the activation's name and its parameter
    DISTRIBUTIONS += [
        ({"scheme": "kaiming_normal", "mode": _mode, "nonlinearity": "auto"},
         {"name": "leaky_relu", "negative_slope": 0.2},
         _normal(0.0, kaiming_std(math.sqrt(2.0 / (1.0 + 0.04)), _mode))),
        ({"scheme": "kaiming_uniform", "mode": _mode, "nonlinearity": "auto"}, "tanh",
         _symmetric_uniform(kaiming_uniform_bound(5.0 / 3.0, _mode))),
        ({"scheme": "kaiming_normal", "mode": _mode, "nonlinearity": "auto"}, "relu",
         _normal(0.0, kaiming_std(math.sqrt(2.0), _mode))),
    ]


def _case_id(config: str | dict[str, Any], activation: str | dict[str, Any]) -> str:
    return f"{parse_scheme(config).label()}-{parse_activation(activation).label()}"


@pytest.mark.parametrize(
    ("config", "activation", "dist"),
    DISTRIBUTIONS,
    ids=[_case_id(c, a) for c, a, _ in DISTRIBUTIONS],
)
def test_distribution(config: str | dict[str, Any], activation: str | dict[str, Any], dist: Any) -> None:
    tensor = _fill(config, parse_activation(activation))
    assert not tensor.isnan().any()
    low, high = dist.support()
    assert tensor.min().item() >= low
    assert tensor.max().item() <= high
    assert _ks_pvalue(tensor, dist) > P_MIN


def test_default_is_what_nn_linear_draws() -> None:
    """``default`` keeps nn.Linear's own init: U(-1/√fan_in, 1/√fan_in) for weight and bias.

    kaiming_uniform_ with a=√5: gain = √(2/(1+5)) = 1/√3 and bound = gain·√(3/fan_in) = 1/√fan_in.
    """
    torch.manual_seed(SEED)
    linear = nn.Linear(FAN_IN, FAN_OUT)
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    scheme = parse_scheme("default")
    with torch.no_grad():
        scheme.init_(linear.weight, RELU, _generator())
        scheme.init_(linear.bias, RELU, _generator())
    assert torch.equal(linear.weight, weight)
    assert torch.equal(linear.bias, bias)
    bound = 1.0 / math.sqrt(FAN_IN)
    assert _ks_pvalue(linear.weight, _symmetric_uniform(bound)) > P_MIN
    assert _ks_pvalue(linear.bias, _symmetric_uniform(bound)) > P_MIN


def test_linear_default_distribution() -> None:
    weight, bias = torch.empty(FAN_OUT, FAN_IN), torch.empty(FAN_OUT)
    linear_default_(weight, bias, _generator())
    bound = 1.0 / math.sqrt(FAN_IN)
    assert _ks_pvalue(weight, _symmetric_uniform(bound)) > P_MIN
    assert _ks_pvalue(bias, _symmetric_uniform(bound)) > P_MIN


@pytest.mark.parametrize(("sparsity", "std"), [(0.1, 0.01), (0.25, 0.5), (0.5, 2.0)])
def test_sparse(sparsity: float, std: float) -> None:
    tensor = _fill({"scheme": "sparse", "sparsity": sparsity, "std": std})
    zeros_per_column = (tensor == 0).sum(dim=0)
    # torch zeroes exactly ceil(sparsity * rows) entries of every column
    expected = math.ceil(sparsity * ROWS)
    assert torch.equal(zeros_per_column, torch.full((COLS,), expected))
    assert zeros_per_column.double().mean().item() / ROWS == pytest.approx(sparsity, abs=1.0 / ROWS)
    nonzero = tensor[tensor != 0]
    assert nonzero.numel() == (ROWS - expected) * COLS
    assert nonzero.double().std().item() == pytest.approx(std, rel=0.03)
    assert _ks_pvalue(nonzero, _normal(0.0, std)) > P_MIN


@pytest.mark.parametrize(("sparsity", "zeros"), [(0.0, 0), (1.0, ROWS)])
def test_sparse_edges(sparsity: float, zeros: int) -> None:
    tensor = _fill({"scheme": "sparse", "sparsity": sparsity})
    assert torch.equal((tensor == 0).sum(dim=0), torch.full((COLS,), zeros))


@pytest.mark.parametrize(
    ("config", "activation", "gain"),
    [
        ("orthogonal", "relu", 1.0),
        ({"scheme": "orthogonal", "gain": 0.5}, "relu", 0.5),
        ({"scheme": "orthogonal", "gain": "auto"}, "relu", math.sqrt(2.0)),
        ({"scheme": "orthogonal", "gain": "auto"}, "tanh", 5.0 / 3.0),
        ({"scheme": "orthogonal", "gain": "auto"}, {"name": "leaky_relu", "negative_slope": 0.2},
         math.sqrt(2.0 / (1.0 + 0.04))),
    ],
)
@pytest.mark.parametrize("shape", [(ROWS, COLS), (COLS, ROWS), (COLS, COLS)], ids=str)
def test_orthogonal(
    config: str | dict[str, Any], activation: str | dict[str, Any], gain: float, shape: tuple[int, int]
) -> None:
    tensor = _fill(config, parse_activation(activation), shape=shape, dtype=torch.float64)
    rows, cols = shape
    # the smaller Gram matrix is gain² I: orthonormal columns (tall) or rows (wide)
    gram = tensor.T @ tensor if rows >= cols else tensor @ tensor.T
    eye = torch.eye(min(rows, cols), dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-10, rtol=0.0)


@pytest.mark.parametrize(
    ("config", "value"),
    [({"scheme": "constant", "val": 0.7}, 0.7), ({"scheme": "constant", "val": -3.0}, -3.0),
     ("zeros", 0.0), ("ones", 1.0)],
    ids=["constant-0.7", "constant--3", "zeros", "ones"],
)
def test_constant_exact(config: str | dict[str, Any], value: float) -> None:
    generator = _generator()
    state = generator.get_state()
    tensor = torch.full((ROWS, COLS), float("nan"))
    parse_scheme(config).init_(tensor, RELU, generator)
    assert torch.equal(tensor, torch.full((ROWS, COLS), value))
    assert torch.equal(generator.get_state(), state)


# --------------------------------------------------------------------------- gain / nonlinearity auto


@pytest.mark.parametrize(
    ("activation", "gain"),
    [
        ("tanh", 5.0 / 3.0),
        ("relu", math.sqrt(2.0)),
        ("sigmoid", 1.0),
        ("linear", 1.0),
        ("selu", 3.0 / 4.0),
        ("leaky_relu", math.sqrt(2.0 / (1.0 + 0.01**2))),
        ({"name": "leaky_relu", "negative_slope": 0.2}, math.sqrt(2.0 / (1.0 + 0.04))),
    ],
    ids=lambda v: parse_activation(v).label() if isinstance(v, str | dict) else f"{v:.4f}",
)
@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "orthogonal", "lecun_normal"])
def test_gain_auto_equals_explicit_gain(scheme: str, activation: str | dict[str, Any], gain: float) -> None:
    """``gain: auto`` draws exactly what the hand-computed gain does."""
    act = parse_activation(activation)
    auto = _fill({"scheme": scheme, "gain": "auto"}, act, dtype=torch.float64)
    explicit = _fill({"scheme": scheme, "gain": gain}, act, dtype=torch.float64)
    torch.testing.assert_close(auto, explicit, atol=0.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("activation", "nonlinearity", "a"),
    [
        ("tanh", "tanh", 0.0),
        ("relu", "relu", 0.0),
        ("sigmoid", "sigmoid", 0.0),
        ("selu", "selu", 0.0),
        ("leaky_relu", "leaky_relu", 0.01),
        ({"name": "leaky_relu", "negative_slope": 0.2}, "leaky_relu", 0.2),
    ],
    ids=["tanh", "relu", "sigmoid", "selu", "leaky_relu", "leaky_relu-0.2"],
)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("scheme", ["kaiming_uniform", "kaiming_normal"])
def test_nonlinearity_auto(
    scheme: str, mode: str, activation: str | dict[str, Any], nonlinearity: str, a: float
) -> None:
    act = parse_activation(activation)
    auto = _fill({"scheme": scheme, "mode": mode, "nonlinearity": "auto"}, act)
    explicit = _fill({"scheme": scheme, "mode": mode, "nonlinearity": nonlinearity, "a": a}, act)
    assert torch.equal(auto, explicit)


def test_gain_auto_is_opt_in() -> None:
    """A numeric gain ignores the activation; the default gain is 1."""
    tanh = _fill("xavier_normal", parse_activation("tanh"))
    relu = _fill("xavier_normal", RELU)
    assert torch.equal(tanh, relu)


# --------------------------------------------------------------------------- equality with torch.nn.init

TorchFill = Callable[[torch.Tensor, "torch.Generator | None"], Any]

#: (config, activation, the same fill written against torch.nn.init)
TORCH_EQUIVALENTS: list[tuple[str | dict[str, Any], str | dict[str, Any], TorchFill]] = [
    ("normal", "relu", lambda t, g: init.normal_(t, generator=g)),
    ({"scheme": "normal", "mean": -1.0, "std": 0.3}, "relu",
     lambda t, g: init.normal_(t, -1.0, 0.3, generator=g)),
    ("uniform", "relu", lambda t, g: init.uniform_(t, generator=g)),
    ({"scheme": "uniform", "a": -0.5, "b": 2.0}, "relu",
     lambda t, g: init.uniform_(t, -0.5, 2.0, generator=g)),
    ({"scheme": "constant", "val": 0.25}, "relu", lambda t, g: init.constant_(t, 0.25)),
    ("zeros", "relu", lambda t, g: init.zeros_(t)),
    ("ones", "relu", lambda t, g: init.ones_(t)),
    ("xavier_uniform", "relu", lambda t, g: init.xavier_uniform_(t, generator=g)),
    ({"scheme": "xavier_uniform", "gain": "auto"}, "tanh",
     lambda t, g: init.xavier_uniform_(t, gain=5.0 / 3.0, generator=g)),
    ("xavier_normal", "relu", lambda t, g: init.xavier_normal_(t, generator=g)),
    ({"scheme": "xavier_normal", "gain": 0.8}, "relu",
     lambda t, g: init.xavier_normal_(t, gain=0.8, generator=g)),
    ("kaiming_uniform", "relu", lambda t, g: init.kaiming_uniform_(t, generator=g)),
    ({"scheme": "kaiming_uniform", "mode": "fan_out", "nonlinearity": "relu"}, "relu",
     lambda t, g: init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu", generator=g)),
    ({"scheme": "kaiming_uniform", "a": math.sqrt(5)}, "relu",
     lambda t, g: init.kaiming_uniform_(t, a=math.sqrt(5), generator=g)),
    ("kaiming_normal", "relu", lambda t, g: init.kaiming_normal_(t, generator=g)),
    ({"scheme": "kaiming_normal", "mode": "fan_out", "nonlinearity": "auto"},
     {"name": "leaky_relu", "negative_slope": 0.2},
     lambda t, g: init.kaiming_normal_(t, a=0.2, mode="fan_out", nonlinearity="leaky_relu", generator=g)),
    ("orthogonal", "relu", lambda t, g: init.orthogonal_(t, generator=g)),
    ({"scheme": "orthogonal", "gain": "auto"}, "relu",
     lambda t, g: init.orthogonal_(t, gain=math.sqrt(2.0), generator=g)),
    ("trunc_normal", "relu", lambda t, g: init.trunc_normal_(t, generator=g)),
    ({"scheme": "trunc_normal", "mean": 0.5, "std": 0.1, "a": 0.4, "b": 0.45}, "relu",
     lambda t, g: init.trunc_normal_(t, 0.5, 0.1, 0.4, 0.45, generator=g)),
    ({"scheme": "sparse", "sparsity": 0.2}, "relu", lambda t, g: init.sparse_(t, 0.2, generator=g)),
    ({"scheme": "sparse", "sparsity": 0.5, "std": 1.0}, "relu",
     lambda t, g: init.sparse_(t, 0.5, 1.0, generator=g)),
    # no torch function: lecun_normal is normal_ with std = gain/√fan_in
    ("lecun_normal", "relu", lambda t, g: init.normal_(t, 0.0, 1.0 / math.sqrt(FAN_IN), generator=g)),
    ({"scheme": "lecun_normal", "gain": "auto"}, "selu",
     lambda t, g: init.normal_(t, 0.0, 0.75 / math.sqrt(FAN_IN), generator=g)),
]
_TORCH_IDS = [_case_id(c, a) for c, a, _ in TORCH_EQUIVALENTS]
@pytest.mark.parametrize("seed", [0, SEED])
@pytest.mark.parametrize(("config", "activation", "torch_fill"), TORCH_EQUIVALENTS, ids=_TORCH_IDS)
def test_matches_torch_with_generator(
    config: str | dict[str, Any], activation: str | dict[str, Any], torch_fill: TorchFill, seed: int
) -> None:
    if "sparse" in str(config):
        pytest.skip("torch's sparse_ ignores the generator for its zero pattern; see the global-seed test")
    ours, theirs = torch.empty(ROWS, COLS), torch.empty(ROWS, COLS)
    parse_scheme(config).init_(ours, parse_activation(activation), _generator(seed))
    torch_fill(theirs, _generator(seed))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(("config", "activation", "torch_fill"), TORCH_EQUIVALENTS, ids=_TORCH_IDS)
def test_matches_torch_global_seed(
    config: str | dict[str, Any], activation: str | dict[str, Any], torch_fill: TorchFill
) -> None:
    ours, theirs = torch.empty(ROWS, COLS), torch.empty(ROWS, COLS)
    torch.manual_seed(SEED + 1)  # a global state unlike the one the script below starts from
    parse_scheme(config).init_(ours, parse_activation(activation), _generator(SEED))
    torch.manual_seed(SEED)
    torch_fill(theirs, None)
    assert torch.equal(ours, theirs)


def test_generator_is_the_only_source() -> None:
    """Given a generator, schemes ignore the global RNG (sparse's zero pattern included)."""
    for scheme in ("kaiming_normal", {"scheme": "sparse", "sparsity": 0.3}):
        tensors = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            tensors.append(_fill(scheme))
        assert torch.equal(*tensors)


# --------------------------------------------------------------------------- linear_default_ and default


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("in_features", "out_features"), [(FAN_IN, FAN_OUT), (7, 3), (1, 5)])
@pytest.mark.parametrize("seed", [0, SEED])
def test_linear_default_matches_nn_linear(in_features: int, out_features: int, bias: bool, seed: int) -> None:
    torch.manual_seed(seed)
    reference = nn.Linear(in_features, out_features, bias=bias)

    weight = torch.empty(out_features, in_features)
    b = torch.empty(out_features) if bias else None
    linear_default_(weight, b, _generator(seed))
    assert torch.equal(weight, reference.weight)
    if bias:
        assert b is not None
        assert torch.equal(b, reference.bias)

    # and with no generator it draws from the global RNG like reset_parameters
    weight_global = torch.empty(out_features, in_features)
    b_global = torch.empty(out_features) if bias else None
    torch.manual_seed(seed)
    linear_default_(weight_global, b_global, None)
    assert torch.equal(weight_global, reference.weight)
    if bias:
        assert b_global is not None
        assert torch.equal(b_global, reference.bias)


def test_linear_default_then_scheme_matches_script() -> None:
    """Construction-time init then a scheme, from one generator, equals the hand-written script."""
    generator = _generator()
    weight, b = torch.empty(FAN_OUT, FAN_IN), torch.empty(FAN_OUT)
    linear_default_(weight, b, generator)
    parse_scheme("xavier_normal").init_(weight, RELU, generator)
    parse_scheme({"scheme": "normal", "std": 0.1}).init_(b, RELU, generator)

    torch.manual_seed(SEED)
    linear = nn.Linear(FAN_IN, FAN_OUT)
    init.xavier_normal_(linear.weight)
    init.normal_(linear.bias, std=0.1)
    assert torch.equal(weight, linear.weight)
    assert torch.equal(b, linear.bias)


@pytest.mark.parametrize("shape", [(ROWS, COLS), (COLS,)], ids=str)
def test_default_draws_nothing(shape: tuple[int, ...]) -> None:
    generator = _generator()
    generator_state = generator.get_state()
    global_state = torch.get_rng_state()
    tensor = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    before = tensor.clone()
    parse_scheme("default").init_(tensor, RELU, generator)
    assert torch.equal(tensor, before)
    assert torch.equal(generator.get_state(), generator_state)
    assert torch.equal(torch.get_rng_state(), global_state)


# --------------------------------------------------------------------------- names and aliases


@pytest.mark.parametrize(
    ("alias", "target"),
    [
        ("xavier", "xavier_uniform"),
        ("glorot", "xavier_uniform"),
        ("glorot_uniform", "xavier_uniform"),
        ("glorot_normal", "xavier_normal"),
        ("kaiming", "kaiming_normal"),
        ("he", "kaiming_normal"),
        ("he_normal", "kaiming_normal"),
        ("he_uniform", "kaiming_uniform"),
        ("lecun", "lecun_normal"),
    ],
)
def test_aliases(alias: str, target: str) -> None:
    assert ALIASES[alias] == target
    scheme = parse_scheme(alias)
    assert scheme.scheme == target
    assert type(scheme) is REGISTRY[target]
    assert scheme == parse_scheme(target)
    # also inside a mapping, with arguments
    args = {"gain": 2.0} if "gain" in REGISTRY[target].model_fields else {"mode": "fan_out"}
    assert parse_scheme({"scheme": alias, **args}) == parse_scheme({"scheme": target, **args})
    # and it draws the same numbers
    assert torch.equal(_fill(alias), _fill(target))


def test_names_and_registry() -> None:
    expected = {
        "constant", "default", "kaiming_normal", "kaiming_uniform", "lecun_normal", "normal", "ones",
        "orthogonal", "sparse", "trunc_normal", "uniform", "xavier_normal", "xavier_uniform", "zeros",
    }
    assert names() == sorted(expected)
    assert set(REGISTRY) == expected
    assert set(ALIASES.values()) <= expected
    assert not set(ALIASES) & expected
    for name, cls in REGISTRY.items():
        assert cls.model_fields["scheme"].default == name


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_parse_accepts_model_and_is_frozen(name: str) -> None:
    config: dict[str, Any] = {"scheme": name}
    if name == "constant":
        config["val"] = 0.5
    if name == "sparse":
        config["sparsity"] = 0.1
    scheme = parse_scheme(config)
    assert parse_scheme(scheme) is scheme  # type: ignore[arg-type]
    assert parse_scheme(scheme.model_dump()) == scheme
    with pytest.raises(ValidationError):
        scheme.scheme = "zeros"  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


def test_unknown_scheme_lists_names_and_suggests() -> None:
    with pytest.raises(ValidationError) as info:
        parse_scheme("xavier_unifrom")
    message = str(info.value)
    assert "unknown scheme 'xavier_unifrom'" in message
    assert "did you mean 'xavier_uniform'?" in message
    for name in names():
        assert name in message


def test_unknown_scheme_in_mapping_without_close_match() -> None:
    with pytest.raises(ValidationError) as info:
        parse_scheme({"scheme": "qqqqqq", "gain": 1.0})
    message = str(info.value)
    assert "unknown scheme 'qqqqqq'" in message
    assert "did you mean" not in message
    assert ", ".join(sorted([*names(), *ALIASES])) in message  # aliases are valid names too


@pytest.mark.parametrize(
    ("config", "typo", "suggestion"),
    [
        ({"scheme": "xavier_uniform", "gian": 2.0}, "gian", "gain"),
        ({"scheme": "orthogonal", "gian": 2.0}, "gian", "gain"),
        ({"scheme": "kaiming_normal", "nonlinarity": "relu"}, "nonlinarity".replace("e", "", 1), "nonlinearity"),
        ({"scheme": "normal", "sdt": 0.1}, "sdt", "std"),
        ({"scheme": "sparse", "sparsity": 0.1, "sparsty": 0.2}, "sparsty", "sparsity"),
    ],
)
def test_unknown_argument_suggests(config: dict[str, Any], typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:  # the config's one error formatter phrases it
        parse_cli_choice("scheme", config, "--schemes")
    (message,) = info.value.lines
    assert message.startswith(f"--schemes: scheme.{typo}: unknown key {typo!r}")
    assert f"did you mean {suggestion!r}?" in message


@pytest.mark.parametrize("sparsity", [-0.1, 1.5, float("nan")])
def test_sparsity_out_of_range(sparsity: float) -> None:
    with pytest.raises(ValidationError, match="sparsity"):
        parse_scheme({"scheme": "sparse", "sparsity": sparsity})


def test_sparsity_is_required() -> None:
    with pytest.raises(ValidationError, match="sparsity"):
        parse_scheme("sparse")


@pytest.mark.parametrize("scheme", ["normal", "trunc_normal", "sparse"])
def test_negative_std(scheme: str) -> None:
    config: dict[str, Any] = {"scheme": scheme, "std": -0.1}
    if scheme == "sparse":
        config["sparsity"] = 0.1
    with pytest.raises(ValidationError, match="std"):
        parse_scheme(config)


def test_negative_kaiming_slope() -> None:
    with pytest.raises(ValidationError, match=r"kaiming_uniform\.a\n.*greater than or equal to 0"):
        parse_scheme({"scheme": "kaiming_uniform", "a": -0.1})


def test_constant_needs_val() -> None:
    with pytest.raises(ValidationError) as info:
        parse_scheme("constant")
    errors = info.value.errors()
    assert any(e["type"] == "missing" and e["loc"][-1] == "val" for e in errors)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"scheme": "uniform", "a": 1.0, "b": 0.0}, "uniform needs a <= b"),
        ({"scheme": "trunc_normal", "a": 1.0, "b": 1.0}, "trunc_normal needs a < b"),
        ({"scheme": "trunc_normal", "a": 2.0, "b": -2.0}, "trunc_normal needs a < b"),
    ],
)
def test_bad_bounds_are_rejected_when_validated(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        parse_scheme(config)


def test_uniform_empty_interval_is_allowed() -> None:
    tensor = _fill({"scheme": "uniform", "a": 0.5, "b": 0.5}, shape=(4, 3))
    assert torch.equal(tensor, torch.full((4, 3), 0.5))


@pytest.mark.parametrize("activation", ["gelu", "elu", "silu", "mish", "softplus"])
@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "orthogonal", "lecun_normal"])
def test_gain_torch_without_torch_gain(scheme: str, activation: str) -> None:
    act = parse_activation(activation)
    with pytest.raises(ValueError, match=rf"defines no gain for {activation}"):
        parse_scheme({"scheme": scheme, "gain": "torch"}).init_(torch.empty(4, 3), act, _generator())


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_gain_auto_without_torch_gain_is_the_second_moment_gain(activation: str) -> None:
    """auto = 1/sqrt(E[phi(z)^2]) where torch has no entry; recomputed here by Monte Carlo."""
    act = parse_activation(activation)
    z = torch.randn(2_000_000, generator=_generator(), dtype=torch.float64)
    expected = 1 / math.sqrt(act.function()(z).pow(2).mean().item())
    auto = _fill({"scheme": "xavier_normal", "gain": "auto"}, act, dtype=torch.float64)
    explicit = _fill({"scheme": "xavier_normal", "gain": expected}, act, dtype=torch.float64)
    assert torch.allclose(auto, explicit, rtol=3e-3)


@pytest.mark.parametrize("scheme", ["kaiming_uniform", "kaiming_normal"])
def test_nonlinearity_auto_without_torch_entry(scheme: str) -> None:
    act = parse_activation("gelu")
    with pytest.raises(ValueError, match=r"nonlinearity 'auto'.*'gelu'"):
        parse_scheme({"scheme": scheme, "nonlinearity": "auto"}).init_(torch.empty(4, 3), act, _generator())


@pytest.mark.parametrize("value", ["car", "1.0x", None])
def test_bad_gain(value: Any) -> None:
    with pytest.raises(ValidationError, match="gain"):
        parse_scheme({"scheme": "xavier_uniform", "gain": value})


def test_trunc_normal_zero_std_is_rejected() -> None:
    with pytest.raises(ValidationError, match="std"):
        parse_scheme({"scheme": "trunc_normal", "std": 0.0})


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_gain_is_rejected(value: float) -> None:
    with pytest.raises(ValidationError, match="gain"):
        parse_scheme({"scheme": "xavier_uniform", "gain": value})
