"""The regime verdict: does the signal explode, vanish, saturate or stay stable through the depth?

Judged from the std of every block's output, *against the input's std* (so one layer
counts), with the pre-activations' non-finite counts, and the tanh/sigmoid saturation
and ReLU dead-unit fractions. Let ``z`` be log10 of the std, with the input as point 0,
``M = z_last - z_input`` the end-to-end change in decades, and the *tail* the last half
of the trace:

1. A non-finite value in any pre-activation or output: **explosion** (``nonfinite``),
   even where a bounded activation hides it (tanh maps ±inf to ±1).
2. An output std of exactly 0 (underflow, or every unit dead): **vanishing**.
3. ``|M| >= settled_orders`` (decades): **explosion** or **vanishing** by its sign, whatever
   the shape.
4. A smaller change beyond ``orders`` decades, or beyond ``explode_ratio``/``vanish_ratio``,
   counts only while the signal still moves in its direction. That *shape* comes from the
   noise-free mean-field map (:func:`theory_shape`) where the theory applies: a non-zero fixed
   point q* (selu at torch's gain 3/4: post std 0.2) settles, **stable** (only while
   depth/width is below ``finite_width``: beyond, finite width moves the signal off it);
   q* = 0 (tanh at sigma_w^2 = 1: std ~ l^-1/2) still falls and unbounded q still rises
   (at any width, where the measurement went the same way). Elsewhere it is measured,
   directionally: the tail must change by ``settle`` decades *the way M went* and, below
   ``orders``, with a group-means t (:func:`group_t`) beyond ``trend_t``; a tail of fewer
   than 3 steps leaves the magnitude alone to decide (``orders``). A measured flat tail
   *levels off*; only the theory can say it reached a fixed point.
5. Otherwise, a bounded activation with at least ``saturation`` of its outputs at the
   range's edges over the tail is **saturated**: the std looks healthy but the units
   pass no gradient back (tanh with N(0, 1) weights: pre-activation std 16, 90 % saturated; the
   other units, with φ′ ≈ 1 and huge weights, still make the gradient explode: the backward
   verdict says so).
   Else **stable**.

The regime is always the *measured* network's: the theory never changes the magnitude M,
only whether the tail is read as settled or still moving.

Dead ReLU units (zero for the whole batch) and a large depth/width (where Hanin &
Rolnick 2018 predict a seed-to-seed spread of the log-std of about sqrt(5 L/n)/2 and a
drift of about -5 L/(4 n), in nats, for ReLU nets) are noted in the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from initlab.config import VerdictConfig
    from initlab.theory import Prediction

Regime = Literal["explosion", "vanishing", "saturated", "stable"]
Signal = Literal["forward", "backward"]
REGIMES: tuple[Regime, ...] = ("explosion", "vanishing", "saturated", "stable")


@dataclass(frozen=True)
class Trace:
    """What the verdict reads, one entry per block (None where a value is undefined)."""

    std: Sequence[float | None]  # block outputs
    nonfinite: Sequence[float]  # block outputs' non-finite counts
    input_std: float | None = None  # the reference; None: judged against layer 0
    pre_nonfinite: Sequence[float] = ()
    saturated: Sequence[float | None] = ()  # tanh/sigmoid: fraction at the range's edges
    dead: Sequence[float | None] = ()  # ReLU family: fraction of units zero for the whole batch
    width: int | None = None
    layers: Sequence[int] = ()  # the block of every entry; empty: 0, 1, 2, ... (backward: L-1 down to 0)
    signal: Signal = "forward"
    residual: bool = False  # a residual stream: growth like a power of the depth is stable (POLYNOMIAL_POWER)


@dataclass(frozen=True)
class Verdict:
    """The regime and the figures that justify it (None where a figure is undefined)."""

    regime: Regime
    nonfinite: bool
    first_nonfinite_layer: int | None
    nonfinite_site: Literal["pre", "output"] | None  # where the first non-finite value appeared
    first_zero_layer: int | None
    input_std: float | None  # the reference of ratio
    first_std: float | None
    last_std: float | None  # std of last_finite_layer
    last_finite_layer: int | None  # the last layer before the first non-finite one (else the last)
    ratio: float | None  # last_std / input_std (/ first_std without an input std)
    decades: float | None  # log10(ratio)
    growth_per_layer: float | None  # ratio ** (1 / steps): geometric mean of the per-layer change
    tail_start: int | None  # first layer of the tail window
    tail_change: float | None  # decades over the tail (least-squares slope x its length)
    trend_t: float | None  # group-means t of the tail's mean step; None: too few steps or no noise
    saturated_fraction: float | None  # mean over the tail
    dead_fraction: float | None  # mean over the tail
    depth_over_width: float | None
    reason: str
    notes: list[str] = field(default_factory=list)
    theory_regime: Regime | None = None  # the same rules on the mean-field trace
    theory_ratio: float | None = None  # predicted last-layer std / input std
    theory_agrees: bool | None = None  # None where the theory does not apply
    shape: Literal["theory", "measured"] | None = None  # what decided whether the tail still moves

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- trend statistics


def trend_groups(steps: int) -> int:
    """How many consecutive groups :func:`group_t` splits ``steps`` steps into: 3 to 8, about 4 steps each."""
    return min(8, max(3, steps // 4))


def group_t(steps: Sequence[float]) -> tuple[float, int] | None:
    r"""t of the mean of ``steps`` by group means (batch means; Ibragimov & Müller 2010), and its dof.

    The steps are cut into :math:`g` = :func:`trend_groups` consecutive groups of (nearly) equal
    length; :math:`t = \bar m \sqrt g / s_m` over the group means :math:`m_k`, referred to
    Student's t with :math:`g - 1` degrees of freedom. Group means of weakly dependent steps are
    nearly independent and normal, so the level holds in short tails and under serial
    correlation where a Newey-West error, estimated from a handful of steps, is too small (README:
    measured false-positive rates). None with fewer than 3 steps, or when the group means do not
    vary (no noise to test against).
    """
    n = len(steps)
    if n < 3:
        return None
    g = trend_groups(n)
    edges = [round(k * n / g) for k in range(g + 1)]
    means = [math.fsum(steps[a:b]) / (b - a) for a, b in itertools.pairwise(edges)]
    mean = math.fsum(means) / g
    var = math.fsum((m - mean) ** 2 for m in means) / (g - 1)
    if not var > 1e-30 * (mean * mean + 1e-300):
        return None
    return mean / math.sqrt(var / g), g - 1


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| >= t) for Student's t with ``df`` degrees of freedom (exact finite sums, A&S 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term, total = math.cos(theta), 0.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        inside = theta + s * total if df > 1 else theta
        return max(0.0, 1.0 - 2.0 / math.pi * inside)
    term, total = 1.0, 0.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return max(0.0, 1.0 - s * total)


def critical_t(z: float, df: int) -> float:
    """Student's t quantile with ``df`` degrees of freedom at the two-sided tail probability of N(0, 1) beyond ``z``.

    Exact: the t distribution's finite-sum tail (Abramowitz & Stegun 26.7.3-4) inverted by
    bisection to float precision; beyond 2000 dof the Cornish-Fisher expansion (A&S 26.7.5).
    """
    v = max(df, 1)
    if v > 2000:
        return z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v * v)
    alpha = math.erfc(z / math.sqrt(2))
    lo, hi = z, z
    while _t_two_sided(hi, v) > alpha:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided(mid, v) > alpha else (lo, mid)
        if hi - lo <= 4e-16 * hi:
            break
    return (lo + hi) / 2


def least_squares_change(points: Sequence[float]) -> float:
    """Change over ``points`` by their least-squares line: slope x (len - 1)."""
    n = len(points)
    if n < 2:
        return 0.0
    centre = (n - 1) / 2
    mean = math.fsum(points) / n
    sxy = math.fsum((i - centre) * (p - mean) for i, p in enumerate(points))
    sxx = math.fsum((i - centre) ** 2 for i in range(n))
    return sxy / sxx * (n - 1)


#: The fewest steps the tail window holds, where the trace has them: a trend needs a few.
MIN_TAIL_STEPS = 8


def tail(points: Sequence[float]) -> int:
    """Index where the tail starts: the last half of ``points``, but at least ``MIN_TAIL_STEPS`` steps."""
    return max(0, min(len(points) // 2, len(points) - 1 - MIN_TAIL_STEPS))


# ---------------------------------------------------------------- the verdict


def _first_nonfinite(trace: Trace) -> tuple[int | None, Literal["pre", "output"] | None]:
    """The first entry with a non-finite pre-activation or output (an undefined std counts), in the
    order the signal reaches them: a block's pre-activation first going forward, its output going back."""
    for i, n in enumerate(trace.nonfinite):
        pre = i < len(trace.pre_nonfinite) and trace.pre_nonfinite[i] > 0
        output = n > 0 or trace.std[i] is None
        if pre and (trace.signal == "forward" or not output):
            return i, "pre"
        if output:
            return i, "output"
    return None, None


