r"""The gain an activation needs, by several definitions, and what each does to a deep net's signal.

For an activation :math:`\varphi` and :math:`z \sim N(0, 1)` the definitions are

``torch``
    ``torch.nn.init.calculate_gain`` where PyTorch has a table entry for :math:`\varphi`
    (``Activation.torch_gain()``), else ``None``. Some entries are exact moment
    normalisations (linear 1, ReLU :math:`\sqrt 2`, leaky ReLU :math:`\sqrt{2/(1+a^2)}`),
    others are fixed heuristic constants (tanh 5/3, SELU 3/4).
``second_moment``
    :math:`g = 1/\sqrt{E[\varphi(z)^2]}`, the gain that keeps the pre-activation variance of a
    bias-free layer with weight variance :math:`g^2/\text{fan\_in}` equal to 1 when its input
    pre-activations have variance 1. Computed by quadrature (see below) to ~1e-13 relative.
``std_ratio``
    The classic tutorial's empirical :math:`\mathrm{std}(x)/\mathrm{std}(\varphi(x))` over ``N``
    samples :math:`x \sim N(0,1)`; it estimates :math:`1/\sqrt{\mathrm{Var}\,\varphi(z)}`, which
    differs from ``second_moment`` when :math:`E[\varphi(z)] \ne 0`. Returned with a
    delta-method standard error (:func:`std_ratio_gain`).

**Quadrature.** Gaussian expectations :math:`E[f(z)] = \int f(x)\,n(x)\,dx` with the standard
normal density :math:`n` are computed with composite Gauss–Legendre rules on
:math:`[-L, 0]` and :math:`[0, L]` (``L = 12``, panels of width 1/2 with 20 nodes each) against
:math:`n(x)`. Splitting at 0 makes the integrand smooth on every panel for all registered
activations, whose only kink (ReLU, leaky ReLU, ELU with alpha != 1, SELU) is at 0, where
plain Gauss–Hermite converges only algebraically. The truncated tail mass is
:math:`2\,\bar\Phi(12) \approx 4\cdot10^{-33}`.

**Variance map.** With weight variance :math:`g^2/\text{fan\_in}` and no bias, the
pre-activation variance of layer :math:`l+1` in the wide-network (mean-field) limit is

.. math:: q_{l+1} = V(q_l) = g^2\,E\big[\varphi(\sqrt{q_l}\,z)^2\big].

:func:`variance_map_fate` says where :math:`q_l` goes from :math:`q_0`: a stable fixed point
:math:`q^*`, a marginal one (:math:`V'(q^*) = 1`, e.g. every :math:`q` for linear with
:math:`g = 1` and ReLU with :math:`g = \sqrt 2`), an unstable one (start sits on it, but any
perturbation grows), collapse to 0 (vanishing) or growth without bound (explosion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from initlab.activations import Activation
from initlab.quadrature import QUADRATURE_CUTOFF, bracketed_root, normal_rule

GAIN_DEFINITIONS: tuple[str, ...] = ("torch", "second_moment", "std_ratio")
#: Names :func:`resolve_gain` accepts: ``auto`` plus every definition.
GAIN_CHOICES: tuple[str, ...] = ("auto", *GAIN_DEFINITIONS)

FateKind = Literal["fixed_point", "marginal", "unstable", "vanishing", "explosion"]

#: Relative tolerance of the variance map's fate (see :attr:`Fate.iterations`), and the most
#: layers it is iterated for.
FATE_TOL = 1e-9
FATE_MAX_ITERATIONS = 1_000
#: |V'(q*) - 1| at or below this counts as a marginal (neutral) fixed point.
MARGINAL_SLOPE_TOL = 1e-6
#: The downward search for a fixed point stops at q0 * 2**-_DOWN_OCTAVES (~1e-12 q0): below
#: that V(q)/q - 1 is too close to rounding error to tell a fixed point from a power-law collapse.
_DOWN_OCTAVES = 40
#: The upward search stops at q0 * 2**_UP_OCTAVES (~1e30 q0).
_UP_OCTAVES = 100

Array = npt.NDArray[np.float64]
TensorFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- quadrature


@lru_cache(maxsize=1)
def _normal_rule() -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights ``(x, w)`` with ``sum(w * f(x)) ≈ E[f(z)]``, z ~ N(0, 1), split at 0
    (:func:`initlab.quadrature.normal_rule`, as tensors)."""
    nodes, weights = normal_rule()
    return torch.from_numpy(nodes.copy()), torch.from_numpy(weights.copy())


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread within the block (the previous count restored after).

    For the elementwise work here: the quadrature's small tensors (at most 100 scales x 960
    nodes, dozens of them in a row for a fate) and the std ratio's elementwise passes, which
    are bound by memory. Split across threads they gain little on an idle machine and cost
    several times more on a busy one (measured: 90 ms against 5 ms for the std ratio's
    deviations with 2 threads on 2 busy cores). The bits do not change: elementwise ops
    compute every element alike on any number of threads, and ``@ w`` is one dot product per
    scale. Reductions over many elements (``std``) stay outside: their split sets their bits."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _moments(fn: TensorFn, scales: Array) -> tuple[Array, Array]:
    r""":math:`E[\varphi(s z)]` and :math:`E[\varphi(s z)^2]` for every scale ``s`` in ``scales``."""
    x, w = _normal_rule()
    s = torch.from_numpy(np.asarray(scales, dtype=np.float64))
    with torch.no_grad(), _one_thread():
        y = fn(s[:, None] * x[None, :])
        mean = (y @ w).numpy()
        second = ((y * y) @ w).numpy()
    return mean, second


