r"""The mean-field prediction of the backward signal: the gradient's size at every block.

Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep information propagation" (ICLR),
§5, eq. (12): under the gradient-independence assumption, the second moment of the gradient
with respect to block :math:`l-1`'s output is that of block :math:`l`'s times

.. math:: \chi_l = \sigma_{w,l}^2\, E[\varphi'(\sqrt{q_l} z)^2]

(equal widths), with :math:`q_l` the forward length map's pre-activation second moment of
block :math:`l` (:func:`initlab.theory.trajectory`). So, reading from the last block down,

.. math:: \tilde q_{L-1} = E[g^2], \qquad \tilde q_l = \tilde q_{L-1} \prod_{k=l+1}^{L-1} \chi_k,

where :math:`g` is the upstream gradient fed into the last block's output. Below the last
block the gradient has mean 0 (the weights are centred), so its std is :math:`\sqrt{\tilde q_l}`.

The assumption needs an upstream gradient independent of the weights it flows back through.
``upstream: normal`` (drawn, mean 0) is. ``output`` (y itself, the loss |y|^2/2) is not: it
feeds the forward pass back (for a positively homogeneous network without bias the gradient of
block l is :math:`J^\top J h_l`, whose size depends on the spread of the Jacobian's spectrum,
not its mean: a linear Gaussian network at chi = 1 grows it about x13 over 100 layers), so it
gets no prediction. ``ones`` (mean 1) is independent of the weights, but the first mask
:math:`\varphi'(W h)` times it is :math:`\sum_i W_{ij} \varphi'(W_i h)`, whose mean is 0 only
when :math:`\varphi'` is even (odd activations: linear, tanh; sigmoid): for ReLU the mask
correlates with the weights (measured: ReLU + Kaiming at depth 100 grows the gradient x3 to x11
over seeds 1-3, where ``normal`` holds near 1), so ``ones`` gets a prediction only for an even
:math:`\varphi'`. Its last block's std is 0 (a constant), its rms 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from initlab.activations import Activation
from initlab.elementwise import elementwise
from initlab.theory import Prediction

Upstream = Literal["normal", "output", "ones"]


@dataclass(frozen=True)
class GradientPrediction:
    """Per block (index = layer): the predicted std and root mean square of the gradient of its output."""

    std: list[float]
    rms: list[float]


def no_prediction(upstream: Upstream, activation: Activation) -> str | None:
    """Why the mean-field backward map says nothing for this upstream gradient (None: it does; see the
    module docstring)."""
    if upstream == "output":
        return ("upstream: output feeds y back, so the gradient depends on the weights it flows through, which "
                "the mean-field backward map (gradient independence) leaves out")
    if upstream == "ones" and not even_derivative(activation):
        return (f"upstream: ones has mean 1, and {activation.label()}'s derivative is not even, so its mask "
                "correlates the gradient with the weights it flows through, which the mean-field backward map "
                "(gradient independence) leaves out")
    return None


#: Points where :func:`even_derivative` compares phi'(x) with phi'(-x): both sides of every scale.
_PROBES = np.concatenate([np.geomspace(1e-3, 30.0, 61), [0.3183, 0.7071, 1.4142, 2.7183]])


def even_derivative(activation: Activation) -> bool:
    """Whether phi'(-x) = phi'(x) (phi odd up to a constant: linear, tanh, sigmoid), to 1e-9 absolute
    (sigmoid's phi' in the tails, ~1e-13, is computed with cancellation on one side)."""
    dphi = elementwise(activation).dphi
    with np.errstate(all="ignore"):
        right, left = dphi(_PROBES), dphi(-_PROBES)
    return bool(np.allclose(left, right, rtol=1e-9, atol=1e-9))


def backward_theory_summary(summary: dict[str, Any], upstream: Upstream, activation: Activation
                            ) -> dict[str, Any]:
    """The forward prediction's ``summary`` as the backward verdict reads it: not applicable (with the
    reason of :func:`no_prediction`) where the backward map says nothing for this upstream gradient."""
    why = no_prediction(upstream, activation)
    if summary["applicable"] and why is not None:
        return summary | {"applicable": False, "reason": why}
    return summary


def gradient_prediction(prediction: Prediction, upstream: Upstream, activation: Activation
                        ) -> GradientPrediction | None:
    """The predicted gradient of every block's output (None where the theory does not apply: no forward
    prediction, or an upstream gradient it says nothing for, see :func:`no_prediction`)."""
    if not prediction.applicable or not prediction.chi or no_prediction(upstream, activation) is not None:
        return None
    log_rms = _log_rms(prediction.chi, 1.0)  # N(0, 1) and ones: second moment 1
    with np.errstate(over="ignore", invalid="ignore"):
        rms = np.exp(log_rms)
    std = rms.copy()
    std[-1] = 1.0 if upstream == "normal" else 0.0  # the upstream itself: N(0, 1), or a constant
    return GradientPrediction(std.tolist(), rms.tolist())


def _log_rms(chi: Sequence[float], second: float) -> np.ndarray:
    """log of :math:`\\sqrt{\\tilde q_l}` for every block, from the last one down."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_chi = np.log(np.asarray(chi, dtype=np.float64))
        below = np.concatenate([np.cumsum(log_chi[:0:-1])[::-1], [0.0]])  # sum over k > l of log chi_k
        return 0.5 * (math.log(second) if second > 0 else -math.inf) + 0.5 * below