def _mean_over(values: Sequence[float | None], start: int, stop: int) -> float | None:
    chosen = [v for v in values[start:stop] if v is not None and math.isfinite(v)]
    return math.fsum(chosen) / len(chosen) if chosen else None


def _figures(trace: Trace) -> dict[str, Any]:
    """Every figure of the verdict, from the finite prefix of the trace."""
    bad, site = _first_nonfinite(trace)
    finite = [float(s) for s in trace.std[: len(trace.nonfinite) if bad is None else bad] if s is not None]
    zero = next((i for i, s in enumerate(finite) if s == 0), None)
    has_input = trace.input_std is not None and trace.input_std > 0 and math.isfinite(trace.input_std)
    reference = trace.input_std if has_input else (finite[0] if finite else None)
    out: dict[str, Any] = {
        "nonfinite": bad is not None, "first_nonfinite_layer": bad, "nonfinite_site": site,
        "first_zero_layer": zero, "input_std": trace.input_std if has_input else None,
        "first_std": finite[0] if finite else None, "last_std": finite[-1] if finite else None,
        "last_finite_layer": len(finite) - 1 if finite else None,
        "depth_over_width": len(trace.std) / trace.width if trace.width else None,
    } | dict.fromkeys(["ratio", "decades", "growth_per_layer", "tail_start", "tail_change", "trend_t",
                       "saturated_fraction", "dead_fraction"])
    if not finite or not reference:
        return out
    steps = len(finite) - (0 if has_input else 1)
    ratio = finite[-1] / reference
    out |= {"ratio": ratio, "growth_per_layer": ratio ** (1 / steps) if steps else None}
    if zero is not None:
        return out
    points = ([math.log10(reference)] if has_input else []) + [math.log10(s) for s in finite]
    start = tail(points)
    layer = start + (0 if has_input else 1)  # the layer the tail's first step goes into
    tail_steps = [b - a for a, b in zip(points[start:], points[start + 1:], strict=False)]
    out |= {"decades": points[-1] - points[0], "tail_start": min(layer, len(finite) - 1),
            "tail_change": least_squares_change(points[start:]), "trend_t": _t_only(group_t(tail_steps)),
            "saturated_fraction": _mean_over(trace.saturated, layer, len(finite)),
            "dead_fraction": _mean_over(trace.dead, layer, len(finite))}
    return out


