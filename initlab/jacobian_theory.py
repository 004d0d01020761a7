r"""The predicted spectrum of the input-output Jacobian: the mean and the variance of :math:`\sigma^2`.

:math:`J = D_L W_L \cdots D_1 W_1`, :math:`D_l = \mathrm{diag}\,\varphi'(h_l)`, and the
eigenvalues :math:`\lambda = \sigma^2` of :math:`JJ^T`. In the wide-network limit (width
:math:`n \to \infty` at fixed depth :math:`L`) the factors :math:`D_l^2` and :math:`W_l^T W_l`
are asymptotically free and the spectrum of :math:`JJ^T` is their free multiplicative
convolution. Papers:

* Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through
  dynamical isometry: theory and practice" (NeurIPS): the moments
  :math:`m_1 = (\sigma_w^2 \mu_1)^L` and, at criticality (:math:`\chi = 1`),
  :math:`\sigma_{JJ^T}^2 = m_2 - m_1^2 = L(\mu_2/\mu_1^2 - 1 - s_1)`, with
  :math:`\mu_k = \int Dz\,\varphi'(\sqrt{q^*}z)^{2k}` and :math:`s_1` the first coefficient of the
  S-transform of :math:`WW^T`: :math:`-1` for Gaussian weights, 0 for orthogonal. For
  a piecewise-linear :math:`\varphi` with a fraction :math:`p` of units active
  (:math:`\mu_1 = \mu_2 = p`) gives :math:`L/p` (Gaussian) and :math:`L(1-p)/p` (orthogonal);
  a linear orthogonal network 0, a linear Gaussian one :math:`L`.
* Pennington, Schoenholz & Ganguli 2018, "The emergence of spectral universality in deep
  networks" (AISTATS): the S-transform :math:`S_{JJ^T} = \prod_l S_{W_l^TW_l} S_{D_l^2}`,
  which holds layer by layer, not only at a fixed point.

Expanding each S-transform to first order, :math:`S(z) = m_1^{-1}(1 - v z + O(z^2))` with
:math:`v = m_2/m_1^2 - 1` the normalised variance, so normalised variances add over free
factors. That gives, for any :math:`\chi_l` and :math:`q_l` along the length map (equation
numbers are not cited: they were not checked against the papers' text; the special cases
above are checked by Monte Carlo in tests/test_jacobian.py),

.. math::
    E[\sigma^2] = \prod_l \chi_l, \qquad
    \frac{\mathrm{Var}[\sigma^2]}{E[\sigma^2]^2} = \sum_l \Big(\frac{\mu_{2,l}}{\mu_{1,l}^2} - 1 + v_{W,l}\Big),

:math:`\chi_l = \sigma_{w,l}^2\mu_{1,l}`, :math:`\mu_{k,l} = E[\varphi'(\sqrt{q_l}z)^{2k}]`,
:math:`v_W = -s_1 = 1` for i.i.d. weights of any zero-mean distribution (Marchenko-Pastur:
:math:`W^TW` has :math:`m_2/m_1^2 = 2`) and 0 for orthogonal ones. At :math:`\chi = 1` this is
the criticality result above. At finite width the variance has corrections of relative order :math:`L/n`
(a single Gaussian :math:`W^TW` already has :math:`m_2/m_1^2 = 2 + 1/n`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from initlab import schemes as S
from initlab.config import Config
from initlab.elementwise import elementwise
from initlab.theory import Prediction, gaussian_expectation

#: Schemes whose entries are i.i.d. with mean 0 (when their mean is 0): W^TW -> Marchenko-Pastur, v_W = 1.
_IID = (S.Normal, S.Uniform, S.TruncNormal, S.XavierNormal, S.XavierUniform, S.KaimingNormal,
        S.KaimingUniform, S.LecunNormal, S.Default)

#: depth/width from which finite width is noted. Measured (tests/test_jacobian.py, 30-60 seeds): at
#: L/n <= 0.5 the average variance is higher by a relative 0.7..1.1 L/n (linear Gaussian) and 1.6..2.5 L/n
#: (ReLU + Kaiming); at L = 100, n = 256 the average mean sigma^2 is still the prediction (0.97, 1.00 over
#: 40 seeds) but one network's ranges over 0.43..1.7 (linear) and 0.15..4.4 (ReLU).
FINITE_WIDTH_NOTE = 0.1


@dataclass(frozen=True)
class JacobianPrediction:
    r"""Predicted :math:`E[\sigma^2]` and :math:`\mathrm{Var}[\sigma^2]` of J's spectrum.

    None where undefined; ``note`` says why, or where the wide-network limit is rough."""

    mean_sigma2: float | None
    var_sigma2: float | None
    note: str | None

    def summary(self) -> dict[str, Any]:
        """summary.json's predicted figures under ``jacobian``."""
        return {"theory_mean_sigma2": self.mean_sigma2, "theory_var_sigma2": self.var_sigma2,
                "theory_note": self.note}