def gaussian_moments(activation: Activation, q: float = 1.0) -> tuple[float, float]:
    r"""Mean and second moment of :math:`\varphi(\sqrt q\, z)`, z ~ N(0, 1), by quadrature.

    Returns :math:`(E[\varphi(\sqrt q z)],\ E[\varphi(\sqrt q z)^2])`, accurate to ~1e-13 relative.
    """
    if not (math.isfinite(q) and q >= 0.0):
        raise ValueError(f"variance q must be finite and >= 0, got {q!r}")
    mean, second = _moments(activation.function(), np.array([math.sqrt(q)]))
    return float(mean[0]), float(second[0])


def is_odd(activation: Activation) -> bool:
    r"""Whether :math:`\varphi(-x) = -\varphi(x)` (checked numerically on [-8, 8])."""
    fn = activation.function()
    x = torch.linspace(0.0, 8.0, 321, dtype=torch.float64)
    with torch.no_grad(), _one_thread():
        pos, neg = fn(x), fn(-x)
    scale = torch.clamp(pos.abs(), min=1.0)
    return bool(((pos + neg).abs() <= 1e-12 * scale).all())


# --------------------------------------------------------------------------- the gains


def second_moment_gain(activation: Activation) -> float:
    r"""The gain :math:`g = 1/\sqrt{E[\varphi(z)^2]}`, z ~ N(0, 1), by split Gauss–Legendre quadrature.

    Exact values: linear 1, ReLU :math:`\sqrt 2`, leaky ReLU(a) :math:`\sqrt{2/(1+a^2)}`, SELU 1
    (to the precision of its published constants).
    """
    _, second = gaussian_moments(activation)
    if not second > 0.0:
        raise ValueError(f"{activation.label()}: E[phi(z)^2] = {second!r}, no second-moment gain exists")
    return 1.0 / math.sqrt(second)