def _t_only(found: tuple[float, int] | None) -> float | None:
    return None if found is None else found[0]


Shape = Literal["settles", "falls", "rises"]
Source = Literal["theory", "measured"]


def theory_shape(theory: Mapping[str, Any] | None, depth_over_width: float | None,
                 thresholds: VerdictConfig) -> Shape | None:
    """Where the noise-free length map takes the signal: to a non-zero fixed point, to 0, or without bound.

    ``theory`` is a prediction's summary (:meth:`initlab.theory.Prediction.summary`); its q* is
    the fixed point the map reaches from q_0 (0: collapse, None: no bound). None where the
    theory does not apply. Where finite width drives the outcome (depth/width >= ``finite_width``)
    a predicted fixed point no longer holds the signal (Hanin & Rolnick's drift moves it off), so
    "settles" is dropped there; a predicted rise or fall still counts, and only where the
    measurement went the same way (see :func:`_moving`).
    """
    if theory is None or not theory.get("applicable"):
        return None
    q_star = theory.get("q_star")
    shape: Shape = "rises" if q_star is None else "falls" if q_star == 0 else "settles"
    wide = depth_over_width is None or depth_over_width < thresholds.finite_width
    return shape if wide or shape != "settles" else None


@dataclass(frozen=True)
class TheoryShape:
    """What the noise-free theory says the tail does, and the words that say why."""

    shape: Shape
    why: str


