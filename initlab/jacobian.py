r"""The input-output Jacobian :math:`J = \partial y/\partial x` of the network and its singular values.

For an MLP of blocks :math:`y_l = \varphi(W_l y_{l-1} + b_l)` the Jacobian at one input is the
product :math:`J = D_L W_L \cdots D_1 W_1`, :math:`D_l = \mathrm{diag}(\varphi'(a_l))`, :math:`a_l`
block l's pre-activation at that input. :func:`measure` forms it for K inputs at once as a batch
of ``width x width`` products in float64 (``2 L n^3 K`` flops, not ``n`` backward passes), then
takes the singular values. This is what dynamical isometry is about (Saxe, McClelland & Ganguli
2014; Pennington, Schoenholz & Ganguli 2017): every singular value near 1 means the gradient
keeps its size and shape through the whole depth.

The forward pass that gives :math:`a_l` is the study's own: the whole batch, in the model's dtype,
of which the first K rows are kept, so J is the derivative of the network the study measured at
the points it reached (a pass over K rows alone would round differently, and a chaotic network
amplifies that). Where that forward pass (or the float64 product) leaves the finite floats, J of
that input is undefined: its row of singular values is NaN, and the figures that need it are None.

A singular value below ``n * eps * sigma_max`` (``torch.linalg.matrix_rank``'s threshold) is
rounding, not a measurement, in a matrix formed in float64: the smallest singular value of a
product of 100 Gaussian matrices is ~1e-148. Such values are *unresolved*: NaN in
:attr:`Spectrum.singular_values` (empty in jacobian.csv), counted in ``unresolved``, and they
turn ``min_sigma`` and ``condition`` into bounds (``min_sigma_below``: min sigma is below it;
the condition number is above ``1 / (n eps)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from initlab import devices
from initlab.config import Config
from initlab.errors import InitlabError
from initlab.model import MLP, Block

Array = npt.NDArray[np.float64]

#: Copies of the (K, n, n) float64 product alive at once: the running product, the next one,
#: and the SVD's workspace (LAPACK's gesdd takes about one more matrix).
_COPIES = 3
#: Flops of the singular values of one n x n matrix, per n^3 (bidiagonalisation ~8/3 n^3 plus
#: the iteration; 10 is a round upper figure).
_SVD_FLOPS = 10
#: Largest Jacobian computation accepted, in flops: about 3 minutes at 50 GFLOP/s, what a
#: laptop's cores sustain in float64 matmul. Past this a study would sit silent for minutes
#: (and a Jacobian that big is better measured on fewer inputs: K = 1..4 already shows the spectrum).
MAX_FLOPS = 1e13


def flops(config: Config) -> float:
    """Floating-point operations of :func:`measure`: ``2 L n^3 K`` for the products, ``10 n^3 K`` for the SVD."""
    assert config.jacobian is not None
    n, depth, k = config.model.width, config.model.depth, config.jacobian.samples
    return float(n) ** 3 * k * (2 * depth + _SVD_FLOPS)


def bytes_needed(config: Config) -> int:
    """Peak bytes of :func:`measure`: a few (K, n, n) float64 matrices."""
    assert config.jacobian is not None
    return _COPIES * config.jacobian.samples * config.model.width**2 * 8


def check(config: Config, placement: devices.Placement) -> None:
    """Refuse, before any work, a Jacobian that cannot fit on the device or would take too long."""
    if config.jacobian is None:
        return
    k, n, depth = config.jacobian.samples, config.model.width, config.model.depth
    need, free = bytes_needed(config), devices.available_bytes(placement.device)
    jacobians = f"{k} Jacobian{'s' * (k != 1)}"
    if free is not None and need > free:
        raise InitlabError(
            f"jacobian.samples {k}: {jacobians} of {n} x {n} in float64 need about {devices.gib(need)} "
            f"on {placement.device}, which has {devices.gib(free)} free; lower jacobian.samples or model.width"
        )
    work = flops(config)
    if work > MAX_FLOPS:
        raise InitlabError(
            f"jacobian.samples {k}: {jacobians} of depth {depth}, width {n} take about {work:.2g} flops "
            f"(2 L n^3 K + 10 n^3 K), over the limit of {MAX_FLOPS:.0e} (minutes on a laptop CPU); "
            "lower jacobian.samples, model.width or model.depth"
        )


@dataclass(frozen=True)
class Spectrum:
    """Singular values of the Jacobian of K inputs, and figures each averaged over the K inputs.

    ``singular_values`` is (K, width), descending per row, NaN where a value is below the row's
    ``resolution`` (unresolved, see the module docstring); ``resolution`` is NaN where that
    input's Jacobian is undefined (non-finite forward values). A figure is None where it is
    undefined for some input, never NaN.
    """

    singular_values: Array  # (K, width) float64
    resolution: Array  # (K,) n eps sigma_max of each input's J: smaller singular values are rounding

    @property
    def samples(self) -> int:
        return int(self.singular_values.shape[0])

    @property
    def nonfinite_samples(self) -> int:
        """Inputs whose Jacobian is undefined (non-finite forward values or product)."""
        return int((~np.isfinite(self.resolution)).sum())

    @property
    def _values(self) -> Array:
        """The singular values with unresolved ones as 0 (what they add to sums is below the rounding)."""
        return np.where(np.isnan(self.singular_values) & np.isfinite(self.resolution)[:, None], 0.0,
                        self.singular_values)

    @property
    def unresolved(self) -> float | None:
        """Mean count per input of singular values below float64 resolution."""
        return self._mean(np.isnan(self.singular_values).sum(axis=1).astype(np.float64)
                          + np.where(np.isfinite(self.resolution), 0.0, np.nan))

    def _mean(self, per_sample: Array) -> float | None:
        value = float(per_sample.mean()) if per_sample.size else math.nan
        return value if math.isfinite(value) else None

    @property
    def mean_sigma2(self) -> float | None:
        r"""Mean of :math:`\sigma^2` (tr :math:`JJ^T/n`): the gradient's average amplification end to end."""
        return self._mean((self._values**2).mean(axis=1))

    @property
    def var_sigma2(self) -> float | None:
        r"""Variance of :math:`\sigma^2` over the spectrum (of :math:`JJ^T`'s eigenvalues): 0 is isometry."""
        return self._mean((self._values**2).var(axis=1))

    @property
    def max_sigma(self) -> float | None:
        return self._mean(self._values[:, 0])

    @property
    def min_sigma(self) -> float | None:
        """Mean of the smallest singular value; None where one is below float64 resolution (see
        :attr:`min_sigma_below`) or undefined."""
        return self._mean(self.singular_values[:, -1])

    @property
    def min_sigma_below(self) -> float | None:
        """Where some input's smallest singular value is unresolved: the mean resolution, a bound it is below."""
        return self._mean(self.resolution) if np.isnan(self.singular_values[:, -1]).any() else None

    @property
    def condition(self) -> float | None:
        r"""Mean of :math:`\sigma_{max}/\sigma_{min}`; None where some :math:`\sigma_{min}` is unresolved
        (the condition number then exceeds ``1 / (n eps)``: :attr:`condition_above`) or undefined."""
        s = self.singular_values
        with np.errstate(all="ignore"):
            ratio = s[:, 0] / s[:, -1]
        return self._mean(ratio) if np.isfinite(ratio).all() else None

    @property
    def condition_above(self) -> float | None:
        """Where some input's condition number is beyond float64 resolution: the bound ``1 / (n eps)`` it exceeds."""
        if self.min_sigma_below is None:
            return None
        return 1.0 / (int(self.singular_values.shape[1]) * float(np.finfo(np.float64).eps))

    def summary(self) -> dict[str, Any]:
        """The figures for summary.json's ``jacobian`` key (None where undefined)."""
        return {
            "samples": self.samples, "nonfinite_samples": self.nonfinite_samples,
            "mean_sigma2": self.mean_sigma2, "var_sigma2": self.var_sigma2, "max_sigma": self.max_sigma,
            "min_sigma": self.min_sigma, "min_sigma_below": self.min_sigma_below, "condition": self.condition,
            "condition_above": self.condition_above, "unresolved": self.unresolved,
            "width": int(self.singular_values.shape[1]),
        }

    def table(self) -> pd.DataFrame:
        """jacobian.csv: one row per singular value, ``sample, index, singular_value`` (descending)."""
        k, n = self.singular_values.shape
        table: pd.DataFrame = pd.DataFrame({
            "sample": np.repeat(np.arange(k), n).astype("int64"),
            "index": np.tile(np.arange(n), k).astype("int64"),
            "singular_value": self.singular_values.reshape(k * n),
        })
        return table