def std_ratio_gain(activation: Activation, samples: int = 1_000_000, seed: int = 0) -> tuple[float, float]:
    r"""The tutorial's empirical gain :math:`R = \mathrm{std}(x)/\mathrm{std}(\varphi(x))` and its std error.

    ``x`` holds ``samples`` float64 draws of N(0, 1) from ``torch.Generator().manual_seed(seed)``;
    both stds are ``torch.std`` (Bessel-corrected, which cancels in the ratio). ``R`` estimates
    :math:`1/\sqrt{\mathrm{Var}\,\varphi(z)}`.

    Standard error (delta method): to first order a sample variance is
    :math:`s^2 \approx \sigma^2 + \frac1N\sum_i[(v_i-\mu)^2 - \sigma^2]`, so

    .. math:: \log R = \tfrac12(\log s_x^2 - \log s_y^2) \approx \text{const} + \frac{1}{2N}\sum_i u_i,
              \qquad u_i = \frac{(x_i-\bar x)^2}{s_x^2} - \frac{(y_i-\bar y)^2}{s_y^2},

    with :math:`y_i = \varphi(x_i)`. Hence :math:`\mathrm{SE}(R) = R\,\mathrm{sd}(u)/(2\sqrt N)`,
    which accounts for the (strong) correlation between :math:`x` and :math:`\varphi(x)`; it is 0
    for the identity, where the ratio is exactly 1.
    """
    if samples < 3:
        raise ValueError(f"std_ratio needs at least 3 samples, got {samples}")
    check_std_ratio(samples, seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, generator=generator, dtype=torch.float64)
    with torch.no_grad(), _one_thread():  # elementwise (see _one_thread)
        y = activation.function()(x)
    sx, sy = x.std(), y.std()  # reductions stay on torch's threads: their bits depend on the split
    if not float(sy) > 0.0:
        raise ValueError(f"{activation.label()}: phi(x) has zero spread, the std ratio is undefined")
    ratio = float(sx / sy)
    mx, my = x.mean(), y.mean()
    with _one_thread():  # elementwise, in place: two temporaries where the plain expression makes six
        u = (x - mx).pow_(2).div_(sx**2).sub_((y - my).pow_(2).div_(sy**2))
    se = ratio * float(u.std()) / (2.0 * math.sqrt(samples))
    return ratio, se


#: Float64 arrays of ``samples`` values alive at once in :func:`std_ratio_gain`: x, phi(x) and the
#: temporaries of u. Measured: peak resident memory grows by 5.00 x 8 bytes per sample for every
#: registered activation (2e7 samples).
STD_RATIO_ARRAYS = 5


def check_std_ratio(samples: int, seed: int) -> None:
    """Refuse, before drawing, a seed torch cannot take or more samples than free memory holds."""
    from initlab.devices import available_bytes, gib
    from initlab.errors import InitlabError
    from initlab.limits import check_seeds

    check_seeds(seed, 1, "std ratio")
    need = STD_RATIO_ARRAYS * 8 * samples
    free = available_bytes(torch.device("cpu"))
    if free is not None and need > free:
        raise InitlabError(
            f"std ratio over {samples:,} samples needs about {gib(need)} of memory ({STD_RATIO_ARRAYS} float64 "
            f"arrays of that length) but this machine has {gib(free)} available; use fewer samples (--samples)"
        )


def resolve_gain(
    activation: Activation, name: str = "auto", *, samples: int = 1_000_000, seed: int = 0
) -> float:
    """The number to use as init gain under definition ``name``.

    ``auto`` is PyTorch's ``calculate_gain`` where it defines one, else ``second_moment``;
    ``torch``, ``second_moment`` and ``std_ratio`` are the definitions of this module
    (``samples`` and ``seed`` only matter for ``std_ratio``).

    Raises:
        ValueError: for an unknown name, or ``torch`` for an activation PyTorch has no gain for.
    """
    if name == "auto":
        torch_gain = activation.torch_gain()
        return torch_gain if torch_gain is not None else second_moment_gain(activation)
    if name == "torch":
        torch_gain = activation.torch_gain()
        if torch_gain is None:
            raise ValueError(
                f"torch.nn.init.calculate_gain defines no gain for {activation.label()}; "
                "use 'auto', 'second_moment' or 'std_ratio'"
            )
        return torch_gain
    if name == "second_moment":
        return second_moment_gain(activation)
    if name == "std_ratio":
        return std_ratio_gain(activation, samples=samples, seed=seed)[0]
    raise ValueError(f"unknown gain definition {name!r}; valid: {', '.join(GAIN_CHOICES)}")


# --------------------------------------------------------------------------- variance map


def variance_map(activation: Activation, gain: float, q: float) -> float:
    r""":math:`V(q) = g^2\,E[\varphi(\sqrt q\,z)^2]`, the next layer's pre-activation variance."""
    return gain * gain * gaussian_moments(activation, q)[1]