def forward_shape(theory: Mapping[str, Any] | None, depth_over_width: float | None,
                  thresholds: VerdictConfig) -> TheoryShape | None:
    """:func:`theory_shape` with its reason: the fixed point q* of the length map."""
    shape = theory_shape(theory, depth_over_width, thresholds)
    if shape is None or theory is None:
        return None
    if shape == "settles":
        return TheoryShape(shape, f"the mean-field map settles to its fixed point q* = {theory['q_star']:.3g}")
    return TheoryShape(shape, "mean-field: q* = 0" if shape == "falls" else "mean-field: no fixed point above q_0")


def predicted_shape(predicted: Trace, depth_over_width: float | None, thresholds: VerdictConfig
                    ) -> TheoryShape | None:
    """What a noise-free predicted trace (same entries as the measured one) does over the tail window.

    For the backward signal, whose per-layer factors chi_l are known in closed form
    (:mod:`initlab.gradient_theory`): it rises or falls where the prediction changes by at least
    ``settle`` decades over the tail, else it is flat there ("settles"; dropped where finite
    width drives the outcome, as for the forward fixed point).
    """
    f = _figures(predicted)
    if f["nonfinite"]:
        return TheoryShape("rises", "mean-field: beyond float range")
    if f["tail_change"] is None:
        return None
    change = f["tail_change"]
    factor = f"x{10 ** change:.3g} over the tail"
    if abs(change) >= thresholds.settle:
        way: Shape = "rises" if change > 0 else "falls"
        return TheoryShape(way, f"mean-field: {factor}, chi {'>' if change > 0 else '<'} 1 per layer")
    wide = depth_over_width is None or depth_over_width < thresholds.finite_width
    return TheoryShape("settles", f"the mean-field backward map is flat over the tail ({factor})") if wide else None


def classify(trace: Trace, thresholds: VerdictConfig, theory: Mapping[str, Any] | None = None,
             predicted: Trace | None = None) -> Verdict:
    """The verdict for a trace (see the module docstring for the rules).

    ``theory``: the prediction's summary, whose fixed point q* gives the forward trace's shape;
    ``predicted``: a noise-free predicted trace that gives the shape instead (the backward one).
    """
    figures = _figures(trace)
    if predicted is not None:
        shape = predicted_shape(predicted, figures["depth_over_width"], thresholds)
    else:
        shape = forward_shape(theory, figures["depth_over_width"], thresholds)
    regime, reason, source = _decide(figures, thresholds, shape, _Words(trace))
    return Verdict(regime=regime, reason=reason, notes=_notes(figures, thresholds), shape=source,
                   **_labelled(figures, trace))


def _labelled(figures: dict[str, Any], trace: Trace) -> dict[str, Any]:
    """``figures`` with every layer position replaced by the block it stands for."""
    return {key: _label(trace, value) if key in _LAYER_FIGURES else value for key, value in figures.items()}


_LAYER_FIGURES = ("first_nonfinite_layer", "first_zero_layer", "last_finite_layer", "tail_start")


def _label(trace: Trace, position: int | None) -> int | None:
    if position is None or not trace.layers:
        return position
    return trace.layers[position]


@dataclass(frozen=True)
class _Words:
    """How a verdict names its trace's entries and values: forward outputs or backward gradients."""

    trace: Trace

    def layer(self, position: int) -> int:
        label = _label(self.trace, position)
        assert label is not None
        return label

    def nonfinite(self, site: str | None) -> str:
        if self.trace.signal == "backward":
            return "pre-activation gradients" if site == "pre" else "gradients"
        return "pre-activations" if site == "pre" else "outputs"

    @property
    def value(self) -> str:
        return "gradient" if self.trace.signal == "backward" else "output std"