def weight_spread(scheme: S.Scheme) -> float | None:
    r""":math:`v_W = m_2/m_1^2 - 1` of :math:`W^TW`'s spectrum in the wide limit: 1 for i.i.d. zero-mean
    weights (Marchenko-Pastur), 0 for orthogonal (every eigenvalue :math:`g^2`); None otherwise."""
    if isinstance(scheme, S.Orthogonal):
        return 0.0
    if isinstance(scheme, (S.Normal, S.TruncNormal)) and scheme.mean != 0.0:
        return None
    if isinstance(scheme, S.Uniform) and scheme.a != -scheme.b:
        return None
    return 1.0 if isinstance(scheme, _IID) else None


def derivative_moments(config: Config, q: list[float]) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\mu_{1,l} = E[\varphi'(\sqrt{q_l}z)^2]` and :math:`\mu_{2,l} = E[\varphi'(\sqrt{q_l}z)^4]` per block."""
    e = elementwise(config.model.activation)
    mu1 = gaussian_expectation(lambda x: e.dphi(x) ** 2, q, features=e.features)
    mu2 = gaussian_expectation(lambda x: e.dphi(x) ** 4, q, features=e.features)
    return mu1, mu2


def predict(config: Config, prediction: Prediction) -> JacobianPrediction:
    r"""The predicted mean and variance of :math:`\sigma^2` for ``config`` from its mean-field ``prediction``."""
    if not prediction.applicable:
        return JacobianPrediction(None, None, f"no mean-field theory: {prediction.reason}")
    depth, width = config.model.depth, config.model.width
    sw2 = np.asarray(prediction.sigma_w2, dtype=np.float64)
    if (sw2 == 0.0).any():  # a zero weight matrix: J = 0 exactly
        return JacobianPrediction(0.0, 0.0, "a block's weights are all zero: J = 0")
    mu1, mu2 = derivative_moments(config, prediction.q)
    with np.errstate(all="ignore"):
        mean = float(np.exp(np.sum(np.log(sw2 * mu1))))  # prod chi_l without intermediate overflow
    if not math.isfinite(mean) or mean == 0.0:
        return JacobianPrediction(None, None, "the product of the χ_l leaves the float64 range")
    spreads = [weight_spread(config.init.scheme_for(i, depth)) for i in range(depth)]
    odd = next((i for i, v in enumerate(spreads) if v is None), None)
    if odd is not None:
        label = config.init.scheme_for(odd, depth).label()
        return JacobianPrediction(mean, None, f"block {odd}: {label} weights are neither i.i.d. zero-mean nor "
                                  "orthogonal: no free-probability variance")
    with np.errstate(all="ignore"):  # mu2 >= mu1^2 (Cauchy-Schwarz): clip the quadrature's rounding below 0
        normalised = float(np.sum(np.maximum(mu2 / mu1**2 - 1.0, 0.0) + np.asarray(spreads, dtype=np.float64)))
    variance = mean * mean * normalised
    if not math.isfinite(variance):
        return JacobianPrediction(mean, None, "the variance leaves the float64 range")
    note = None
    if depth / width >= FINITE_WIDTH_NOTE and normalised > 0.0:  # isometric nets (orthogonal linear) do not scatter
        note = (f"an average over networks in the wide limit: at depth/width = {depth / width:.3g} one network's "
                "figures scatter around it by a factor (the variance of log σ² grows like L/n)")
    return JacobianPrediction(mean, variance, note)


__all__ = ["FINITE_WIDTH_NOTE", "JacobianPrediction", "derivative_moments", "predict", "weight_spread"]