@dataclass(frozen=True)
class Fate:
    r"""Where the variance map :math:`q_{l+1} = g^2 E[\varphi(\sqrt{q_l} z)^2]` takes :math:`q_0`.

    Attributes:
        kind: ``fixed_point`` (stable, :math:`V'(q^*) < 1`), ``marginal`` (:math:`V'(q^*) = 1`
            within ``MARGINAL_SLOPE_TOL``: neither pulled in nor pushed out), ``unstable``
            (:math:`q_0` is itself a fixed point with :math:`V'(q_0) > 1`: in exact arithmetic
            q stays, any perturbation grows), ``vanishing`` (q → 0) or ``explosion`` (q → ∞).
        gain: the gain g.
        q0: the starting variance.
        q: the fixed point :math:`q^*`, None for vanishing and explosion.
        slope: :math:`V'(q^*)`, None for vanishing and explosion; its log sets the depth
            scale :math:`-1/\log V'(q^*)` of the approach to a stable fixed point.
        post_std: :math:`\mathrm{std}\,\varphi(\sqrt{q^*} z)`, the post-activation spread at the
            fixed point, None for vanishing and explosion.
        iterations: layers (map applications) until q is within ``tol`` (relative) of
            :math:`q^*`, or has fallen below ``tol * q0`` (vanishing) or risen above
            ``q0 / tol`` (explosion); 0 when :math:`q_0` is the fixed point; None when
            ``max_iterations`` layers were not enough (slow, e.g. power-law, approach).
    """

    kind: FateKind
    gain: float
    q0: float
    q: float | None
    slope: float | None
    post_std: float | None
    iterations: int | None

    @property
    def stable(self) -> bool:
        """True when the signal variance neither vanishes nor explodes nor runs away."""
        return self.kind in ("fixed_point", "marginal")

    def describe(self) -> str:
        """A short human summary, e.g. ``fixed point q*=1.395 (slope 0.66, 31 layers)``."""
        depth = "slow" if self.iterations is None else f"{self.iterations} layers"
        if self.kind in ("vanishing", "explosion"):
            return f"{self.kind} ({depth})"
        label = {"fixed_point": "fixed point", "marginal": "marginal", "unstable": "unstable fixed point"}
        return f"{label[self.kind]} q*={self.q:.4g} (slope {self.slope:.4g}, {depth})"