def _measured_moving(f: dict[str, Any], sign: int, th: VerdictConfig, beyond_orders: bool) -> tuple[bool, str]:
    """Whether the measured tail still moves in direction ``sign``, and the words for it.

    Directional: a tail change of at least ``settle`` decades the way the end-to-end change went,
    and, below ``orders`` decades end to end, a group-means t beyond ``trend_t`` (as a normal
    quantile, at the t's own degrees of freedom). Too few steps for a t: the magnitude decides.
    """
    change, t = f["tail_change"], f["trend_t"]
    steps = f["last_finite_layer"] - f["tail_start"] + 1
    if steps < 3:
        return beyond_orders, "too few layers for a trend: the magnitude decides"
    if sign * change < th.settle:
        return False, ("levels off" if abs(change) < th.settle else f"the tail turns back ({_way(-sign)})")
    if beyond_orders or t is None:  # t None with enough steps: no noise, the change is the trend
        return True, f"still {_way(sign)}"
    needed = critical_t(th.trend_t, trend_groups(steps) - 1)
    if sign * t >= needed:
        return True, f"still {_way(sign)}"
    return False, f"no significant trend left (|t| < {needed:.3g})"


def _moving(f: dict[str, Any], sign: int, th: VerdictConfig, shape: TheoryShape | None,
            beyond_orders: bool) -> tuple[bool, str, Source]:
    """Whether the signal still moves in direction ``sign``, the words, and what decided: theory or measured.

    The mean-field shape decides where it applies and agrees with the sign or settles; a measured,
    directional test otherwise.
    """
    if shape is not None and shape.shape == "settles":
        return False, shape.why, "theory"
    if shape is not None and shape.shape == ("falls" if sign < 0 else "rises"):
        return True, f"still {_way(sign)} ({shape.why})", "theory"
    moving, words = _measured_moving(f, sign, th, beyond_orders)
    return moving, words, "measured"


def _decide(f: dict[str, Any], th: VerdictConfig, shape: TheoryShape | None, words: _Words
            ) -> tuple[Regime, str, Source | None]:
    """The regime, the rule that decided it, and what decided the tail's shape (theory, measured, or None)."""
    if f["nonfinite"]:
        where = words.nonfinite(f["nonfinite_site"])
        return "explosion", f"non-finite {where} from layer {words.layer(f['first_nonfinite_layer'])}", None
    if f["last_std"] is None:
        return "stable", "no layer to judge", None
    if f["input_std"] is None and f["last_finite_layer"] == 0:  # the reference alone: nothing changed yet
        return "stable", f"no layer to judge: the only {words.value} is the reference", None
    if f["first_zero_layer"] is not None:
        return "vanishing", f"the {words.value} reached 0 at layer {words.layer(f['first_zero_layer'])}", None
    decades, tail, sign = f["decades"], _tail_text(f, words), 1 if f["decades"] > 0 else -1
    regime: Regime = "explosion" if sign > 0 else "vanishing"
    if abs(decades) >= th.settled_orders:
        return regime, f"a change of {abs(decades):.3g} decades end to end, beyond {th.settled_orders:g}", None
    limit = th.explode_ratio if sign > 0 else th.vanish_ratio
    beyond_orders = abs(decades) >= th.orders
    beyond = beyond_orders or sign * decades >= sign * math.log10(limit)
    moving, said, source = False, "", None
    what = f"{abs(decades):.3g} decades end to end" if beyond_orders else f"beyond x{limit:g}"
    power = _power(f) if words.trace.residual and sign > 0 and beyond else None
    if power is not None and power <= POLYNOMIAL_POWER:
        return "stable", (f"{what} but it grows like a power of the depth, l^{power:.2g} over layers "
                          f"{words.layer(f['tail_start'])}-{words.layer(f['last_finite_layer'])} (a residual "
                          f"stream's growth, at most l^{POLYNOMIAL_POWER:g}: not geometric)"), "measured"
    if beyond:
        moving, said, source = _moving(f, sign, th, shape, beyond_orders)
    if moving:
        return regime, f"{what} and {said}: {tail}", source
    if f["saturated_fraction"] is not None and f["saturated_fraction"] >= th.saturation:
        return "saturated", (f"{f['saturated_fraction']:.0%} of the outputs sit at the activation's bounds "
                             f"over layers {words.layer(f['tail_start'])}-{words.layer(f['last_finite_layer'])}, "
                             "where φ′ ≈ 0: those units pass no gradient back"
                             ), source
    if beyond:
        return "stable", f"{what} but {said}: {tail}", source
    return "stable", f"within x{th.vanish_ratio:g} to x{th.explode_ratio:g} of the reference; {tail}", None


