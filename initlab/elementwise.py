r"""Every registered activation on numpy arrays, with its first and second derivatives.

The mean-field maps of :mod:`initlab.theory` need :math:`\varphi`, :math:`\varphi'` and
:math:`\varphi''` in float64 without torch (``initlab theory`` must start instantly). Each
function here computes the same values as the activation's ``torch.nn`` module (tests check
them against torch and autograd). Where :math:`\varphi'` jumps (ReLU, leaky ReLU, ELU with
alpha != 1, SELU: all at 0) the derivatives are the almost-everywhere ones; every such kink is
at 0, where :math:`\varphi(0) = 0`, so the delta a distributional :math:`\varphi''` would carry
contributes nothing to :math:`E[\varphi\varphi'']` and the a.e. derivative is exact there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from initlab.activations import Activation
from initlab.quadrature import UNIT_FEATURES, Features

Array = npt.NDArray[np.float64]
Fn = Callable[[Array], Array]

#: torch.nn.SELU's constants (Klambauer et al. 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715
_erf = np.frompyfunc(math.erf, 1, 1)


@dataclass(frozen=True)
class Elementwise:
    """:math:`\\varphi`, :math:`\\varphi'` and :math:`\\varphi''` of one activation as numpy functions.

    ``features``: where they change character (kinks, the width of the bend), so that
    quadrature places panels there at any variance (:class:`initlab.quadrature.Features`).
    """

    phi: Fn
    dphi: Fn
    ddphi: Fn
    features: Features = UNIT_FEATURES


def _sigmoid(x: Array) -> Array:
    out: Array = 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for any x
    return out


def _tanh() -> Elementwise:
    def d(x: Array) -> Array:
        return 1.0 - np.tanh(x) ** 2

    return Elementwise(np.tanh, d, lambda x: -2.0 * np.tanh(x) * d(x))


def _sigmoid_fns() -> Elementwise:
    def d(x: Array) -> Array:
        s = _sigmoid(x)
        return s * (1.0 - s)

    return Elementwise(_sigmoid, d, lambda x: d(x) * (1.0 - 2.0 * _sigmoid(x)))


def _leaky(slope: float) -> Elementwise:
    return Elementwise(
        lambda x: np.where(x > 0.0, x, slope * x),
        lambda x: np.where(x > 0.0, 1.0, slope),
        np.zeros_like,
    )


def _elu(alpha: float, scale: float = 1.0) -> Elementwise:
    def neg(x: Array) -> Array:
        return scale * alpha * np.exp(np.minimum(x, 0.0))

    return Elementwise(
        lambda x: np.where(x > 0.0, scale * x, scale * alpha * np.expm1(np.minimum(x, 0.0))),
        lambda x: np.where(x > 0.0, scale, neg(x)),
        lambda x: np.where(x > 0.0, 0.0, neg(x)),
    )


def _gelu_erf() -> Elementwise:
    def cdf(x: Array) -> Array:
        return 0.5 * (1.0 + np.asarray(_erf(x / math.sqrt(2.0)), dtype=np.float64))

    def pdf(x: Array) -> Array:
        return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)

    return Elementwise(lambda x: x * cdf(x), lambda x: cdf(x) + x * pdf(x), lambda x: pdf(x) * (2.0 - x * x))


def _gelu_tanh() -> Elementwise:
    def parts(x: Array) -> tuple[Array, Array, Array]:
        t = np.tanh(_GELU_K * (x + _GELU_A * x**3))
        return t, _GELU_K * (1.0 + 3.0 * _GELU_A * x * x), 1.0 - t * t  # tanh u, u', sech² u

    def d(x: Array) -> Array:
        t, du, sech2 = parts(x)
        return 0.5 * (1.0 + t) + 0.5 * x * sech2 * du

    def dd(x: Array) -> Array:
        t, du, sech2 = parts(x)
        return sech2 * du + 0.5 * x * sech2 * (6.0 * _GELU_K * _GELU_A * x - 2.0 * t * du * du)

    return Elementwise(lambda x: 0.5 * x * (1.0 + parts(x)[0]), d, dd)


def _silu() -> Elementwise:
    def d(x: Array) -> Array:
        s = _sigmoid(x)
        return s * (1.0 + x * (1.0 - s))

    def dd(x: Array) -> Array:
        s = _sigmoid(x)
        return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))

    return Elementwise(lambda x: x * _sigmoid(x), d, dd)


def _mish() -> Elementwise:
    def parts(x: Array) -> tuple[Array, Array]:
        return np.tanh(np.logaddexp(0.0, x)), _sigmoid(x)  # tanh(softplus x), softplus' = sigmoid

    def d(x: Array) -> Array:
        t, s = parts(x)
        return t + x * (1.0 - t * t) * s

    def dd(x: Array) -> Array:
        t, s = parts(x)
        return (1.0 - t * t) * s * (2.0 + x * (1.0 - s - 2.0 * t * s))

    return Elementwise(lambda x: x * parts(x)[0], d, dd)


def _softplus(beta: float, threshold: float) -> Elementwise:
    """torch's softplus: linear where ``beta * x > threshold``."""

    def linear(x: Array) -> Array:
        return np.asarray(beta * x > threshold)

    def d(x: Array) -> Array:
        return np.where(linear(x), 1.0, _sigmoid(beta * x))

    def dd(x: Array) -> Array:
        s = _sigmoid(beta * x)
        return np.where(linear(x), 0.0, beta * s * (1.0 - s))

    # The bend is 1/beta wide; torch's switch to the identity at threshold/beta is a (tiny) jump.
    features = Features(1.0 / beta, (0.0, threshold / beta))
    return Elementwise(lambda x: np.where(linear(x), x, np.logaddexp(0.0, beta * x) / beta), d, dd, features)


def elementwise(activation: Activation) -> Elementwise:
    """The numpy :math:`\\varphi, \\varphi', \\varphi''` of ``activation`` (with its parameters)."""
    params = activation.model_dump(exclude={"name"})
    makers: dict[str, Callable[[], Elementwise]] = {
        "linear": lambda: Elementwise(lambda x: x, np.ones_like, np.zeros_like),
        "tanh": _tanh,
        "sigmoid": _sigmoid_fns,
        "relu": lambda: _leaky(0.0),
        "leaky_relu": lambda: _leaky(params["negative_slope"]),
        "elu": lambda: _elu(params["alpha"]),
        "selu": lambda: _elu(SELU_ALPHA, SELU_SCALE),
        "gelu": lambda: _gelu_erf() if params["approximate"] == "none" else _gelu_tanh(),
        "silu": _silu,
        "mish": _mish,
        "softplus": lambda: _softplus(params["beta"], params["threshold"]),
    }
    if activation.name not in makers:
        raise ValueError(f"no numpy form for activation {activation.name!r}; add one to initlab.elementwise")
    return makers[activation.name]()


__all__ = ["SELU_ALPHA", "SELU_SCALE", "Elementwise", "elementwise"]