def variance_map_fate(
    activation: Activation,
    gain: float,
    q0: float = 1.0,
    *,
    tol: float = FATE_TOL,
    max_iterations: int = FATE_MAX_ITERATIONS,
) -> Fate:
    r"""Classify the iteration :math:`q_{l+1} = V(q_l) = g^2 E[\varphi(\sqrt{q_l} z)^2]` from ``q0``.

    The fate is found structurally rather than by watching the iterates, because collapse can
    be a slow power law (tanh at g = 1: :math:`V(q) = q - 2q^2 + O(q^3)`, so :math:`q_l \approx
    1/(2l)`) that no step-size tolerance distinguishes from convergence. For increasing
    :math:`V` (true for every registered activation: :math:`\varphi(x)^2 + \varphi(-x)^2` grows
    with :math:`x \ge 0`) the iterates move monotonically toward the nearest fixed point on the
    side :math:`V(q_0) - q_0` points to, so:

    1. if :math:`|V(q_0) - q_0| \le \text{tol}\cdot q_0`, :math:`q_0` is the fixed point;
    2. if :math:`V(q_0) < q_0`, scan :math:`q = q_0 2^{-k}` (k = 1..40) for the first
       :math:`V(q) \ge q`; found: the fixed point lies in that octave (refined by
       multisection to ``tol``), else q → 0 (*vanishing*). The last octaves measure the
       map's slope at 0, :math:`\lim V(q)/q` (:math:`g^2\varphi'(0)^2` for smooth
       :math:`\varphi` with :math:`\varphi(0) = 0`); a slope of at most 1 there means collapse,
       geometric if below 1 and power-law if exactly 1. Fixed points below ~1e-12 q0 are
       reported as vanishing;
    3. if :math:`V(q_0) > q_0`, scan :math:`q = q_0 2^{k}` (k = 1..100) for the first
       :math:`V(q) \le q`; found: fixed point, else *explosion* (beyond ~1e30 q0).

    A fixed point is then ``marginal`` when :math:`|V'(q^*) - 1| \le` ``MARGINAL_SLOPE_TOL``
    (linear at g = 1, ReLU at :math:`\sqrt 2`: every q is fixed), ``unstable`` when
    :math:`V'(q^*) > 1` (only possible for :math:`q^* = q_0`), else a stable ``fixed_point``.
    Finally the map is iterated (at most ``max_iterations`` times) to count the layers it
    takes to settle, see :attr:`Fate.iterations`.
    """
    if not (math.isfinite(gain) and math.isfinite(q0) and q0 > 0.0):
        raise ValueError(f"need a finite gain and a finite q0 > 0, got gain={gain!r}, q0={q0!r}")
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    fn = activation.function()
    g2 = gain * gain

    def vmap(qs: Array) -> Array:
        return g2 * _moments(fn, np.sqrt(qs))[1]

    def excess(qs: Array) -> Array:
        return vmap(qs) - qs

    v0 = float(vmap(np.array([q0]))[0])
    q_star: float | None
    if abs(v0 - q0) <= tol * q0:
        q_star = q0
    elif v0 < q0:
        grid = q0 * 2.0 ** -np.arange(1, _DOWN_OCTAVES + 1, dtype=np.float64)
        hits = np.nonzero(vmap(grid) >= grid)[0]
        if hits.size:
            k = int(hits[0])
            upper = q0 if k == 0 else float(grid[k - 1])
            q_star = bracketed_root(excess, float(grid[k]), upper, tol)
        else:
            q_star = None
    else:
        grid = q0 * 2.0 ** np.arange(1, _UP_OCTAVES + 1, dtype=np.float64)
        hits = np.nonzero(vmap(grid) <= grid)[0]  # NaN/inf values count as no fixed point
        if hits.size:
            k = int(hits[0])
            lower = q0 if k == 0 else float(grid[k - 1])
            q_star = bracketed_root(excess, lower, float(grid[k]), tol)
        else:
            q_star = None

    kind: FateKind
    if q_star is None:
        kind = "vanishing" if v0 < q0 else "explosion"
        iterations = _settle(vmap, q0, kind, None, tol, max_iterations)
        return Fate(kind, gain, q0, None, None, None, iterations)

    step = 1e-5
    ends = vmap(np.array([q_star * (1.0 - step), q_star * (1.0 + step)]))
    slope = float((ends[1] - ends[0]) / (2.0 * step * q_star))
    if abs(slope - 1.0) <= MARGINAL_SLOPE_TOL:
        kind = "marginal"
    elif slope > 1.0:
        kind = "unstable"
    else:
        kind = "fixed_point"
    mean, second = _moments(fn, np.array([math.sqrt(q_star)]))
    post_std = math.sqrt(max(float(second[0] - mean[0] ** 2), 0.0))
    iterations = _settle(vmap, q0, kind, q_star, tol, max_iterations)
    return Fate(kind, gain, q0, q_star, slope, post_std, iterations)


def _settle(
    vmap: Callable[[Array], Array], q0: float, kind: FateKind, q_star: float | None, tol: float, limit: int
) -> int | None:
    """Layers until the iterate is within ``tol`` of ``q_star``, below ``tol*q0`` or above
    ``q0/tol`` (by ``kind``); None if more than ``limit`` are needed."""
    q = q0
    for n in range(limit + 1):
        if q_star is not None and abs(q - q_star) <= tol * q_star:
            return n
        if (kind == "vanishing" and q <= tol * q0) or (kind == "explosion" and not q < q0 / tol):
            return n
        if n < limit:
            q = float(vmap(np.array([q]))[0])
    return None


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class GainReport:
    r"""Every gain definition for one activation, and the variance map's fate under each.

    Attributes:
        activation: the activation's label, e.g. ``leaky_relu(negative_slope=0.2)``.
        torch: ``calculate_gain``'s value, or None where PyTorch defines none.
        second_moment: :math:`1/\sqrt{E[\varphi(z)^2]}`.
        std_ratio: the empirical :math:`\mathrm{std}(x)/\mathrm{std}(\varphi(x))`.
        std_ratio_se: its standard error.
        std_ratio_exact: the value it estimates, :math:`1/\sqrt{\mathrm{Var}\,\varphi(z)}`
            (quadrature).
        mean: :math:`E[\varphi(z)]`.
        odd: whether :math:`\varphi(-x) = -\varphi(x)`.
        samples, seed: the std-ratio sample size and seed.
        fates: :class:`Fate` from ``q0`` per definition name (``torch`` only where defined).
        explanation: one sentence on why the definitions differ for this activation.
    """

    activation: str
    torch: float | None
    second_moment: float
    std_ratio: float
    std_ratio_se: float
    std_ratio_exact: float
    mean: float
    odd: bool
    samples: int
    seed: int
    fates: Mapping[str, Fate]
    explanation: str

    def gain(self, name: str) -> float | None:
        """The gain under definition ``name`` (``auto`` included), None for an undefined ``torch``."""
        if name == "auto":
            return self.torch if self.torch is not None else self.second_moment
        if name not in GAIN_DEFINITIONS:
            raise ValueError(f"unknown gain definition {name!r}; valid: {', '.join(GAIN_CHOICES)}")
        value: float | None = getattr(self, name)
        return value