#: A residual stream whose std grows at most like l^POLYNOMIAL_POWER over the tail is stable: adding a
#: bounded branch block after block (pre-norm) grows the second moment linearly, the std like √l, and
#: a net of any depth still trains; geometric growth (x r per block) shows as a power that grows with
#: the depth (l·ln r at block l), beyond any fixed bound.
POLYNOMIAL_POWER = 1.0


def _power(f: dict[str, Any]) -> float | None:
    """The exponent k of std ~ l^k over the tail, from the tail's least-squares change; l counts blocks
    (the tail's first point has had ``tail_start`` blocks, its last ``last_finite_layer + 1``). None where
    the tail is too short to say."""
    start, last, change = f["tail_start"], f["last_finite_layer"], f["tail_change"]
    if start is None or last is None or change is None or start < 1 or last + 1 - start < 3:
        return None
    return float(change / math.log10((last + 1) / start))


def _tail_text(f: dict[str, Any], words: _Words) -> str:
    t = f["trend_t"]
    trend = ("too few layers for a trend" if t is None and f["last_finite_layer"] < 3
             else "no noise" if t is None else f"trend t {t:.2f}")
    span = f"{words.layer(f['tail_start'])}-{words.layer(f['last_finite_layer'])}"
    return f"layers {span} x{10 ** f['tail_change']:.3g}, {trend}"


def _notes(f: dict[str, Any], th: VerdictConfig) -> list[str]:
    notes = []
    if f["dead_fraction"] is not None and f["dead_fraction"] >= th.dead:
        notes.append(f"{f['dead_fraction']:.0%} of the units are dead (zero for the whole batch) over the tail")
    ratio = f["depth_over_width"]
    if ratio is not None and ratio >= th.finite_width:
        notes.append(f"depth/width = {ratio:.3g}: finite width matters here (Hanin & Rolnick 2018)")
    return notes


def _way(sign: int) -> str:
    return "rising" if sign > 0 else "falling"


# ---------------------------------------------------------------- against the theory

#: Beyond float32's range a measured trace goes non-finite; the prediction marks it so too.
FLOAT32_MAX = 3.4028234663852886e38


def theory_figures(prediction: Prediction, input_std: float | None, thresholds: VerdictConfig,
                   largest: float = FLOAT32_MAX) -> dict[str, Any]:
    """``theory_regime`` and ``theory_ratio``: the same rules applied to the predicted (noise-free) trace.

    A block whose predicted pre-activation std is within a factor 8 of ``largest`` (the dtype's
    largest value) is marked non-finite: some of its Gaussian values overflow.
    """
    if not prediction.applicable:
        return {"theory_regime": None, "theory_ratio": None}
    over = next((i for i, p in enumerate(prediction.pre_std) if not p * 8 < largest), len(prediction.pre_std))
    std = [s if i < over and math.isfinite(s) else None for i, s in enumerate(prediction.post_std)]
    trace = Trace(std, [0.0 if s is not None else 1.0 for s in std], input_std, residual=prediction.residual)
    verdict = classify(trace, thresholds, prediction.summary())
    return {"theory_regime": verdict.regime, "theory_ratio": verdict.ratio}


def agreement(regime: Regime, figures: dict[str, Any], theory: dict[str, Any], thresholds: VerdictConfig,
              signal: Signal = "forward") -> tuple[bool | None, str]:
    """Whether the measured regime is the predicted one, as a sentence naming the likely cause if not.

    ``figures`` holds ``theory_regime`` and ``theory_ratio``; ``theory`` is the prediction's
    summary (:meth:`initlab.theory.Prediction.summary`). Saturation is not a length-map
    outcome: a saturated measurement agrees with a predicted stable length.
    """
    if not theory["applicable"]:
        return None, f"theory does not apply: {theory['reason']}"
    predicted, ratio = figures["theory_regime"], figures["theory_ratio"]
    # q*, χ₁ and the phase have a line of their own (summary.json's ``theory``): not repeated here.
    reference = "the upstream gradient" if signal == "backward" else "the input's std"
    said = f"predicts {predicted}" + ("" if ratio is None else f" (x{ratio:.3g} of {reference})")
    if predicted == regime or (regime == "saturated" and predicted == "stable"):
        return True, f"theory agrees: it {said}"
    return False, f"theory disagrees: it {said}; likely {_likely_cause(theory, thresholds, signal)}"


