r"""Mean-field theory of residual blocks without a norm: :math:`x_{l+1} = x_l + \alpha\,\varphi(W_l x_l + b_l)`.

With :math:`p_l = E[x_l^2]` the second moment of block l's input and :math:`q_l = \sigma_{w,l}^2 p_l +
\sigma_b^2` its pre-activation's,

.. math:: p_{l+1} = p_l + 2\alpha\,E[x_l\,\varphi(h_l)] + \alpha^2 E[\varphi(\sqrt{q_l} z)^2].

The cross term vanishes *exactly* (in expectation over the weights) when :math:`\varphi` is odd: the
fresh weights :math:`W_l, b_l` are symmetric and independent of :math:`x_l`, and flipping their sign
flips :math:`\varphi(h_l)` and leaves :math:`x_l`. That is the recursion of issue 14 (the skip–branch
correlation neglected; cf. Yang & Schoenholz 2017, "Mean field residual networks", and Hanin & Rolnick
2018 for ``x + α·branch``), and it is applied only there: linear at σw² = 1 multiplies p by
:math:`1 + \alpha^2` per block (α = 1: ×√2 per block in std; α = 1/√L: about √e over L blocks).

For a non-odd φ (ReLU) the branch adds a mean to every unit, the mean of x grows block after block and
the cross term :math:`2\alpha\,E[x\varphi]` does *not* vanish with width (a 1024-wide ReLU net with
α = 0.1 over 100 blocks measures p ≈ 2·10⁴, where the recursion without it says e ≈ 2.7):
such blocks get "no theory for this block", never a wrong number. So do normalised blocks.

The backward factor of a block is :math:`1 + \alpha^2 \chi_l` (the identity plus the branch's
:math:`\chi_l = \sigma_{w,l}^2 E[\varphi'(\sqrt{q_l} z)^2]`; the cross term vanishes by the same symmetry).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from initlab.elementwise import Elementwise

if TYPE_CHECKING:  # the quick theory commands never load a config
    from initlab.config import Config, DataConfig

#: Points where an activation is checked to be odd, φ(-x) = -φ(x).
_ODD_CHECK = np.linspace(0.0, 8.0, 81)


def no_theory(config: Config, e: Elementwise) -> str | None:
    """Why the theory has nothing to say about ``config``'s blocks, or None where it applies."""
    model = config.model
    if model.block == "plain" and model.norm == "none":
        return None
    if model.norm != "none":
        return f"no theory for this block: {model.norm} (mean-field theory covers residual blocks without a norm)"
    if not odd(e):
        return (f"no theory for this block: residual {model.activation.name} is not odd, so its branch adds a "
                "mean the skip carries on and the skip-branch correlation does not vanish")
    return None


def odd(e: Elementwise) -> bool:
    """Whether φ(-x) = -φ(x) (checked on a grid of points)."""
    with np.errstate(all="ignore"):
        return bool(np.allclose(e.phi(-_ODD_CHECK), -e.phi(_ODD_CHECK), rtol=1e-12, atol=1e-12))


def input_mean(data: DataConfig) -> float:
    """E[x] of the input batch's distribution."""
    return data.mean if data.distribution == "normal" else (data.low + data.high) / 2.0


def recursion(p0: float, sw2: Sequence[float], sb2: float, alpha: float, second: Callable[[float], float],
              derivative: Callable[[float], float]) -> tuple[list[float], list[float], list[float]]:
    """``q`` (pre-activation second moments), ``p`` (block outputs' second moments) and backward factors.

    ``second(q)`` and ``derivative(q)`` are E[φ(√q z)²] and E[φ'(√q z)²] (the caller's quadrature).
    """
    q: list[float] = []
    p: list[float] = []
    chi: list[float] = []
    prev = p0
    for s in sw2:
        q.append(s * prev + sb2)
        with np.errstate(all="ignore"):
            prev = prev + alpha * alpha * second(q[-1])
            chi.append(1.0 + alpha * alpha * s * derivative(q[-1]))
        p.append(prev)
    return q, p, chi


def post_std(p: Sequence[float], mean: float) -> list[float]:
    """The block outputs' std: their mean stays the input's (the branch is odd, its mean 0)."""
    return [math.sqrt(max(v - mean * mean, 0.0)) if math.isfinite(v) else math.inf for v in p]