def _explain(
    label: str, torch_gain: float | None, second: float, exact_std: float, mean: float, odd: bool
) -> str:
    """One sentence on why the gain definitions differ, derived from the activation's properties."""
    if torch_gain is None:
        first = (
            f"PyTorch's calculate_gain has no entry for {label}, so 'auto' uses the second-moment "
            f"gain 1/√E[φ(z)²] = {second:.4g}"
        )
    elif math.isclose(torch_gain, second, rel_tol=1e-6):
        first = f"for {label} calculate_gain's {torch_gain:.4g} is exactly the second-moment gain 1/√E[φ(z)²]"
    else:
        first = (
            f"for {label} calculate_gain's {torch_gain:.4g} is a fixed heuristic from PyTorch's table, "
            f"not the second-moment normalisation 1/√E[φ(z)²] = {second:.4g}"
        )
    if odd:
        second_part = (
            f"{label} is odd, so E[φ(z)] = 0 and the std ratio estimates that same "
            f"{second:.4g} up to sampling noise"
        )
    elif abs(mean) <= 1e-6 / second:
        second_part = (
            f"{label} is not odd but has E[φ(z)] ≈ 0, so the std ratio still estimates "
            f"{second:.4g} up to sampling noise"
        )
    else:
        second_part = (
            f"{label} is not odd and E[φ(z)] = {mean:.3g}, so the std ratio, which centres φ, "
            f"estimates the larger 1/√Var φ(z) = {exact_std:.4g}"
        )
    sentence = f"{first}; {second_part}."
    return sentence[0].upper() + sentence[1:]


def gain_report(
    activation: Activation,
    samples: int = 1_000_000,
    seed: int = 0,
    q0: float = 1.0,
    *,
    max_iterations: int = FATE_MAX_ITERATIONS,
) -> GainReport:
    """All gain definitions for ``activation``, their variance-map fates from ``q0``, and why they differ."""
    torch_gain = activation.torch_gain()
    mean, second = gaussian_moments(activation)
    if not (math.isfinite(second) and math.isfinite(mean)):
        raise ValueError(f"{activation.label()}: E[phi(z)^2] = {second!r} is not finite")
    if not second > 0.0:
        raise ValueError(f"{activation.label()}: E[phi(z)^2] = {second!r}, no second-moment gain exists")
    second_gain = 1.0 / math.sqrt(second)
    variance = second - mean * mean
    exact_std = 1.0 / math.sqrt(variance) if variance > 0.0 else math.inf
    ratio, se = std_ratio_gain(activation, samples=samples, seed=seed)
    odd = is_odd(activation)
    gains = {"torch": torch_gain, "second_moment": second_gain, "std_ratio": ratio}
    fates = {
        name: variance_map_fate(activation, value, q0, max_iterations=max_iterations)
        for name, value in gains.items()
        if value is not None
    }
    label = activation.label()
    return GainReport(
        activation=label,
        torch=torch_gain,
        second_moment=second_gain,
        std_ratio=ratio,
        std_ratio_se=se,
        std_ratio_exact=exact_std,
        mean=mean,
        odd=odd,
        samples=samples,
        seed=seed,
        fates=fates,
        explanation=_explain(label, torch_gain, second_gain, exact_std, mean, odd),
    )


__all__ = [
    "GAIN_CHOICES",
    "GAIN_DEFINITIONS",
    "MARGINAL_SLOPE_TOL",
    "QUADRATURE_CUTOFF",
    "Fate",
    "FateKind",
    "GainReport",
    "gain_report",
    "gaussian_moments",
    "is_odd",
    "resolve_gain",
    "second_moment_gain",
    "std_ratio_gain",
    "variance_map",
    "variance_map_fate",
]
