"""The regime verdict: does the signal explode, vanish, saturate or stay stable through the depth?

Judged from the std of every block's output, *against the input's std* (so one layer
counts), with the pre-activations' non-finite counts, and the tanh/sigmoid saturation
and ReLU dead-unit fractions. Let ``z`` be log10 of the std, with the input as point 0,
``M = z_last - z_input`` the end-to-end change in decades, and the *tail* the last half
of the trace:

1. A non-finite value in any pre-activation or output: **explosion** (``nonfinite``),
   even where a bounded activation hides it (tanh maps ±inf to ±1).
2. An output std of exactly 0 (underflow, or every unit dead): **vanishing**.
3. ``|M| >= orders`` (decades): **explosion** or **vanishing** by its sign. A change
   of orders of magnitude end to end is the regime whatever its shape (exponential,
   power law l^-1/2, or finite-width drift) and at any depth.
4. A smaller change beyond ``explode_ratio``/``vanish_ratio`` counts only while the
   tail still moves in its direction: a change over the tail of at least ``settle``
   decades (least squares) *and* a trend t of at least ``trend_t``. The t is the mean
   step of the tail over its Newey-West (HAC) standard error: calibrated for a random
   walk, the shape finite width gives a critical network's log-std, with dependent
   steps. A transient that settles to a non-zero fixed point (selu at torch's gain 3/4:
   post std 0.2) has a flat tail and stays **stable**; a decay to zero keeps falling.
5. Otherwise, a bounded activation with at least ``saturation`` of its outputs at the
   range's edges over the tail is **saturated**: the std looks healthy but the units
   pass no gradient (tanh with N(0, 1) weights: pre-activation std 16, 90 % saturated).
   Else **stable**.

Dead ReLU units (zero for the whole batch) and a large depth/width (where Hanin &
Rolnick 2018 predict a seed-to-seed spread of the log-std of about sqrt(5 L/n)/2 and a
drift of about -5 L/(4 n), in nats, for ReLU nets) are noted in the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from initlab.config import VerdictConfig

if TYPE_CHECKING:
    from initlab.theory import Prediction

Regime = Literal["explosion", "vanishing", "saturated", "stable"]
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
    trend_t: float | None  # HAC t of the tail's mean step; None: too few steps or no noise
    saturated_fraction: float | None  # mean over the tail
    dead_fraction: float | None  # mean over the tail
    depth_over_width: float | None
    reason: str
    notes: list[str] = field(default_factory=list)
    theory_regime: Regime | None = None  # the same rules on the mean-field trace
    theory_ratio: float | None = None  # predicted last-layer std / input std
    theory_agrees: bool | None = None  # None where the theory does not apply

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- trend statistics


def newey_west_t(steps: Sequence[float]) -> float | None:
    r"""t of the mean of ``steps`` with a Newey-West (Bartlett) long-run standard error.

    :math:`t = \bar d / \sqrt{\hat\Omega / n}`, :math:`\hat\Omega = \hat\gamma_0 +
    2\sum_{j=1}^{b} (1 - j/(b+1))\hat\gamma_j`, bandwidth
    :math:`b = \lfloor 4 (n/100)^{2/9} \rfloor` (Newey & West 1987, 1994). For a random
    walk (independent or weakly dependent steps) with no drift it is close to N(0, 1).
    None with fewer than 3 steps, or when the steps do not vary (no noise to test against).
    """
    n = len(steps)
    if n < 3:
        return None
    mean = math.fsum(steps) / n
    dev = [d - mean for d in steps]
    bandwidth = int(0.75 * n ** (1 / 3))
    lrv = math.fsum(d * d for d in dev) / n
    for j in range(1, bandwidth + 1):
        lrv += 2 * (1 - j / (bandwidth + 1)) * math.fsum(dev[i] * dev[i - j] for i in range(j, n)) / n
    if not lrv > 1e-30 * (mean * mean + 1e-300):
        return None
    return mean / math.sqrt(lrv / n)


def critical_t(z: float, df: int) -> float:
    """Student's t quantile with ``df`` degrees of freedom at the tail probability of N(0, 1) beyond ``z``.

    Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5, two terms; within 2 % of the exact
    quantile for df >= 9 at z <= 3). It makes up for the few steps of a short tail.
    """
    v = max(df, 1)
    return z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v * v)


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
    """The first layer with a non-finite pre-activation or output (an undefined std counts)."""
    for i, n in enumerate(trace.nonfinite):
        if i < len(trace.pre_nonfinite) and trace.pre_nonfinite[i] > 0:
            return i, "pre"
        if n > 0 or trace.std[i] is None:
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
            "tail_change": least_squares_change(points[start:]), "trend_t": newey_west_t(tail_steps),
            "saturated_fraction": _mean_over(trace.saturated, layer, len(finite)),
            "dead_fraction": _mean_over(trace.dead, layer, len(finite))}
    return out


def classify(trace: Trace, thresholds: VerdictConfig) -> Verdict:
    """The verdict for a trace (see the module docstring for the rules)."""
    figures = _figures(trace)
    regime, reason = _decide(figures, thresholds)
    return Verdict(regime=regime, reason=reason, notes=_notes(figures, thresholds), **figures)


def _moving(figures: dict[str, Any], sign: int, thresholds: VerdictConfig) -> bool:
    """Whether the tail still moves in direction ``sign``: by ``settle`` decades and a trend t beyond ``trend_t``."""
    change, t = figures["tail_change"], figures["trend_t"]
    steps = figures["last_finite_layer"] - figures["tail_start"] + 1
    return bool(sign * change >= thresholds.settle
                and (t is None or sign * t >= critical_t(thresholds.trend_t, steps - 1)))


def _decide(f: dict[str, Any], th: VerdictConfig) -> tuple[Regime, str]:
    """The regime and the rule that decided it (the figures themselves are in the headline)."""
    if f["nonfinite"]:
        where = "pre-activations" if f["nonfinite_site"] == "pre" else "outputs"
        return "explosion", f"non-finite {where} from layer {f['first_nonfinite_layer']}"
    if f["last_std"] is None:
        return "stable", "no layer to judge"
    if f["first_zero_layer"] is not None:
        return "vanishing", f"the output std reached 0 at layer {f['first_zero_layer']}"
    decades, tail = f["decades"], _tail_text(f)
    settled = abs(f["tail_change"]) < th.settle
    regime: Regime = "explosion" if decades > 0 else "vanishing"
    if abs(decades) >= th.settled_orders:
        return regime, f"a change of {abs(decades):.3g} decades end to end, beyond {th.settled_orders:g}"
    if abs(decades) >= th.orders and not settled:
        return regime, f"a change of {abs(decades):.3g} decades end to end, beyond {th.orders:g}, not settled: {tail}"
    for sign, regime, limit in ((1, "explosion", th.explode_ratio), (-1, "vanishing", th.vanish_ratio)):
        if sign * decades >= sign * math.log10(limit) and _moving(f, sign, th):
            return regime, f"beyond x{limit:g} and still {_way(sign)}: {tail}"
    if f["saturated_fraction"] is not None and f["saturated_fraction"] >= th.saturation:
        return "saturated", (f"{f['saturated_fraction']:.0%} of the outputs sit at the activation's bounds "
                             f"over layers {f['tail_start']}-{f['last_finite_layer']}: those units pass no gradient")
    if decades >= math.log10(th.explode_ratio) or decades <= math.log10(th.vanish_ratio):
        limit = th.explode_ratio if decades > 0 else th.vanish_ratio
        left = "settled (a transient to a fixed point)" if settled else "no significant trend left"
        return "stable", f"beyond x{limit:g} but {left}: {tail}"
    return "stable", f"within x{th.vanish_ratio:g} to x{th.explode_ratio:g} of the reference; {tail}"


def _tail_text(f: dict[str, Any]) -> str:
    t = f["trend_t"]
    trend = ("too few layers for a trend" if t is None and f["last_finite_layer"] < 3
             else "no noise" if t is None else f"trend t {t:.2f}")
    return f"layers {f['tail_start']}-{f['last_finite_layer']} x{10 ** f['tail_change']:.3g}, {trend}"


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
    verdict = classify(Trace(std, [0.0 if s is not None else 1.0 for s in std], input_std), thresholds)
    return {"theory_regime": verdict.regime, "theory_ratio": verdict.ratio}


def agreement(regime: Regime, figures: dict[str, Any], theory: dict[str, Any], thresholds: VerdictConfig
              ) -> tuple[bool | None, str]:
    """Whether the measured regime is the predicted one, as a sentence naming the likely cause if not.

    ``figures`` holds ``theory_regime`` and ``theory_ratio``; ``theory`` is the prediction's
    summary (:meth:`initlab.theory.Prediction.summary`). Saturation is not a length-map
    outcome: a saturated measurement agrees with a predicted stable length.
    """
    if not theory["applicable"]:
        return None, f"theory does not apply: {theory['reason']}"
    predicted, ratio = figures["theory_regime"], figures["theory_ratio"]
    detail = ", ".join(
        text for text in (
            None if ratio is None else f"x{ratio:.3g} of the input's std",
            None if theory["q_star"] is None else f"q* = {theory['q_star']:.3g}",
            None if theory["chi1"] is None else f"chi1 = {theory['chi1']:.3g} ({theory['phase']})",
        ) if text
    )
    said = f"predicts {predicted} ({detail})"
    if predicted == regime or (regime == "saturated" and predicted == "stable"):
        return True, f"theory agrees: it {said}"
    return False, f"theory disagrees: it {said}; likely {_likely_cause(theory, thresholds)}"


def _likely_cause(theory: dict[str, Any], thresholds: VerdictConfig) -> str:
    ratio = theory["depth_over_width"]
    drift, spread = theory["finite_width_log_std_drift"], theory["finite_width_log_std_spread"]
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
    verdict = classify(trace, thresholds)
    if prediction is None:
        return verdict
    figures = theory_figures(prediction, trace.input_std, thresholds, largest)
    return with_theory(verdict, figures, prediction.summary(), thresholds)


def with_theory(verdict: Verdict, figures: dict[str, Any], theory: dict[str, Any], thresholds: VerdictConfig
                ) -> Verdict:
    """``verdict`` with the theory's regime and ratio, and the agreement statement as its last note."""
    agrees, sentence = agreement(verdict.regime, figures, theory, thresholds)
    return replace(verdict, theory_agrees=agrees, notes=[*verdict.notes, sentence], **figures)
