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

The assumption needs an upstream gradient that is drawn independently of the weights with mean
0: ``upstream: normal``. ``output`` (y itself, the loss |y|^2/2) feeds the forward pass back:
the gradient of block l is :math:`J^\top J h_l`, whose size depends on the spread of the
Jacobian's spectrum, not its mean alone (a linear Gaussian network at chi = 1 grows it like
sqrt(L - l)). ``ones`` has mean 1: a ReLU's mask :math:`1[W h > 0]` then correlates with the
weights the gradient flows back through (measured: ReLU + Kaiming, depth 100, grows it x3 to
x11 over seeds 1-3, where ``normal`` holds near 1). Neither gets a prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from initlab.theory import Prediction

Upstream = Literal["normal", "output", "ones"]


@dataclass(frozen=True)
class GradientPrediction:
    """Per block (index = layer): the predicted std and root mean square of the gradient of its output."""

    std: list[float]
    rms: list[float]


#: Why there is no prediction for an upstream gradient other than ``normal`` (see the module docstring).
NO_PREDICTION = {
    "output": "upstream: output feeds y back, so the gradient depends on the weights it flows through (J^T J h), "
              "which the mean-field backward map (gradient independence) leaves out",
    "ones": "upstream: ones has mean 1, not 0, so a ReLU's mask correlates the gradient with the weights it flows "
            "through, which the mean-field backward map (gradient independence) leaves out",
}


def backward_theory_summary(summary: dict[str, Any], upstream: Upstream) -> dict[str, Any]:
    """The forward prediction's ``summary`` as the backward verdict reads it: not applicable (with the
    reason of :data:`NO_PREDICTION`) unless ``upstream: normal``."""
    if summary["applicable"] and upstream != "normal":
        return summary | {"applicable": False, "reason": NO_PREDICTION[upstream]}
    return summary


def gradient_prediction(prediction: Prediction, upstream: Upstream
                        ) -> GradientPrediction | None:
    """The predicted gradient of every block's output (None where the theory does not apply: no forward
    prediction, or an upstream gradient other than ``normal``, see :data:`NO_PREDICTION`)."""
    if not prediction.applicable or not prediction.chi or upstream != "normal":
        return None
    log_rms = _log_rms(prediction.chi, 1.0)  # g ~ N(0, 1): std 1, second moment 1
    with np.errstate(over="ignore", invalid="ignore"):
        rms = np.exp(log_rms)
    return GradientPrediction(rms.tolist(), rms.tolist())


def _log_rms(chi: Sequence[float], second: float) -> np.ndarray:
    """log of :math:`\\sqrt{\\tilde q_l}` for every block, from the last one down."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_chi = np.log(np.asarray(chi, dtype=np.float64))
        below = np.concatenate([np.cumsum(log_chi[:0:-1])[::-1], [0.0]])  # sum over k > l of log chi_k
        return 0.5 * (math.log(second) if second > 0 else -math.inf) + 0.5 * below