def derivative(block: Block, pre: torch.Tensor) -> torch.Tensor:
    r""":math:`\varphi'(a)` of the block's activation at ``pre`` (any shape), in float64, by autograd.

    Every activation is elementwise, so the gradient of :math:`\sum \varphi(a)` is
    :math:`\varphi'(a)` exactly (at a kink, the one-sided value autograd itself uses).
    """
    with torch.enable_grad():
        a = pre.detach().to(torch.float64).requires_grad_(True)
        (slope,) = torch.autograd.grad(block.activation(a).sum(), a)
    return slope


def jacobians(model: MLP, x: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`J = \partial y/\partial x` at the first ``k`` rows of the batch ``x`` (all by default):
    (k, n, n) float64, and which are finite.

    The forward pass runs on the whole batch, as the study's did, so the pre-activations are the
    study's to the last bit. :math:`J_l = D_l W_l J_{l-1}`, batched over the k inputs, on ``x``'s
    device. A Jacobian is not finite where its input's forward values or the product leave the
    finite floats.
    """
    k = x.shape[0] if k is None else k
    jac: torch.Tensor | None = None
    finite = torch.ones(k, dtype=torch.bool, device=x.device)
    h = x
    with torch.no_grad():
        for block in model.blocks:
            assert isinstance(block, Block)
            whole = block.linear(h)  # (batch, n), the model's dtype: the study's own forward pass
            h = block.activation(whole)
            pre = whole[:k]
            finite &= torch.isfinite(pre).all(dim=1) & torch.isfinite(h[:k]).all(dim=1)
            weight = block.linear.weight.to(torch.float64)  # (n, n)
            slope = derivative(block, pre).unsqueeze(2)  # (K, n, 1): D_l, scaling rows
            jac = slope * weight if jac is None else (weight @ jac).mul_(slope)  # (K, n, n)
    assert jac is not None
    return jac, finite & torch.isfinite(jac).flatten(1).all(dim=1)


def measure(model: MLP, x: torch.Tensor, k: int | None = None) -> Spectrum:
    """The singular values of the Jacobian at the first ``k`` rows of the batch ``x`` (see :func:`jacobians`)."""
    jac, finite = jacobians(model, x, k)
    values = torch.full(jac.shape[:2], math.nan, dtype=torch.float64, device=x.device)
    floors = torch.full(jac.shape[:1], math.nan, dtype=torch.float64, device=x.device)
    if finite.any():  # svdvals raises on NaN/inf: only the defined Jacobians
        values[finite], floors[finite] = resolved(torch.linalg.svdvals(jac[finite]))
    return Spectrum(values.cpu().numpy(), floors.cpu().numpy())


def resolved(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values (..., n), descending, NaN where below ``n * eps * sigma_max``, and that floor (...,).

    That is ``torch.linalg.matrix_rank``'s threshold: below it a singular value of a matrix
    formed in float64 is rounding, not a measurement (see the module docstring). A Jacobian that
    is exactly 0 (floor 0) keeps its zeros: they are exact.
    """
    floor = values.shape[-1] * torch.finfo(values.dtype).eps * values[..., 0]
    kept = torch.where(values >= floor.unsqueeze(-1), values, torch.full_like(values, math.nan))
    return kept, floor


__all__ = ["MAX_FLOPS", "Spectrum", "bytes_needed", "check", "derivative", "flops", "jacobians", "measure", "resolved"]
