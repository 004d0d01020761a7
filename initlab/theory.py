r"""Mean-field theory of signal propagation through a deep random MLP, one function per equation.

Wide-network limit, weights :math:`W_{ij} \sim N(0, \sigma_w^2/\text{fan\_in})`, biases
:math:`b_i \sim N(0, \sigma_b^2)`, pre-activations :math:`h^l = W^l \varphi(h^{l-1}) + b^l`,
:math:`z, z_1, z_2` independent standard normals. Papers:

* Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli 2016, "Exponential expressivity in deep
  neural networks through transient chaos" (NeurIPS): the length map, the correlation map
  and its slope :math:`\chi_1`, the order-to-chaos transition.
* Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep information propagation" (ICLR):
  the depth scales :math:`\xi_q, \xi_c`, and the backward (gradient) map with the same
  :math:`\chi_1`.
* Hanin & Rolnick 2018, "How to start training: the effect of initialization and
  architecture" (NeurIPS): finite-width fluctuations of the length for ReLU nets.

Expectations are computed by the split Gauss–Legendre rules of :mod:`initlab.quadrature`
(1-D ~1e-13, 2-D ~1e-10, for any q from 1e-300 to 1e300), vectorised over grids of :math:`q`
and :math:`c`; the functions take scalars or arrays. Derivatives of kinked activations are the
almost-everywhere ones (see :mod:`initlab.elementwise`). numpy only: nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from initlab import residual_theory
from initlab.activations import Activation
from initlab.elementwise import Elementwise, elementwise
from initlab.quadrature import (
    COARSE_1D,
    FINE_1D,
    PAIR_COARSE,
    PAIR_FINE,
    UNIT_FEATURES,
    Features,
    Pair,
    bracketed_root,
    expectation,
    pair_expectation,
)

if TYPE_CHECKING:
    from initlab.config import Config, DataConfig
    from initlab.schemes import Scheme

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
ArrayLike = float | Sequence[float] | Array
#: ``ordered``/``chaotic``/``critical`` need a fixed point q* (finite, or q* = 0 for a smooth φ
#: with φ(0) = 0, which linearises there). ``exploding``: q grows without bound (no finite q*);
#: ``vanishing``: q → 0 under a positively homogeneous φ (ReLU family, linear), where the map
#: scales q by a constant factor for ever; in both, order and chaos are undefined.
Phase = Literal["ordered", "chaotic", "critical", "exploding", "vanishing"]
FateKind = Literal["fixed_point", "marginal", "unstable", "vanishing", "explosion"]

#: |χ₁ − 1| at or below this is the critical phase (gradients change by less than e^±1 over
#: ~1000 layers, beyond any depth initlab studies).
CRITICAL_TOL = 1e-3
#: |V(q0) − q0| <= this * q0: q0 is itself the fixed point (marginal maps: every q is fixed).
_FIXED_TOL = 1e-10
#: The fixed point q* is searched for between these: the float range, less room for
#: (12√q)² at the rule's last node (1.4e308 at q = 1e306) and for subnormals below 1e-300.
_Q_FLOOR, _Q_CEILING = 1e-300, 1e306
_OCTAVES = 64  # octaves scanned one by one next to q0; farther out, steps of 2^_STRIDE
_STRIDE = 8


def gaussian_expectation(f: Callable[[Array], Array], q: ArrayLike, fine: bool = True,
                         features: Features = UNIT_FEATURES) -> Array:
    r""":math:`E[f(\sqrt q\, z)]`, z ~ N(0, 1), for every ``q`` (by quadrature).

    Accurate (~1e-13 relative, ~1e-10 with ``fine=False``) for any q from 1e-300 to 1e300 and
    q = 0 (:math:`f(0)`): panels follow both the Gaussian's width :math:`\sqrt q` and ``f``'s
    ``features`` (see :func:`initlab.quadrature.scaled_rule`), so the narrow peak of
    :math:`\varphi'^2` at large q is resolved.
    """
    scale = np.sqrt(np.atleast_1d(np.asarray(q, dtype=np.float64)))
    with np.errstate(all="ignore"):
        return expectation(f, scale, FINE_1D if fine else COARSE_1D, features)


def _e(activation: Activation | Elementwise) -> Elementwise:
    return activation if isinstance(activation, Elementwise) else elementwise(activation)


def _expect(e: Elementwise, f: Callable[[Array], Array], q: ArrayLike, fine: bool = True) -> Array:
    return gaussian_expectation(f, q, fine, e.features)


# --------------------------------------------------------------------------- length map


def length_map(activation: Activation | Elementwise, q: ArrayLike, sw2: ArrayLike, sb2: ArrayLike,
               fine: bool = True) -> Array:
    r"""The length map :math:`q_{l+1} = \sigma_w^2\,E[\varphi(\sqrt{q_l} z)^2] + \sigma_b^2`.

    Poole et al. 2016, §2 (the iterative map of the squared length :math:`q^l` of a
    pre-activation vector); Schoenholz et al. 2017, §2.
    """
    e = _e(activation)
    with np.errstate(all="ignore"):  # q beyond float range is inf, not a warning
        result: Array = np.asarray(sw2) * _expect(e, lambda x: e.phi(x) ** 2, q, fine) + np.asarray(sb2)
    return result


def length_map_slope(activation: Activation | Elementwise, q: ArrayLike, sw2: ArrayLike, fine: bool = True) -> Array:
    r""":math:`\partial q_{l+1}/\partial q_l = \chi_1 + \sigma_w^2 E[\varphi''(\sqrt q z)\varphi(\sqrt q z)]`.

    The factor by which a deviation from :math:`q^*` shrinks per layer; Schoenholz et al. 2017,
    §3, eq. (5) writes :math:`\xi_q^{-1} = -\ln[\chi_1 + \sigma_w^2 \int Dz\,
    \varphi''(\sqrt{q^*}z)\varphi(\sqrt{q^*}z)]`. (Gaussian integration by parts:
    :math:`\frac{d}{dq}E[\varphi^2] = E[\varphi'^2 + \varphi\varphi'']`.)

    Computed for q > 0 as :math:`\sigma_w^2 E[u\,\varphi(u)\varphi'(u)]/q`, :math:`u = \sqrt q z`
    (Stein's lemma, the same number): at large q the two terms of the first form nearly cancel
    (tanh: :math:`\int \mathrm{sech}^4 = 2\int \tanh^2\mathrm{sech}^2`), the second has no cancellation.
    """
    e = _e(activation)
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    with np.errstate(all="ignore"):
        stein = _expect(e, lambda x: x * e.phi(x) * e.dphi(x), qs, fine) / qs
        at_zero = e.dphi(np.zeros(1)) ** 2 + e.phi(np.zeros(1)) * e.ddphi(np.zeros(1))
        return np.asarray(sw2) * np.where(qs > 0.0, stein, at_zero)


def chi1(activation: Activation | Elementwise, q: ArrayLike, sw2: ArrayLike, fine: bool = True) -> Array:
    r""":math:`\chi_1 = \sigma_w^2\,E[\varphi'(\sqrt q z)^2]`.

    Poole et al. 2016, §3 (the slope of the correlation map at :math:`c = 1`, the mean squared
    singular value of the Jacobian); Schoenholz et al. 2017, §5: the backward map multiplies
    the gradients' second moment by :math:`\chi_1` per layer. Ordered if < 1, chaotic if > 1.
    """
    e = _e(activation)
    with np.errstate(all="ignore"):
        return np.asarray(sw2) * _expect(e, lambda x: e.dphi(x) ** 2, q, fine)


def post_std(activation: Activation | Elementwise, q: ArrayLike, fine: bool = True) -> Array:
    r""":math:`\sqrt{E[\varphi(\sqrt q z)^2] - E[\varphi(\sqrt q z)]^2}`: the spread of a block's output."""
    e = _e(activation)
    mean = _expect(e, e.phi, q, fine)
    second = _expect(e, lambda x: e.phi(x) ** 2, q, fine)
    result: Array = np.sqrt(np.maximum(second - mean * mean, 0.0))
    return result


def length_trajectory(activation: Activation | Elementwise, q0: float, sw2: Sequence[float], sb2: float) -> Array:
    r""":math:`q_0, \dots, q_{L-1}`: ``q0`` then the length map with block :math:`l`'s :math:`\sigma_{w,l}^2`."""
    e = _e(activation)
    q = np.empty(len(sw2))
    q[0] = q0
    for layer in range(1, len(sw2)):
        if sw2[layer] == sw2[layer - 1] and layer > 1 and q[layer - 1] == q[layer - 2]:
            q[layer:] = q[layer - 1]  # converged to float precision: the rest is the same number
            if all(v == sw2[layer] for v in sw2[layer:]):
                break
        q[layer] = float(length_map(e, q[layer - 1], sw2[layer], sb2)[0])
    return q


@dataclass(frozen=True)
class Trajectory:
    r"""Per-block predictions: :math:`q_l`, :math:`\sqrt{q_l}`, std of :math:`\varphi(\sqrt{q_l}z)`, :math:`\chi_l`."""

    q: list[float]
    pre_std: list[float]
    post_std: list[float]
    chi: list[float]


def trajectory(activation: Activation | Elementwise, q0: float, sw2: Sequence[float], sb2: float) -> Trajectory:
    r"""The length map from ``q0`` through blocks with these :math:`\sigma_{w,l}^2`, and each block's
    :math:`\chi_l = \sigma_{w,l}^2 E[\varphi'(\sqrt{q_l} z)^2]` (Schoenholz et al. 2017, §5)."""
    e = _e(activation)
    q = length_trajectory(e, q0, sw2, sb2)
    with np.errstate(all="ignore"):
        chi = chi1(e, q, sw2)
        return Trajectory(q.tolist(), np.sqrt(q).tolist(), post_std(e, q).tolist(), chi.tolist())


@dataclass(frozen=True)
class LengthFixedPoint:
    """Where the length map takes ``q0``: ``q`` is :math:`q^*` (0 for ``vanishing``, inf for ``explosion``)."""

    kind: FateKind
    q: float
    slope: float | None  # ∂V/∂q at q*, None for vanishing and explosion


def _scan_octaves() -> Array:
    """Octaves away from q0 at which V(q) - q is checked: one by one near q0, then in strides to the float range."""
    far = _OCTAVES + _STRIDE * np.arange(1, math.ceil((math.log2(_Q_CEILING) - math.log2(_Q_FLOOR)) / _STRIDE) + 1)
    return np.concatenate([np.arange(1.0, _OCTAVES + 1.0), far])


def _limits(q0: Array) -> tuple[Array, Array]:
    """The scan's floor and ceiling for each start (q0 itself where it lies beyond them)."""
    return np.minimum(_Q_FLOOR, q0), np.maximum(_Q_CEILING, q0)


def _bracket_fixed_q(excess: Callable[[Array, npt.NDArray[np.intp]], Array], q0: Array, up: Mask,
                     found: Mask) -> tuple[Array, Array, Mask]:
    """Scan from q0 (up where V(q0) > q0, else down) for a sign change of V(q) - q: brackets and hits."""
    octaves, (floor, ceiling) = _scan_octaves(), _limits(q0)
    lo, hi, last = q0.copy(), q0.copy(), q0.copy()
    alive = ~found
    for first in range(0, len(octaves), 8):  # chunks: most points cross within a few octaves
        idx = np.flatnonzero(alive)
        if not idx.size:
            break
        k = octaves[first:first + 8]
        with np.errstate(over="ignore"):  # beyond the float range: clipped to the ceiling
            grid = q0[idx, None] * np.exp2(np.where(up[idx, None], k, -k))
        grid = np.clip(grid, floor[idx, None], ceiling[idx, None])
        h = excess(grid, idx)
        # A crossing must clear the quadrature's rounding: V(q) - q of a map that only creeps
        # (ReLU at σw² = 2 with bias adds σb² per layer) is never mistaken for a fixed point.
        crossed = np.where(up[idx, None], h <= -1e-9 * grid, h >= 1e-9 * grid)
        hit = crossed.any(axis=1)
        j = np.argmax(crossed, axis=1)
        rows = np.arange(len(idx))
        before = np.where(j == 0, last[idx], grid[rows, np.maximum(j - 1, 0)])
        lo[idx] = np.where(hit, np.minimum(before, grid[rows, j]), lo[idx])
        hi[idx] = np.where(hit, np.maximum(before, grid[rows, j]), hi[idx])
        last[idx] = grid[:, -1]
        found[idx] = hit
        alive[idx] = ~hit & (grid[:, -1] > floor[idx]) & (grid[:, -1] < ceiling[idx])
    return lo, hi, found


def _fixed_q(e: Elementwise, sw2: Array, sb2: Array, q0: Array, fine: bool) -> Array:
    """Vectorised :math:`q^*`: 0 where q collapses, inf where it grows without bound."""
    def excess(q: Array, idx: npt.NDArray[np.intp]) -> Array:
        cols = q.shape[1]
        flat = length_map(e, q.ravel(), np.repeat(sw2[idx], cols), np.repeat(sb2[idx], cols), fine)
        return flat.reshape(q.shape) - q

    h0 = excess(q0[:, None], np.arange(len(q0)))[:, 0]
    up = h0 > 0
    at_q0 = np.abs(h0) <= _FIXED_TOL * q0
    lo, hi, found = _bracket_fixed_q(excess, q0, up, at_q0.copy())
    todo = np.flatnonzero(found & (lo < hi))
    for _ in range(64):
        mid = np.sqrt(lo[todo]) * np.sqrt(hi[todo])  # no overflow near 1e306
        above = excess(mid[:, None], todo)[:, 0] > 0  # V(q) > q: q* is above mid
        lo[todo], hi[todo] = np.where(above, mid, lo[todo]), np.where(above, hi[todo], mid)
    q_star = np.where(found, np.sqrt(lo) * np.sqrt(hi), np.where(up, np.inf, 0.0))
    return np.where(at_q0, q0, q_star)


def length_fixed_point(
    activation: Activation | Elementwise, sw2: float, sb2: float, q0: float = 1.0
) -> LengthFixedPoint:
    r"""The fixed point :math:`q^* = \sigma_w^2 E[\varphi(\sqrt{q^*}z)^2] + \sigma_b^2` reached from ``q0``.

    Poole et al. 2016, §2. Found structurally (the map is increasing, so iterates move
    monotonically to the nearest fixed point on the side :math:`V(q_0) - q_0` points to):
    octaves above or below ``q0`` are scanned for a sign change of :math:`V(q) - q`, then
    bisected to float precision. None down to 1e-300: collapse (``vanishing``, q* = 0);
    none up to 1e306: ``explosion``. :math:`V'(q^*)` = 1 within 1e-6 is ``marginal``
    (every q is fixed: linear at σw² = 1, ReLU at σw² = 2 without bias).
    """
    e = _e(activation)
    q_star = float(_fixed_q(e, np.array([sw2]), np.array([sb2]), np.array([q0]), True)[0])
    if q_star == 0.0 or math.isinf(q_star):
        return LengthFixedPoint("vanishing" if q_star == 0.0 else "explosion", q_star, None)
    slope = float(length_map_slope(e, q_star, sw2)[0])
    kind: FateKind = "marginal" if abs(slope - 1.0) <= 1e-6 else ("unstable" if slope > 1.0 else "fixed_point")
    return LengthFixedPoint(kind, q_star, slope)


# --------------------------------------------------------------------------- correlation map


def _pair_expectation(pairs: Sequence[Pair], c: Array, q: Array, fine: bool, features: Features) -> Array:
    """:func:`initlab.quadrature.pair_expectation` in chunks, shape ``(len(pairs), len(c))``."""
    spec = PAIR_FINE if fine else PAIR_COARSE
    chunk = 4 if fine else 64  # bounded memory on grids: ~1e6 (fine) or ~1e4 (coarse) nodes per point
    out = np.empty((len(pairs), len(c)))
    with np.errstate(all="ignore"):
        for start in range(0, len(c), chunk):
            part = slice(start, start + chunk)
            out[:, part] = pair_expectation(pairs, c[part], q[part], spec, features)
    return out


def _correlation_map_and_slope(e: Elementwise, c: Array, q: Array, sw2: Array, sb2: Array, fine: bool
                               ) -> tuple[Array, Array]:
    """The correlation map and its slope at once (one quadrature rule for both)."""
    pair, slope = _pair_expectation([(e.phi, e.phi), (e.dphi, e.dphi)], c, q, fine, e.features)
    return (sw2 * pair + sb2) / q, sw2 * slope


def correlation_map(activation: Activation | Elementwise, c: ArrayLike, q: ArrayLike, sw2: ArrayLike,
                    sb2: ArrayLike, fine: bool = True) -> Array:
    r"""The correlation map :math:`c_{l+1} = (\sigma_w^2 E[\varphi(u_1)\varphi(u_2)] + \sigma_b^2)/q^*`.

    :math:`u_1 = \sqrt{q^*} z_1`, :math:`u_2 = \sqrt{q^*}(c_l z_1 + \sqrt{1-c_l^2}\,z_2)`: two
    inputs' pre-activations at the fixed length :math:`q^*` with correlation :math:`c_l`.
    Poole et al. 2016, §2 (the correlation map); Schoenholz et al. 2017, §2.
    """
    e = _e(activation)
    cs, qs = np.broadcast_arrays(np.atleast_1d(np.asarray(c, float)), np.atleast_1d(np.asarray(q, float)))
    pair = _pair_expectation([(e.phi, e.phi)], cs, qs, fine, e.features)[0]
    result: Array = (np.asarray(sw2) * pair + np.asarray(sb2)) / qs
    return result


def correlation_slope(activation: Activation | Elementwise, c: ArrayLike, q: ArrayLike, sw2: ArrayLike,
                      fine: bool = True) -> Array:
    r""":math:`\chi_c = \partial c_{l+1}/\partial c_l = \sigma_w^2 E[\varphi'(u_1)\varphi'(u_2)]` (Price's theorem).

    At :math:`c^*` this is the factor by which a deviation from :math:`c^*` shrinks per layer;
    Schoenholz et al. 2017, §3: :math:`\xi_c^{-1} = -\ln[\sigma_w^2 \int Dz_1 Dz_2\,
    \varphi'(u_1)\varphi'(u_2)]`. At :math:`c = 1` it equals :math:`\chi_1`.
    """
    e = _e(activation)
    cs, qs = np.broadcast_arrays(np.atleast_1d(np.asarray(c, float)), np.atleast_1d(np.asarray(q, float)))
    result: Array = np.asarray(sw2) * _pair_expectation([(e.dphi, e.dphi)], cs, qs, fine, e.features)[0]
    return result


def correlation_fixed_point(activation: Activation | Elementwise, q: ArrayLike, sw2: ArrayLike, sb2: ArrayLike,
                            fine: bool = True) -> Array:
    r"""The fixed point :math:`c^*` of the correlation map that iterates from :math:`c_0 = 0` reach.

    Poole et al. 2016, §3: :math:`c = 1` is always fixed, with slope :math:`\chi_1`; in the
    ordered phase (:math:`\chi_1 \le 1`) it attracts (:math:`c^* = 1`), in the chaotic phase a
    second fixed point :math:`c^* < 1` appears. Found by safeguarded Newton on
    :math:`C(c) - c` in [0, 1) (:math:`C(0) \ge 0` always), vectorised over the points.
    """
    e = _e(activation)
    qs, w2, b2 = (np.atleast_1d(np.asarray(v, float)) for v in np.broadcast_arrays(q, sw2, sb2))
    ordered = chi1(e, qs, w2, fine) <= 1.0
    c, lo, hi = np.zeros(len(qs)), np.zeros(len(qs)), np.ones(len(qs))
    todo = ~ordered
    for _ in range(60):
        if not todo.any():
            break
        idx = np.flatnonzero(todo)
        mapped, slope = _correlation_map_and_slope(e, c[idx], qs[idx], w2[idx], b2[idx], fine)
        h, dh = mapped - c[idx], slope - 1.0
        lo[idx], hi[idx] = np.where(h >= 0, c[idx], lo[idx]), np.where(h >= 0, hi[idx], c[idx])
        with np.errstate(all="ignore"):
            step = np.where(dh < 0, c[idx] - h / dh, np.nan)
        bad = ~((step > lo[idx]) & (step < hi[idx]))
        new = np.where(bad, (lo[idx] + hi[idx]) / 2.0, step)
        done = 1e-14 if fine else 1e-9
        todo[idx] = (np.abs(new - c[idx]) > done) & (hi[idx] - lo[idx] > done) & (h != 0)
        c[idx] = np.where(h == 0, c[idx], new)
    return np.where(ordered, 1.0, c)


# --------------------------------------------------------------------------- depth scales and phase


def depth_scale(slope: float | None) -> float | None:
    r""":math:`\xi = -1/\ln(\text{slope})` for a slope in (0, 1); inf at 1 (critical); None otherwise.

    Schoenholz et al. 2017, §3: deviations of :math:`q` (slope
    :math:`\partial V/\partial q` at :math:`q^*`, giving :math:`\xi_q`) and of :math:`c` (slope
    :math:`\chi_c`, giving :math:`\xi_c`) decay as :math:`e^{-l/\xi}`.
    """
    if slope is None or not math.isfinite(slope) or not 0.0 < slope <= 1.0:
        return None
    return math.inf if slope == 1.0 else -1.0 / math.log(slope)


def phase_of(chi: float, tol: float = CRITICAL_TOL) -> Phase:
    """``critical`` when |χ₁ − 1| <= tol, else ``ordered`` (χ₁ < 1) or ``chaotic`` (χ₁ > 1); Poole et al. 2016, §3."""
    if abs(chi - 1.0) <= tol:
        return "critical"
    return "ordered" if chi < 1.0 else "chaotic"


def _chi1_at(e: Elementwise, q_star: Array, sw2: Array, q0: Array, fine: bool) -> Array:
    """χ₁ at q*, or at the limit the scan reached where q collapses (1e-300) or explodes (1e306)."""
    floor, ceiling = _limits(q0)
    q = np.where(q_star == 0.0, floor, np.where(np.isinf(q_star), ceiling, q_star))
    return chi1(e, q, sw2, fine)


@dataclass(frozen=True)
class PointTheory:
    """Every mean-field number at one :math:`(\\sigma_w^2, \\sigma_b^2)` from :math:`q_0` (None: undefined)."""

    sw2: float
    sb2: float
    q0: float
    fate: FateKind
    q_star: float | None  # None where q grows without bound
    length_slope: float | None
    chi1: float
    phase: Phase
    c_star: float | None
    chi_c: float | None
    xi_q: float | None
    xi_c: float | None


def _homogeneous(e: Elementwise) -> bool:
    """Whether φ is positively homogeneous: E[φ(√q z)²]/q independent of q (ReLU family, linear)."""
    second = _expect(e, lambda x: e.phi(x) ** 2, [1.0, 4.0])
    return bool(second[0] > 0.0 and abs(second[1] / 4.0 - second[0]) <= 1e-12 * second[0])


def _unbounded(e: Elementwise, kind: FateKind) -> Phase | None:
    """``exploding``/``vanishing`` where the length map has no fixed point to take a phase at, else None."""
    if kind == "explosion":
        return "exploding"
    return "vanishing" if kind == "vanishing" and _homogeneous(e) else None


#: |c*| below this is 0: the 2-D quadrature's accuracy (a c* of 1e-31 is rounding, not a number).
C_STAR_FLOOR = 1e-12


def point(activation: Activation | Elementwise, sw2: float, sb2: float, q0: float = 1.0,
          tol: float = CRITICAL_TOL) -> PointTheory:
    """q*, χ₁, phase, c*, χ_c, ξ_q, ξ_c at one point, starting from ``q0``.

    Where q has no fixed point to settle on (see :data:`Phase`), ``phase`` is ``exploding`` or
    ``vanishing``, ``chi1`` is χ₁ in that limit, and c*, χ_c, ξ_c are None.
    """
    e = _e(activation)
    fixed = length_fixed_point(e, sw2, sb2, q0)
    chi = float(_chi1_at(e, np.array([fixed.q]), np.array([sw2]), np.array([q0]), True)[0])
    unbounded = _unbounded(e, fixed.kind)
    phase: Phase = unbounded or phase_of(chi, tol)
    c_star = chi_c = None
    if 0.0 < fixed.q < math.inf and unbounded is None:
        if phase == "chaotic":
            c_star = float(correlation_fixed_point(e, fixed.q, sw2, sb2)[0])
            chi_c = float(correlation_slope(e, c_star, fixed.q, sw2)[0])
            c_star = 0.0 if abs(c_star) < C_STAR_FLOOR else c_star
        else:  # c = 1 attracts (or is marginal): its slope is χ₁
            c_star, chi_c = 1.0, chi
    return PointTheory(
        sw2=sw2, sb2=sb2, q0=q0, fate=fixed.kind, q_star=None if math.isinf(fixed.q) else fixed.q,
        length_slope=fixed.slope, chi1=chi, phase=phase, c_star=c_star, chi_c=chi_c,
        xi_q=depth_scale(fixed.slope) if fixed.kind == "fixed_point" else None,
        xi_c=math.inf if phase == "critical" and chi_c is not None else depth_scale(chi_c),
    )


# --------------------------------------------------------------------------- the critical line


def chi1_grid(activation: Activation | Elementwise, sw2: ArrayLike, sb2: ArrayLike, q0: float = 1.0,
              fine: bool = True) -> Array:
    """χ₁ at q* for every pair of (broadcast) ``sw2``, ``sb2``, vectorised."""
    e = _e(activation)
    w2, b2 = (np.atleast_1d(v).astype(float).ravel() for v in np.broadcast_arrays(sw2, sb2))
    start = np.full(len(w2), q0)
    return _chi1_at(e, _fixed_q(e, w2, b2, start, fine), w2, start, fine)


def _critical(h: Callable[[Array], Array], scan: Array, rtol: float = 1e-12) -> float | None:
    """The first root of ``h`` (= ln χ₁ along a line) on ``scan``, refined to ``rtol``."""
    values = h(scan)
    exact = np.flatnonzero(np.abs(values) <= 1e-11)  # on the line to rounding (tanh at σw² = 1, σb² = 0)
    signs = values >= 0.0
    flips = np.flatnonzero(signs[1:] != signs[:-1])
    if exact.size and (not flips.size or exact[0] <= flips[0]):
        return float(scan[exact[0]])
    if not flips.size:
        return None
    k = int(flips[0])
    if scan[k] == 0.0:
        scan = scan.copy()
        scan[k] = scan[k + 1] * 1e-12
    return bracketed_root(h, float(scan[k]), float(scan[k + 1]), rtol)


def _has_fixed_point(e: Elementwise, sw2: float, sb2: float, q0: float, rtol: float) -> bool:
    """Whether the length map from ``q0`` settles on a fixed point q* at which χ₁ is a phase.

    χ₁ also reaches 1 where q has none, only in the limit the scan stops at (ReLU at σw² = 2
    with σb² > 0: q grows linearly for ever): that is no edge of chaos. A root known to
    ``rtol`` where q0 stays put to that accuracy (ReLU at σw² = 2, σb² = 0) is marginal.
    """
    if _unbounded(e, length_fixed_point(e, sw2, sb2, q0).kind) is None:
        return True
    return bool(abs(length_map(e, q0, sw2, sb2)[0] - q0) <= 10.0 * rtol * q0)


def critical_sigma_w2(
    activation: Activation | Elementwise, sb2: float, q0: float = 1.0, fine: bool = True, asymptotic: bool = False
) -> float | None:
    r"""The :math:`\sigma_w^2` with :math:`\chi_1 = 1` at a fixed point :math:`q^*`: the edge of chaos.

    Poole et al. 2016, §3 (the order-to-chaos critical line); None where :math:`\chi_1 = 1`
    has no root for :math:`\sigma_w^2 \in [10^{-3}, 10^3]`, or where the root has no fixed point
    (q grows without bound or, for a positively homogeneous φ, collapses: see :data:`Phase`).
    ``asymptotic=True``: the root of χ₁ = 1 whether or not q* exists (χ₁ in the limit q → ∞ or
    0 where it does not): the boundary between ``exploding`` regions, not an edge of chaos.
    ``fine=False``: the grids' rule, to 1e-8.
    """
    e = _e(activation)
    scan = np.geomspace(1e-3, 1e3, 121)
    rtol = 1e-12 if fine else 1e-8
    root = _critical(lambda w2: np.log(chi1_grid(e, w2, sb2, q0, fine)), scan, rtol)
    return root if asymptotic or root is None or _has_fixed_point(e, root, sb2, q0, rtol) else None


def critical_sigma_b2(activation: Activation | Elementwise, sw2: float, q0: float = 1.0,
                      asymptotic: bool = False) -> float | None:
    r"""The :math:`\sigma_b^2 \ge 0` with :math:`\chi_1(\sigma_w^2, \sigma_b^2) = 1` at a fixed point (the
    reverse of :func:`critical_sigma_w2`, same ``asymptotic``); None where there is none in [0, 10^3]."""
    e = _e(activation)
    scan = np.concatenate([[0.0], np.geomspace(1e-8, 1e3, 111)])
    root = _critical(lambda b2: np.log(chi1_grid(e, sw2, b2, q0)), scan)
    return root if asymptotic or root is None or _has_fixed_point(e, sw2, root, q0, 1e-12) else None


@dataclass(frozen=True)
class PhaseDiagram:
    """χ₁, phase and ξ_c over a σw² × σb² grid (rows σb², columns σw²), and the critical line.

    ``phase`` codes: -1 ordered, 0 critical, 1 chaotic, 2 exploding and -2 vanishing (no fixed
    point: see :data:`Phase`). ``xi_c`` is NaN where undefined (q collapses or grows without
    bound). ``critical_sw2[i]`` is :func:`critical_sigma_w2` at ``critical_sb2[i]`` (NaN where
    there is no edge of chaos with a fixed point).
    """

    activation: str
    sw2: Array
    sb2: Array
    chi1: Array
    phase: Array
    xi_c: Array
    critical_sb2: Array
    critical_sw2: Array
    tol: float


def phase_diagram(activation: Activation, sw2: Array, sb2: Array, q0: float = 1.0, tol: float = CRITICAL_TOL,
                  line_points: int = 16) -> PhaseDiagram:
    r"""The order-to-chaos phase diagram (Poole et al. 2016, §3, Fig. 2; Schoenholz et al. 2017, Fig. 1).

    χ₁ at q* on the grid with the coarse 1-D rule (~1e-10); ξ_c from χ₁ in the ordered phase and
    from :math:`\chi_c` at :math:`c^*` (coarse 2-D rule :data:`~initlab.quadrature.PAIR_COARSE`:
    c* and χ_c within ~1e-5 of the fine rule's at q* <= 20, ~1e-3 at q* = 50) in the chaotic one; the critical
    line by root-finding at ``line_points`` values of σb².
    """
    e = elementwise(activation)
    w2, b2 = np.meshgrid(np.asarray(sw2, float), np.asarray(sb2, float))  # (rows σb², cols σw²)
    start = np.full(w2.size, q0)
    q_star = _fixed_q(e, w2.ravel(), b2.ravel(), start, False)
    chi = _chi1_at(e, q_star, w2.ravel(), start, False)
    codes = np.where(np.abs(chi - 1.0) <= tol, 0, np.where(chi < 1.0, -1, 1))
    codes = np.where(np.isinf(q_star), 2, np.where((q_star == 0.0) & _homogeneous(e), -2, codes))
    slope = np.where(codes <= 0, chi, np.nan)
    chaotic = np.flatnonzero((codes == 1) & (q_star > 0) & np.isfinite(q_star))
    if chaotic.size:
        args = (q_star[chaotic], w2.ravel()[chaotic], b2.ravel()[chaotic])
        c_star = correlation_fixed_point(e, *args, fine=False)
        slope[chaotic] = correlation_slope(e, c_star, args[0], args[1], fine=False)
    defined = (q_star > 0) & np.isfinite(q_star) & (slope > 0)
    with np.errstate(all="ignore"):
        xi = np.where(defined, np.where(slope >= 1.0, np.inf, -1.0 / np.log(slope)), np.nan)
    low, high = float(np.min(sb2)), float(np.max(sb2))
    line_b2 = low + (high - low) * np.linspace(0.0, 1.0, line_points) ** 2  # denser where the line bends
    line_w2 = np.array([critical_sigma_w2(e, float(b), q0, fine=False) or np.nan for b in line_b2])
    return PhaseDiagram(activation.label(), np.asarray(sw2, float), np.asarray(sb2, float), chi.reshape(w2.shape),
                        codes.reshape(w2.shape), xi.reshape(w2.shape), line_b2, line_w2, tol)


# --------------------------------------------------------------------------- finite width


def finite_width_log_std(widths: Sequence[int], kurtosis: float = 5.0) -> tuple[float, float]:
    r"""Expected drift and spread (sd across seeds) of :math:`\log` std after blocks of ``widths``.

    Hanin & Rolnick 2018, §3 (ReLU nets at :math:`\sigma_w^2 = 2`): per block the squared length
    is multiplied by :math:`\frac1n\sum_i 2\,\mathrm{relu}(\xi_i)^2`, mean 1 and variance
    :math:`\kappa/n` with :math:`\kappa = 4\,\mathrm{Var}[\mathrm{relu}(\xi)^2] = 5`. To first order
    :math:`\log\lVert x_L\rVert^2` then has mean :math:`-\frac\kappa2\sum 1/n_l` and variance
    :math:`\kappa\sum 1/n_l`, so :math:`\log` std (half of it) has mean
    :math:`-\frac\kappa4\sum 1/n_l` and sd :math:`\frac12\sqrt{\kappa\sum 1/n_l}`. ``kurtosis``
    is :math:`\kappa = E[\varphi^4]/E[\varphi^2]^2 - 1` for other positively homogeneous
    activations (2 for linear).
    """
    total = sum(1.0 / n for n in widths)
    return -kurtosis * total / 4.0, 0.5 * math.sqrt(kurtosis * total)


# --------------------------------------------------------------------------- a study's config


def _truncated_normal(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and variance of N(mean, std²) truncated to [a, b] (torch's ``trunc_normal_``).

    The closed form (Johnson, Kotz & Balakrishnan 1994, ch. 13) cancels catastrophically when
    [a, b] is narrow against ``std`` (the uniform limit); there the moments come from
    Gauss–Legendre quadrature of the density over the short standardised interval instead.
    """
    alpha, beta = (a - mean) / std, (b - mean) / std
    if beta - alpha < 0.5:
        centre, half = (alpha + beta) / 2.0, (beta - alpha) / 2.0
        nodes, weights = np.polynomial.legendre.leggauss(32)
        u = half * nodes  # z - centre
        nearest = min(max(0.0, alpha), beta)  # the interval's point of highest density
        w = weights * np.exp(-0.5 * ((centre + u) ** 2 - nearest**2))
        shift = float(np.dot(w, u) / w.sum())
        return mean + std * (centre + shift), std * std * float(np.dot(w, (u - shift) ** 2) / w.sum())
    pdf = [math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi) for v in (alpha, beta)]
    mass = 0.5 * (math.erf(beta / math.sqrt(2.0)) - math.erf(alpha / math.sqrt(2.0)))
    shift = (pdf[0] - pdf[1]) / mass
    variance = std * std * (1.0 + (alpha * pdf[0] - beta * pdf[1]) / mass - shift * shift)
    return mean + std * shift, variance


def _zero_mean_variance(scheme: Scheme) -> tuple[float | None, str | None]:
    """Variance of an element-wise scheme's draws, or None and why (a non-zero mean)."""
    from initlab.schemes import Constant, Normal, Ones, TruncNormal, Uniform, Zeros

    if isinstance(scheme, Zeros) or (isinstance(scheme, Constant) and scheme.val == 0.0):
        return 0.0, None
    if isinstance(scheme, (Constant, Ones)):
        return None, f"{scheme.label()}: constant values (identical units): no mean-field theory"
    if isinstance(scheme, Normal):
        mean, variance = scheme.mean, scheme.std**2
    elif isinstance(scheme, Uniform):
        mean, variance = (scheme.a + scheme.b) / 2.0, (scheme.b - scheme.a) ** 2 / 12.0
    elif isinstance(scheme, TruncNormal):
        mean, variance = _truncated_normal(scheme.mean, scheme.std, scheme.a, scheme.b)
    else:
        raise TypeError(f"not an element-wise scheme: {scheme.label()}")
    if abs(mean) > 1e-12 * math.sqrt(variance) + 1e-300:
        return None, f"{scheme.label()}: values with non-zero mean ({mean:.4g}): no mean-field theory"
    return variance, None


def weight_variance(scheme: Scheme, activation: Activation, width: int) -> tuple[float | None, str | None]:
    r""":math:`\sigma_w^2 = \mathrm{Var}(W_{ij})\cdot\text{fan\_in}` of a square ``width`` layer, and a note.

    The note says how the theory treats the scheme (orthogonal, sparse) or, with ``None``,
    why it does not apply. Xavier, Kaiming, LeCun and orthogonal with gain g: :math:`g^2`;
    ``default`` (``nn.Linear``'s :math:`U(\pm 1/\sqrt n)`): 1/3; sparse: its std² times width
    times the non-zero fraction.
    """
    from initlab import schemes as S

    if isinstance(scheme, S.Default):
        return 1.0 / 3.0, None
    if isinstance(scheme, (S.XavierUniform, S.XavierNormal, S.LecunNormal)):
        return S.resolve_gain(scheme.gain, activation) ** 2, None
    if isinstance(scheme, S.Orthogonal):
        gain = S.resolve_gain(scheme.gain, activation)
        return gain**2, "orthogonal weights treated as Gaussian with σw² = gain² (exact for the length map)"
    if isinstance(scheme, (S.KaimingNormal, S.KaimingUniform)):
        from torch.nn.init import calculate_gain  # the table kaiming_* itself uses

        a, nonlinearity = scheme._resolved(activation)
        return calculate_gain(nonlinearity, a) ** 2, None  # type: ignore[arg-type]
    if isinstance(scheme, S.Sparse):
        kept = 1.0 - math.ceil(scheme.sparsity * width) / width
        return scheme.std**2 * width * kept, f"sparse weights treated as Gaussian; {1 - kept:.3g} of them zero"
    variance, why = _zero_mean_variance(scheme)
    return (None, why) if variance is None else (variance * width, None)


def sigma_w2(scheme: Scheme, activation: Activation, width: int) -> float | None:
    """:math:`\\sigma_w^2` of ``scheme`` on a square ``width`` layer; None where the theory does not apply."""
    return weight_variance(scheme, activation, width)[0]


def bias_variance(config: Config) -> tuple[float | None, str | None]:
    """:math:`\\sigma_b^2` of the config's biases (0 without bias), or None and why."""
    from initlab.schemes import Default

    if not config.model.bias:
        return 0.0, None
    scheme = config.init.bias
    if isinstance(scheme, Default):  # nn.Linear's U(±1/√fan_in)
        return 1.0 / (3.0 * config.model.width), None
    variance, why = _zero_mean_variance(scheme)
    return variance, None if why is None else f"bias {why}"


def input_second_moment(data: DataConfig) -> float:
    """:math:`E[x^2]` of the input distribution: normal mean² + std², uniform (low² + low·high + high²)/3."""
    if data.distribution == "normal":
        return data.mean**2 + data.std**2
    return (data.low**2 + data.low * data.high + data.high**2) / 3.0


@dataclass(frozen=True)
class Prediction:
    r"""The mean-field prediction for one study (lists: one entry per block; None: undefined).

    Attributes:
        applicable: False where the theory does not apply (``reason`` says why; lists empty).
        q: :math:`q_l`, the pre-activation second moment of block l; :math:`q_0 = \sigma_{w,0}^2
            E[x^2] + \sigma_b^2`, then the length map.
        pre_std: :math:`\sqrt{q_l}`. post_std: :math:`\mathrm{std}\,\varphi(\sqrt{q_l} z)`.
        chi: :math:`\chi_l = \sigma_{w,l}^2 E[\varphi'(\sqrt{q_l} z)^2]`, block l's factor of the
            backward map.
        q_star, chi1, phase, c_star, chi_c, xi_q, xi_c: the fixed point of the bulk layers' map
            from :math:`q_0` (see :class:`PointTheory`).
        finite_width_log_std_drift, finite_width_log_std_spread: Hanin–Rolnick's finite-width
            correction: the drift and the spread across seeds of log std over the depth at the
            edge of chaos of a positively homogeneous activation without bias (ReLU at σw² = 2,
            linear at 1), None elsewhere. Not the predicted log(last/first): away from χ₁ = 1
            that is the mean-field trend of ``pre_std``, which dwarfs this correction.
        depth_over_width: L/n, the finite-width control parameter.
        notes: how the theory read the config (orthogonal, sparse, overrides).
    """

    applicable: bool
    reason: str | None
    q: list[float]
    pre_std: list[float]
    post_std: list[float]
    chi: list[float]
    q_star: float | None
    chi1: float | None
    phase: Phase | None
    c_star: float | None
    chi_c: float | None
    xi_q: float | None
    xi_c: float | None
    sigma_w2: list[float]
    sigma_b2: float
    input_second_moment: float
    finite_width_log_std_drift: float | None
    finite_width_log_std_spread: float | None
    depth_over_width: float
    notes: tuple[str, ...] = ()
    residual: bool = False  # residual blocks (initlab.residual_theory): no fixed point, per-block columns only

    def summary(self) -> dict[str, object]:
        """The scalar figures, for summary.json's ``theory`` key (None where undefined)."""
        out: dict[str, object] = {
            "applicable": self.applicable, "reason": self.reason, "q_star": self.q_star, "chi1": self.chi1,
            "phase": self.phase, "c_star": self.c_star, "chi_c": self.chi_c, "xi_q": self.xi_q, "xi_c": self.xi_c,
            "sigma_b2": self.sigma_b2, "input_second_moment": self.input_second_moment,
            "finite_width_log_std_drift": self.finite_width_log_std_drift,
            "finite_width_log_std_spread": self.finite_width_log_std_spread,
            "depth_over_width": self.depth_over_width, "notes": list(self.notes),
        }
        if self.residual:  # only then: a plain study's summary.json is unchanged
            out["residual"] = True
        return out


def _layer_variances(config: Config) -> tuple[list[float | None], list[str]]:
    model, act = config.model, config.model.activation
    values: list[float | None] = []
    notes: list[str] = []
    for layer in range(model.depth):
        value, note = weight_variance(config.init.scheme_for(layer, model.depth), act, model.width)
        values.append(value)
        if note is not None and (value is None or note not in notes):
            notes.append(note if value is not None else f"block {layer}: {note}")
    return values, notes


def _not_applicable(reason: str, sb2: float, ex2: float, config: Config) -> Prediction:
    return Prediction(False, reason, [], [], [], [], None, None, None, None, None, None, None, [], sb2, ex2,
                      None, None, config.model.depth / config.model.width)


def _homogeneous_kurtosis(e: Elementwise) -> float | None:
    """κ = E[φ⁴]/E[φ²]² − 1 when φ is positively homogeneous (E[φ(√q z)²]/q independent of q), else None."""
    if not _homogeneous(e):
        return None
    second = _expect(e, lambda x: e.phi(x) ** 2, 1.0)
    fourth = float(_expect(e, lambda x: e.phi(x) ** 4, 1.0)[0])
    return fourth / float(second[0]) ** 2 - 1.0


@lru_cache(maxsize=256)
def _point_cached(activation: Activation, sw2: float, sb2: float, q0: float, tol: float) -> PointTheory:
    """:func:`point` once per network: a sweep's seeds (and repeated cells) share it."""
    return point(activation, sw2, sb2, q0, tol)


def _residual(config: Config, e: Elementwise, ex2: float, sw2: list[float], sb2: float, notes: list[str]
              ) -> Prediction:
    """The prediction for residual blocks of an odd activation (:mod:`initlab.residual_theory`):
    per-block columns; no fixed point, phase or depth scales (those describe the plain map)."""
    alpha = config.model.alpha

    def second(q: float) -> float:
        return float(_expect(e, lambda x: e.phi(x) ** 2, q)[0])

    def derivative(q: float) -> float:
        return float(_expect(e, lambda x: e.dphi(x) ** 2, q)[0])

    q, p, chi = residual_theory.recursion(ex2, sw2, sb2, alpha, second, derivative)
    post = residual_theory.post_std(p, residual_theory.input_mean(config.data))
    notes = [*notes, f"residual blocks, α = {alpha:.4g}: p_(l+1) = p_l + α²·E[φ(√q_l z)²] (φ odd: no skip-branch "
             "correlation)"]
    return Prediction(
        applicable=True, reason=None, q=q, pre_std=[math.sqrt(v) for v in q], post_std=post, chi=chi,
        q_star=None, chi1=None, phase=None, c_star=None, chi_c=None, xi_q=None, xi_c=None, sigma_w2=sw2,
        sigma_b2=sb2, input_second_moment=ex2, finite_width_log_std_drift=None, finite_width_log_std_spread=None,
        depth_over_width=config.model.depth / config.model.width, notes=tuple(notes), residual=True,
    )


def predict(config: Config, input_second_moment: float, tol: float = CRITICAL_TOL) -> Prediction:
    """The mean-field prediction for ``config`` whose input has second moment ``input_second_moment``."""
    ex2, model = input_second_moment, config.model
    if config.init.from_ is not None:  # the theory describes random draws, not given weights
        return _not_applicable("the weights are loaded from a file (init.from), not drawn", 0.0, ex2, config)
    sb2, why = bias_variance(config)
    if sb2 is None:
        return _not_applicable(why or "bias", 0.0, ex2, config)
    variances, notes = _layer_variances(config)
    missing = next((n for n, v in zip(notes, variances, strict=False) if v is None), None)
    if any(v is None for v in variances):
        bad = next(i for i, v in enumerate(variances) if v is None)
        reason = missing or f"block {bad}: no mean-field theory"
        return _not_applicable(next((n for n in notes if n.startswith(f"block {bad}:")), reason), sb2, ex2, config)
    sw2 = [float(v) for v in variances if v is not None]
    e = elementwise(model.activation)
    why_not = residual_theory.no_theory(config, e)
    if why_not is not None:
        return _not_applicable(why_not, sb2, ex2, config)
    if model.block == "residual":
        return _residual(config, e, ex2, sw2, sb2, notes)
    if config.init.layers:
        notes.append("per-layer overrides: each block's own σw² in the length map; q* etc. for the bulk")
    layers = trajectory(e, sw2[0] * ex2 + sb2, sw2, sb2)
    bulk, *_ = weight_variance(config.init.weight, model.activation, model.width)
    at = _point_cached(model.activation, bulk if bulk is not None else sw2[-1], sb2, layers.q[0], tol)
    critical = at.phase == "critical" and all(abs(v - sw2[0]) <= tol * sw2[0] for v in sw2)
    kurtosis = _homogeneous_kurtosis(e) if sb2 == 0.0 and critical else None
    drift, spread = finite_width_log_std([model.width] * model.depth, kurtosis) if kurtosis else (None, None)
    return Prediction(
        applicable=True, reason=None, q=layers.q, pre_std=layers.pre_std, post_std=layers.post_std,
        chi=layers.chi, q_star=at.q_star, chi1=at.chi1, phase=at.phase, c_star=at.c_star, chi_c=at.chi_c,
        xi_q=at.xi_q, xi_c=at.xi_c, sigma_w2=sw2, sigma_b2=sb2, input_second_moment=ex2,
        finite_width_log_std_drift=drift, finite_width_log_std_spread=spread,
        depth_over_width=model.depth / model.width, notes=tuple(notes),
    )


__all__ = [
    "CRITICAL_TOL", "LengthFixedPoint", "Phase", "PhaseDiagram", "PointTheory", "Prediction", "Trajectory",
    "bias_variance", "chi1", "chi1_grid", "correlation_fixed_point", "correlation_map", "correlation_slope",
    "critical_sigma_b2", "critical_sigma_w2", "depth_scale", "finite_width_log_std", "gaussian_expectation",
    "input_second_moment", "length_fixed_point", "length_map", "length_map_slope", "length_trajectory",
    "phase_diagram", "phase_of", "point", "post_std", "predict", "sigma_w2", "trajectory", "weight_variance",
]
