r"""Gaussian quadrature on numpy: the rules behind :mod:`initlab.gain` and :mod:`initlab.theory`.

numpy only (no torch), so ``initlab theory`` starts as fast as ``--help``.

**One dimension.** :math:`E[f(z)] = \int f(x)\,n(x)\,dx`, :math:`z \sim N(0, 1)`, by composite
Gauss–Legendre panels on :math:`[-L, 0]` and :math:`[0, L]` against the normal density
:math:`n`. Splitting at 0 keeps every panel smooth for all registered activations, whose only
kink (ReLU, leaky ReLU, ELU with alpha != 1, SELU) is at 0, where plain Gauss–Hermite converges
only algebraically. The default rule (``L = 12``, panels of width 1/2, 20 nodes) is
:mod:`initlab.gain`'s: ~1e-13 relative; the Gaussian mass beyond ``L`` is ~4e-33.

**Any variance.** :mod:`initlab.theory` needs :math:`E[f(\sqrt q z)]` for q from 1e-300 to
1e300, where a fixed rule in z fails: at large q, :math:`\varphi'^2` is a peak of width
:math:`1/\sqrt q` in z that falls between its nodes (tanh's :math:`\chi_1` at
:math:`\sigma_w^2 = 10^8` came out 8e-24 instead of 5319). :func:`scaled_rule` splits the
Gaussian's panels at the integrand's :class:`Features` mapped to z: its kinks, and a geometric
ladder of edges around 0 on the scale where it bends; :func:`expectation` uses it where the
plain rule would not do (so moderate q keep the plain rule's nodes and numbers).

**Two dimensions.** :math:`E[f(u_1)\,g(u_2)]` for a bivariate normal pair of variance q and
correlation :math:`c`: :math:`u_1 = \sqrt q z_1`, :math:`u_2 = c u_1 + \sqrt{q(1-c^2)} z_2`;
the outer rule in :math:`z_1` and, for every outer node, the inner rule in :math:`z_2` are
both :func:`scaled_rule`, the inner one centred where :math:`u_2 = 0`. Every kink thus falls on
a panel edge at any q, so the rule converges spectrally for kinked activations too (a product
Gauss–Hermite rule does not).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
class Features:
    r"""Where an integrand :math:`f(u)` changes character, in its own variable :math:`u`.

    ``breaks`` are kinks or jumps (ReLU's 0, softplus' switch to the identity): always panel
    edges. ``scale`` is the width over which :math:`f` bends (1 for tanh, :math:`1/\beta` for
    softplus): the registered activations are analytic off their breaks with singularities no
    closer to the real axis than about ``scale``, and beyond :math:`64\cdot\text{scale}` they
    are linear up to corrections below :math:`e^{-64}`.
    """

    scale: float = 1.0
    breaks: tuple[float, ...] = (0.0,)


#: Features of scale 1 with a possible kink at 0: every registered activation but softplus.
UNIT_FEATURES = Features()


@dataclass(frozen=True)
class Rule:
    """A composite Gauss–Legendre rule against the standard normal density.

    Attributes:
        cutoff: the domain is [-cutoff, cutoff] in z (the mass beyond 10 is 1.5e-23, beyond 12 4e-33).
        width: the Gaussian's own panels, of this width in z.
        order: nodes per panel.
        span: the widest panel, in units of ``Features.scale``, that ``order`` nodes resolve next to a
            feature; the first rung of the ladder of edges around a break (see :func:`scaled_rule`).
    """

    cutoff: float
    width: float
    order: int
    span: float


#: 1-D rules of :mod:`initlab.theory`: ~1e-13 relative (FINE) and ~1e-10 for grids (COARSE).
FINE_1D = Rule(12.0, 0.5, 20, 2.0)
COARSE_1D = Rule(10.0, 1.0, 12, 2.0)
_LADDER_TOP = 64.0  # in units of Features.scale: beyond it the activations are linear (see Features)


def _ladder(rule: Rule, features: Features, widest: float) -> Array:
    """Edges ±span·2^k (k >= 0, up to 64, in units of the features' scale) below ``widest``, both signs."""
    steps = features.scale * rule.span * 2.0 ** np.arange(0.0, math.log2(_LADDER_TOP / rule.span) + 1.0)
    steps = steps[steps < widest]
    return np.concatenate([-steps[::-1], steps])


def scaled_rule(shift: Array, scale: Array, rule: Rule, features: Features) -> tuple[Array, Array]:
    r"""Arguments ``u`` and weights ``w``: :math:`\sum_j w_j f(u_j) \approx E[f(\text{shift} + \text{scale}\cdot z)]`.

    ``shift`` and ``scale >= 0`` broadcast to a shape ``S``; ``u`` and ``w`` have shape ``(*S, N)``.
    The panels are the Gaussian's (``rule.width`` wide in z) split at ``f``'s breaks mapped to z
    and, where a Gaussian panel is wider than ``rule.span`` feature scales in u, at a geometric
    ladder :math:`\pm \text{span}\cdot 2^k` around :math:`u = 0`, up to one Gaussian panel away
    (farther out the Gaussian's panels are narrower than the distance to the feature). So a
    feature of ``f`` much narrower than the Gaussian and a Gaussian much narrower than the
    feature are both resolved: accurate for any scale from 1e-300 to 1e300. Nodes are placed
    relative to the z where :math:`u = 0`, and ``u`` is formed as ``scale * (z - centre)``, exact
    near the features even where ``shift`` and ``scale`` are huge and cancel. ``scale`` 0 gives
    ``u = shift``; where nothing but the Gaussian's panels is needed, the rule is the plain
    composite one.
    """
    shift_b, scale_b = np.broadcast_arrays(np.asarray(shift, np.float64), np.asarray(scale, np.float64))
    regular = (scale_b > 0.0) & np.isfinite(scale_b)
    safe = np.where(regular, scale_b, 1.0)[..., None]  # (..., 1); degenerate scales are patched below
    centre = -shift_b[..., None] / safe  # the z where u = 0
    breaks = np.asarray(features.breaks, np.float64)
    ladder = _ladder(rule, features, rule.width * float(np.max(scale_b, initial=0.0, where=regular)))
    offsets = np.concatenate([breaks, ladder]) / safe  # (..., F): z - centre at each feature
    keep = regular[..., None] & (np.abs(offsets + centre) < rule.cutoff)
    keep[..., breaks.size:] &= np.abs(offsets[..., breaks.size:]) < rule.width
    grid = np.linspace(-rule.cutoff, rule.cutoff, round(2.0 * rule.cutoff / rule.width) + 1) - centre  # (..., G)
    # A dropped edge goes to u = 0 (or the domain's end nearest it): a zero-width panel, or a harmless split.
    parked = np.clip(0.0, grid[..., :1], grid[..., -1:])
    edges = np.sort(np.concatenate([grid, np.where(keep, offsets, parked)], axis=-1), axis=-1)
    t, tw = _legendre(rule.order)
    half = (edges[..., 1:] - edges[..., :-1]) * 0.5  # (..., P)
    offset = half[..., None] * t  # (..., P, order): z - centre at the nodes (in place: grids are large)
    offset += (edges[..., 1:] - half)[..., None]
    weights = offset + centre[..., None]
    np.multiply(weights, weights, out=weights)
    weights *= -0.5
    np.exp(weights, out=weights)
    weights *= half[..., None] * (tw / _SQRT_2PI)
    u = offset * safe[..., None]
    if not regular.all():  # scale 0: u = shift; scale inf: u = ±inf (f's limits), 0 on zero-width panels
        with np.errstate(invalid="ignore"):
            wild = np.where(offset == 0.0, 0.0, offset * scale_b[..., None, None])
        odd = np.where(scale_b[..., None, None] == 0.0, shift_b[..., None, None], wild)
        u = np.where(regular[..., None, None], u, odd)
    shape = (*half.shape[:-1], half.shape[-1] * rule.order)
    return u.reshape(shape), weights.reshape(shape)


@lru_cache(maxsize=8)
def _legendre(order: int) -> tuple[Array, Array]:
    nodes, weights = np.polynomial.legendre.leggauss(order)
    return nodes, weights


#: 2-D rules (outer rule for z1, inner rule for z2): ~1e-10 (FINE) and ~1e-4 for grids (COARSE).
PAIR_FINE = (Rule(10.0, 0.5, 16, 2.0), Rule(10.0, 0.25, 8, 1.0))
PAIR_COARSE = (Rule(7.0, 1.75, 8, 2.0), Rule(7.0, 0.875, 6, 2.0))


Pair = tuple[Callable[[Array], Array], Callable[[Array], Array]]


def pair_expectation(pairs: Sequence[Pair], c: Array, q: Array, spec: tuple[Rule, Rule] = PAIR_FINE,
                     features: Features = UNIT_FEATURES) -> Array:
    r""":math:`E[f(u_1)\,g(u_2)]` for each ``(f, g)`` in ``pairs``: shape ``(len(pairs), m)``.

    :math:`u_1, u_2` are normal with variance :math:`q` and correlation :math:`c` (``c``, ``q``:
    shape ``(m,)``): :math:`u_1 = \sqrt q z_1`, :math:`u_2 = c u_1 + \sqrt{q(1 - c^2)} z_2`. The
    outer rule in :math:`z_1` resolves ``f``'s features, the inner one in :math:`z_2`, shifted by
    :math:`c u_1`, resolves ``g``'s (all functions share ``features``); both rules are built
    once for all pairs.
    """
    outer, inner = spec
    corr = np.clip(np.asarray(c, np.float64), -1.0, 1.0)
    root_q = np.sqrt(np.asarray(q, np.float64))
    u1, w1 = scaled_rule(np.zeros_like(root_q), root_q, outer, features)  # (m, n)
    scale2 = (root_q * np.sqrt(1.0 - corr * corr))[:, None]
    u2, w2 = scaled_rule(corr[:, None] * u1, scale2, inner, features)  # (m, n, k)
    return np.stack([np.einsum("mn,mn,mn->m", f(u1), w1, np.einsum("mnk,mnk->mn", g(u2), w2)) for f, g in pairs])


def expectation(f: Callable[[Array], Array], scale: Array, rule: Rule, features: Features) -> Array:
    r""":math:`E[f(\text{scale}\cdot z)]`, z ~ N(0, 1), for each entry of ``scale`` (shape ``(m,)``).

    :func:`scaled_rule`, except where it would be the plain composite rule (no feature inside the
    domain off the Gaussian's panel edges): there the cached :func:`normal_rule`, the same nodes.
    """
    scale = np.asarray(scale, np.float64)
    out = np.empty(scale.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = ~(rule.width * scale > rule.span * features.scale)  # no ladder
        for b in features.breaks:  # 0 is a panel edge; others must lie outside the domain
            plain &= (b == 0.0) | ~(abs(b) < rule.cutoff * scale) | ~np.isfinite(scale)
    if plain.any():
        x, w = normal_rule(rule.cutoff, round(rule.cutoff / rule.width), rule.order)
        out[plain] = f(scale[plain, None] * x) @ w
    if not plain.all():
        u, w = scaled_rule(np.zeros(int((~plain).sum())), scale[~plain], rule, features)
        out[~plain] = np.einsum("mn,mn->m", f(u), w)
    return out


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


__all__ = [
    "COARSE_1D", "FINE_1D", "PAIR_COARSE", "PAIR_FINE", "QUADRATURE_CUTOFF", "UNIT_FEATURES", "Features", "Rule",
    "bracketed_root", "expectation", "normal_rule", "pair_expectation", "scaled_rule",
]
