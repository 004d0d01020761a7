r"""Gaussian quadrature on numpy: the rules behind :mod:`initlab.gain` and :mod:`initlab.theory`.

numpy only (no torch), so ``initlab theory`` starts as fast as ``--help``.

**One dimension.** :math:`E[f(z)] = \int f(x)\,n(x)\,dx`, :math:`z \sim N(0, 1)`, by composite
Gauss–Legendre panels on :math:`[-L, 0]` and :math:`[0, L]` against the normal density
:math:`n`. Splitting at 0 keeps every panel smooth for all registered activations, whose only
kink (ReLU, leaky ReLU, ELU with alpha != 1, SELU) is at 0, where plain Gauss–Hermite converges
only algebraically. The default rule (``L = 12``, panels of width 1/2, 20 nodes) is
:mod:`initlab.gain`'s: ~1e-13 relative; the Gaussian mass beyond ``L`` is ~4e-33.

**Two dimensions.** :math:`E[f(u_1)\,g(u_2)]` for a standard bivariate normal pair with
correlation :math:`c`: write :math:`u_1 = z_1`, :math:`u_2 = c z_1 + s z_2`,
:math:`s = \sqrt{1 - c^2}`, integrate :math:`z_1` with the 1-D rule (split at :math:`u_1 = 0`)
and, for every outer node, :math:`z_2` with panels split at the kink of :math:`g`,
:math:`u_2 = 0 \Leftrightarrow z_2 = -c z_1 / s`. Both kinks thus fall on panel edges, so the
rule converges spectrally for kinked activations too (a product Gauss–Hermite rule does not).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

#: Half-width L of the 1-D domain [-L, L] of :mod:`initlab.gain`'s rule.
QUADRATURE_CUTOFF = 12.0
_PANELS = 24
_ORDER = 20
_SQRT_2PI = math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=8)
def normal_rule(cutoff: float = QUADRATURE_CUTOFF, panels: int = _PANELS, order: int = _ORDER) -> tuple[Array, Array]:
    """Nodes and weights ``(x, w)`` with ``sum(w * f(x)) ≈ E[f(z)]``, z ~ N(0, 1), split at 0.

    ``panels`` Gauss–Legendre panels of ``order`` nodes on each of [-cutoff, 0] and [0, cutoff].
    The arrays are read-only (cached).
    """
    t, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, cutoff, panels + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2.0
    mid = (edges[1:] + edges[:-1])[:, None] / 2.0
    x = (mid + half * t[None, :]).ravel()
    wx = (half * w[None, :]).ravel() * np.exp(-0.5 * x * x) / _SQRT_2PI
    nodes = np.concatenate([-x[::-1], x])
    weights = np.concatenate([wx[::-1], wx])
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


@dataclass(frozen=True)
class PairRule:
    """A 2-D rule: :math:`E[f(z_1) g(c z_1 + s z_2)] ≈ \\sum_i w_i f(x_i) \\sum_j v_{ij} g(y_{ij})`.

    Attributes:
        x, w: outer nodes and weights, shape ``(n,)``.
        y, v: the second variable's values :math:`c x_i + s z_{2,ij}` and weights, shape
            ``(m, n, k)`` for ``m`` correlations.
    """

    x: Array
    w: Array
    y: Array
    v: Array

    def expect(self, f: Callable[[Array], Array], g: Callable[[Array], Array], scale: Array) -> Array:
        r""":math:`E[f(\sqrt q u_1)\,g(\sqrt q u_2)]` per correlation, ``scale`` = :math:`\sqrt q`, shape ``(m,)``."""
        s = np.asarray(scale, dtype=np.float64)
        outer = f(s[:, None] * self.x[None, :])  # (m, n)
        inner = np.einsum("mnk,mnk->mn", g(s[:, None, None] * self.y), self.v)  # (m, n)
        result: Array = np.einsum("mn,n,mn->m", outer, self.w, inner)
        return result


#: The default 2-D rule: outer 2 x 20 panels x 16 nodes on [-10, 10]; inner 80 panels x 8 nodes
#: (width 1/4) plus the split at the kink. ~1e-10 for the registered activations at q <= 25.
PAIR_FINE = (10.0, 20, 16, 80, 8)
#: A coarse 2-D rule for grids (phase diagrams), measured against PAIR_FINE: the correlation map
#: ~1e-6 and its slope ~1e-5 at q <= 20 (tanh, SELU, ReLU), the slope ~1e-3 at q = 50; ~60x cheaper.
PAIR_COARSE = (7.0, 4, 8, 16, 6)


def pair_rule(c: Array, spec: tuple[float, int, int, int, int] = PAIR_FINE) -> PairRule:
    """The 2-D rule for correlations ``c`` (each in [-1, 1]); ``spec`` is ``PAIR_FINE`` or ``PAIR_COARSE``."""
    cutoff, panels, order, inner_panels, inner_order = spec
    x, w = normal_rule(cutoff, panels, order)
    corr = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    s = np.sqrt(1.0 - corr * corr)
    with np.errstate(divide="ignore", invalid="ignore"):
        kink = np.where(s[:, None] > 0.0, -corr[:, None] * x[None, :] / s[:, None], cutoff)  # (m, n)
    kink = np.clip(kink, -cutoff, cutoff)
    grid = np.broadcast_to(np.linspace(-cutoff, cutoff, inner_panels + 1), (*kink.shape, inner_panels + 1))
    edges = np.sort(np.concatenate([grid, kink[..., None]], axis=-1), axis=-1)  # (m, n, P + 2)
    t, tw = np.polynomial.legendre.leggauss(inner_order)
    half = (edges[..., 1:] - edges[..., :-1]) / 2.0
    mid = (edges[..., 1:] + edges[..., :-1]) / 2.0
    z2 = (mid[..., None] + half[..., None] * t).reshape(*kink.shape, -1)  # (m, n, (P + 1) * order)
    v = (half[..., None] * tw).reshape(z2.shape) * np.exp(-0.5 * z2 * z2) / _SQRT_2PI
    y = corr[:, None, None] * x[None, :, None] + s[:, None, None] * z2
    return PairRule(x, w, y, v)


def bracketed_root(h: Callable[[Array], Array], a: float, b: float, rtol: float) -> float:
    """A root of ``h`` between ``0 < a < b`` where ``h(a) >= 0 > h(b)`` or the reverse, by
    geometric multisection (32 interior points per round, vectorised)."""
    a_sign = bool(h(np.array([a]))[0] >= 0.0)
    for _ in range(64):
        if b / a - 1.0 <= rtol:
            break
        points = np.geomspace(a, b, 34)
        signs = h(points[1:-1]) >= 0.0
        flips = np.nonzero(signs != a_sign)[0]
        k = int(flips[0]) + 1 if flips.size else 33
        a, b = float(points[k - 1]), float(points[k])
    return math.sqrt(a * b)


__all__ = ["PAIR_COARSE", "PAIR_FINE", "QUADRATURE_CUTOFF", "PairRule", "bracketed_root", "normal_rule", "pair_rule"]