def _likely_cause(theory: dict[str, Any], thresholds: VerdictConfig, signal: Signal = "forward") -> str:
    ratio = theory["depth_over_width"]
    # Hanin & Rolnick's figures are those of the forward log-std: not quoted for the gradient.
    drift, spread = (theory["finite_width_log_std_drift"], theory["finite_width_log_std_spread"]
                     ) if signal == "forward" else (None, None)
    if ratio is not None and ratio >= thresholds.finite_width:
        hanin = "" if drift is None else (
            f"; Hanin & Rolnick: log-std drift {drift:.3g} +- {spread:.2g} e-folds across seeds, which the "
            "infinite-width theory leaves out")
        return f"finite width, not the init (depth/width = {ratio:.3g}{hanin})"
    if any("orthogonal" in note for note in theory.get("notes", [])):
        return "orthogonal weights, which the theory treats as Gaussian"
    return "a measurement near a threshold (finite-width noise; see the seeds' spread)"


def judge(trace: Trace, thresholds: VerdictConfig, prediction: Prediction | None = None,
          largest: float = FLOAT32_MAX) -> Verdict:
    """:func:`classify`, and where a prediction is given, whether the theory agrees (in the notes)."""
    verdict = classify(trace, thresholds, None if prediction is None else prediction.summary())
    if prediction is None:
        return verdict
    figures = theory_figures(prediction, trace.input_std, thresholds, largest)
    return with_theory(verdict, figures, prediction.summary(), thresholds)


def with_theory(verdict: Verdict, figures: dict[str, Any], theory: dict[str, Any], thresholds: VerdictConfig,
                signal: Signal = "forward") -> Verdict:
    """``verdict`` with the theory's regime and ratio, and the agreement statement as its last note."""
    agrees, sentence = agreement(verdict.regime, figures, theory, thresholds, signal)
    return replace(verdict, theory_agrees=agrees, notes=[*verdict.notes, sentence], **figures)


# ---------------------------------------------------------------- the backward signal


def backward_trace(values: Sequence[float | None], nonfinite: Sequence[float], pre_nonfinite: Sequence[float] = (),
                   width: int | None = None) -> Trace:
    """The backward signal as a trace, in the order the gradient travels: from the last block, whose
    gradient is the upstream one and the reference, down to the first. Arguments are per block, layer 0 first.
    """
    return Trace(std=list(values)[::-1], nonfinite=list(nonfinite)[::-1], input_std=None,
                 pre_nonfinite=list(pre_nonfinite)[::-1], width=width,
                 layers=list(range(len(values) - 1, -1, -1)), signal="backward")


def judge_backward(trace: Trace, thresholds: VerdictConfig, predicted: Sequence[float] | None,
                   theory: dict[str, Any] | None, largest: float = FLOAT32_MAX) -> Verdict:
    """The backward verdict: :func:`classify` of ``trace`` (from :func:`backward_trace`), the tail's shape
    from the ``predicted`` gradient (per block, layer 0 first; None: measured) and the agreement with it.

    A predicted gradient within a factor 8 of ``largest`` is marked non-finite, as for the forward
    prediction. ``theory`` is the prediction's summary, ``applicable`` False where there is no
    backward prediction (its ``reason`` says why).
    """
    expected = None
    if predicted is not None:
        finite = [p if math.isfinite(p) and p * 8 < largest else None for p in predicted]
        expected = backward_trace(finite, [0.0 if p is not None else 1.0 for p in finite])
    verdict = classify(trace, thresholds, predicted=expected)
    if theory is None:
        return verdict
    figures: dict[str, Any] = {"theory_regime": None, "theory_ratio": None}
    if expected is not None:
        own = classify(expected, thresholds, predicted=expected)
        figures = {"theory_regime": own.regime, "theory_ratio": own.ratio}
    return with_theory(verdict, figures, theory, thresholds, "backward")
