"""Statistics of tensors as mergeable partial results, looked up by name in :data:`STATISTICS`.

A statistic turns tensors into small vectors of *partial* results on their device
(counts, float64 moments, maxima), so that several partials of one layer (one per
``nn.DataParallel`` replica, or one per slice of a batch) merge exactly, and nothing is
read back to the host until a pass is over. Statistics work on a stack of same-shaped
tensors at once, ``(k, rows, width)``.

Which statistics each *site* (a place in the network: a block's pre-activation, its output,
its weights, and the gradients of each) records is declared in :data:`SITE_STATISTICS`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from initlab.activations import Activation


@dataclass(frozen=True)
class Statistic:
    """A statistic computed from partial results that merge exactly across batch slices."""

    name: str
    partial: Callable[[torch.Tensor], torch.Tensor]  # (k, rows, width), any dtype -> (k, p) float64
    merge: Callable[[np.ndarray], np.ndarray]  # (keys, parts, p) -> (keys, p)
    # (keys, p) -> name: (keys,) with NaN = undefined, or (keys, bins) for a histogram
    finalize: Callable[[np.ndarray], dict[str, np.ndarray]]


def _rowwise(
    reduce: Callable[..., Any], flat: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``reduce`` over each row of ``flat`` (k, n), keeping a (k, 1) shape.

    A single row is reduced whole: torch's full reductions are several times faster than
    the same reduction along a dimension of a (1, n) tensor.
    """
    if flat.shape[0] == 1:
        out = reduce(flat, *args, **kwargs)
        return tuple(o.reshape(1, 1) for o in out) if isinstance(out, tuple) else out.reshape(1, 1)
    out = reduce(flat, *args, dim=1, **kwargs)
    return tuple(o.unsqueeze(1) for o in out) if isinstance(out, tuple) else out.unsqueeze(1)


_SCRATCH = threading.local()
#: Largest scratch buffer kept between calls, in elements (64 MiB of float64).
_SCRATCH_MAX = 1 << 23


def _scratch(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor shaped like ``like`` to compute into, reused between calls on the CPU.

    A fresh tensor of a few MiB comes from the kernel as untouched pages, and faulting them in
    costs as much as the arithmetic: kept per thread and dtype (statistics run in replica threads),
    the same pages are reused layer after layer. Never returned by a statistic: its results are
    reductions of it.
    """
    if like.device.type != "cpu" or like.numel() > _SCRATCH_MAX:
        return torch.empty(like.shape, dtype=dtype, device=like.device)
    pool: dict[torch.dtype, torch.Tensor] = _SCRATCH.__dict__.setdefault("pool", {})
    buffer = pool.get(dtype)
    if buffer is None or buffer.numel() < like.numel():
        buffer = pool[dtype] = torch.empty(like.numel(), dtype=dtype)
    return buffer[: like.numel()].view(like.shape)


def _count(x: torch.Tensor, value: int) -> torch.Tensor:
    # torch.full, not torch.tensor: a fill kernel, no host-to-device copy.
    return torch.full((x.shape[0], 1), value, dtype=torch.float64, device=x.device)


# ---------------------------------------------------------------- moments


def _moments_partial(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    xd = _scratch(flat, torch.float64).copy_(flat)  # our own copy: centred in place below
    mean = _rowwise(torch.mean, xd)
    assert isinstance(mean, torch.Tensor)
    m2 = _m2_one_pass(xd, mean) if xd.device.type == "cpu" else None
    if m2 is None:
        # Two passes in float64 (mean, then squared deviations): no cancellation, and squares
        # of values near float32's limit stay finite.
        norm = _rowwise(torch.linalg.vector_norm, xd.sub_(mean))
        assert isinstance(norm, torch.Tensor)
        m2 = norm.square()
    return torch.cat([_count(x, flat.shape[1]), mean, m2, _nonfinite(flat, mean)], dim=1)


#: The one-pass M2 = S2 - n mean^2 is kept where M2 >= this fraction of S2 (the mean at most
#: ~10 stds from 0): its relative error is then at most ~1/this x that of S2's cascade sum
#: (~1e-15), far below the 1e-12 the statistics promise.
_ONE_PASS_FLOOR = 0.01


def _m2_one_pass(xd: torch.Tensor, mean: torch.Tensor) -> torch.Tensor | None:
    """Sum of squared deviations of each float64 row from S2 - n mean^2, one pass instead of two
    (a CPU is memory-bound here: the second pass and the in-place centring cost as much as the
    rest); None where cancellation could cost precision or anything is non-finite (then two passes)."""
    squares = _rowwise(torch.linalg.vector_norm, xd)
    assert isinstance(squares, torch.Tensor)
    s2 = squares.square()
    m2 = s2 - xd.shape[1] * mean * mean
    if not bool(torch.isfinite(s2).all()) or bool((m2 < _ONE_PASS_FLOOR * s2).any()):
        return None
    return m2


def _nonfinite(flat: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Non-finite values per row of ``flat``, (k, 1) float64.

    A float64 mean of float32 values is finite exactly when every value is (the sum cannot
    overflow), so on the CPU, where reading it costs nothing, rows with a finite mean skip
    the counting pass; on a GPU the count is always taken, as reading would synchronise.
    """
    if flat.device.type == "cpu" and bool(torch.isfinite(mean).all()):
        return torch.zeros_like(mean)
    counted = _rowwise(torch.count_nonzero, flat - flat)  # x - x: 0 where x is finite, NaN elsewhere
    assert isinstance(counted, torch.Tensor)
    return counted.to(torch.float64)


def merge_moments(parts: np.ndarray) -> np.ndarray:
    """Chan et al. (1979): exact count, mean and M2 of the union of disjoint slices."""
    n_i, mean_i, m2_i, bad_i = (parts[..., j] for j in range(4))  # each (keys, parts)
    n = n_i.sum(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite slices: reported as such
        mean = (n_i * mean_i).sum(axis=1) / n
        m2 = m2_i.sum(axis=1) + (n_i * (mean_i - mean[:, None]) ** 2).sum(axis=1)
    return np.stack([n, mean, m2, bad_i.sum(axis=1)], axis=1)


def _moments_final(merged: np.ndarray) -> dict[str, np.ndarray]:
    n, mean, m2, nonfinite = merged.T
    defined = (nonfinite == 0) & (n >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Unbiased, like torch.Tensor.std(): the number a hand-written script prints.
        std = np.sqrt(m2 / (n - 1))
    return {"std": np.where(defined, std, np.nan), "mean": np.where(defined, mean, np.nan), "nonfinite": nonfinite}


MOMENTS = Statistic("moments", _moments_partial, merge_moments, _moments_final)


def _gradient_moments_final(merged: np.ndarray) -> dict[str, np.ndarray]:
    n, mean, m2, nonfinite = merged.T
    out = _moments_final(merged)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # Root mean square: what the mean-field theory's second moment predicts, and defined for
        # a constant gradient (``upstream: ones``) whose std is 0.
        rms = np.sqrt((m2 + n * mean * mean) / n)
    return {**out, "rms": np.where((nonfinite == 0) & (n >= 1), rms, np.nan)}


#: :data:`MOMENTS` and the root mean square, for gradients.
GRADIENT_MOMENTS = Statistic("moments", _moments_partial, merge_moments, _gradient_moments_final)


def _weight_moments_partial(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    if flat.device.type == "cpu" and flat.dtype == torch.float32 and flat.numel() <= _SCRATCH_MAX:
        # The float64 copy goes to the reused scratch buffer: no temporary per layer, and torch's
        # reductions use every core where numpy's casting reductions use one (2x on 2 cores). A
        # float64 sum of float32 values below 2**29 of them is exact for a constant: its std is 0.
        return _moments_partial(x)
    # One pass over the tensor and no float64 copy of it: the float64 sum and sum of
    # squares (a float32 square is exact in float64). On the CPU numpy casts in small
    # buffers, so no tensor-sized temporary is allocated at all: a thousand layers'
    # temporaries would otherwise fragment the heap that holds the weights.
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        rows = flat.numpy()
        with np.errstate(invalid="ignore", over="ignore"):  # gradients of an overflowed pass: counted below
            sums = np.array([[np.add.reduce(row, dtype=np.float64),
                              np.einsum("i,i->", row, row, dtype=np.float64, casting="safe")] for row in rows])
        total, squares = (torch.from_numpy(sums[:, j : j + 1]) for j in range(2))
        nonfinite = torch.from_numpy(
            np.array([[0.0 if np.isfinite(s) else float(np.count_nonzero(~np.isfinite(r)))]
                      for s, r in zip(sums[:, 1], rows, strict=True)])
        )
    else:
        total_, norm_, bad_ = (
            _rowwise(torch.sum, flat, dtype=torch.float64),
            _rowwise(torch.linalg.vector_norm, flat, dtype=torch.float64),
            _rowwise(torch.count_nonzero, flat - flat),
        )
        assert isinstance(total_, torch.Tensor) and isinstance(norm_, torch.Tensor) and isinstance(bad_, torch.Tensor)
        total, squares, nonfinite = total_, norm_.square(), bad_.to(torch.float64)
    # M2 = S2 - S1^2/n cancels only where the std is below the float32 resolution of the
    # mean; there it is rounding noise, reported as 0.
    m2 = squares - total * (total / n)
    m2 = torch.where(m2 <= _NOISE * squares, torch.zeros_like(m2), m2)
    return torch.cat([_count(x, n), total / n, m2, nonfinite], dim=1)


#: Relative rounding of a float64 pairwise sum of up to 2^64 terms, with margin.
_NOISE = 64 * float(np.finfo(np.float64).eps)


#: Moments of weights: one pass and no float64 copy, cheaper than :data:`MOMENTS` for the
#: many weight matrices of a sweep; for tensors far from float32's limit (M2 needs their
#: squares' sum to stay finite) and whose std is not below their mean's resolution.
WEIGHT_MOMENTS = Statistic("moments", _weight_moments_partial, merge_moments, _moments_final)


# ---------------------------------------------------------------- max |x|


def _absmax_partial(x: torch.Tensor) -> torch.Tensor:
    low, high = _rowwise(torch.aminmax, x.reshape(x.shape[0], -1))  # one pass, no |x| copy; NaN propagates
    return torch.maximum(-low, high).to(torch.float64)


ABSMAX = Statistic(
    "absmax",
    _absmax_partial,
    lambda parts: parts.max(axis=1),
    lambda merged: {"absmax": merged[:, 0]},
)


# ---------------------------------------------------------------- saturation and dead units


def saturation(low: float, high: float, margin: float) -> Statistic:
    """Fraction of outputs within ``margin`` of a bounded activation's range edges."""
    centre, reach = (low + high) / 2, (high - low) / 2 - margin

    def partial(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        away = torch.abs(flat if centre == 0 else flat - centre, out=_scratch(flat, flat.dtype))
        hits = _rowwise(torch.count_nonzero, torch.ge(away, reach, out=_scratch(flat, torch.bool)))
        assert isinstance(hits, torch.Tensor)
        return torch.cat([hits.to(torch.float64), _count(x, flat.shape[1])], dim=1)

    return Statistic(
        "saturated",
        partial,
        lambda parts: parts.sum(axis=1),
        lambda merged: {"saturated": merged[:, 0] / merged[:, 1]},
    )


def _zeros_partial(x: torch.Tensor) -> torch.Tensor:
    nonzero = torch.count_nonzero(x, dim=1)  # (k, width): per unit, over the rows
    return torch.cat([_count(x, x.shape[1]), nonzero.to(torch.float64)], dim=1)


def _zeros_final(merged: np.ndarray) -> dict[str, np.ndarray]:
    rows, nonzero = merged[:, 0], merged[:, 1:]
    units = nonzero.shape[1]
    return {"zero": 1 - nonzero.sum(axis=1) / (rows * units), "dead": (nonzero == 0).mean(axis=1)}


ZEROS = Statistic("zeros", _zeros_partial, lambda parts: parts.sum(axis=1), _zeros_final)


# ---------------------------------------------------------------- histogram of magnitudes


#: Bins of :data:`HISTOGRAM`, fixed so that partials merge by addition and both a vanishing
#: and an exploding signal stay in range: bin e is float32's exponent field of |x|, so bin 0
#: is |x| < 2**-126 (0, or below float32's normal range), bin e in 1..254 is
#: 2**(e-127) <= |x| < 2**(e-126), and bin 255 holds non-finite values (inf, NaN).
HISTOGRAM_BINS = 256
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def histogram_edges() -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of every bin of :data:`HISTOGRAM`; NaN for the non-finite bin."""
    exponents = np.arange(HISTOGRAM_BINS, dtype=np.float64) - 127
    low, high = np.exp2(exponents), np.exp2(exponents + 1)
    low[0] = 0.0
    low[-1] = high[-1] = np.nan
    return low, high


def _as_float32(flat: torch.Tensor) -> torch.Tensor:
    """``flat`` in float32 with every finite magnitude in float32's range (exact for half types)."""
    if flat.dtype == torch.float64:  # beyond float32's range: the first or last finite bin, not inf
        flat = torch.where(flat.isinf(), flat, flat.clamp(-_FLOAT32_MAX, _FLOAT32_MAX))
    return flat.to(torch.float32)


def _histogram_partial(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    if flat.dtype != torch.float32:
        flat = _as_float32(flat)
    counts = _counts(flat)  # torch's bincount: 2-4x numpy's on a CPU at 2**16 to 2**22 values (torch 2.13)
    return counts.reshape(flat.shape[0], HISTOGRAM_BINS)  # counts are exact in float64 up to 2**53


def _counts(flat: torch.Tensor) -> torch.Tensor:
    """Bin counts of each row of a float32 ``flat`` (k, n), flattened to (k * bins,), on its device."""
    codes = torch.bitwise_and(flat.view(torch.int32), 0x7FFFFFFF, out=_scratch(flat, torch.int32))
    codes.bitwise_right_shift_(23)
    if flat.shape[0] > 1:
        codes += torch.arange(flat.shape[0], dtype=torch.int32, device=flat.device)[:, None] * HISTOGRAM_BINS
    return torch.bincount(codes.reshape(-1), minlength=flat.shape[0] * HISTOGRAM_BINS).to(torch.float64)


#: Counts of |x| by power of two (:data:`HISTOGRAM_BINS`): the "colorful dimension" view of a
#: signal through the layers. One row of counts per key; merging adds the counts.
HISTOGRAM = Statistic(
    "histogram", _histogram_partial, lambda parts: parts.sum(axis=1), lambda merged: {"histogram": merged}
)


#: Statistics by name; each factory returns None where the statistic means nothing.
STATISTICS: dict[str, Callable[[Activation], Statistic | None]] = {
    "moments": lambda act: MOMENTS,
    "gradient_moments": lambda act: GRADIENT_MOMENTS,
    "weight_moments": lambda act: WEIGHT_MOMENTS,
    "absmax": lambda act: ABSMAX,
    "saturated": lambda act: saturation(*act.saturation) if act.saturation else None,
    "zeros": lambda act: ZEROS if act.zeros_negative else None,
    "histogram": lambda act: HISTOGRAM,
}
#: Which statistics each site records by default: a block's pre-activation (its Linear's
#: output), its output (post), its weights, and the gradients of the three.
SITE_STATISTICS: dict[str, tuple[str, ...]] = {
    "pre": ("moments", "absmax"),
    "post": ("moments", "absmax", "saturated", "zeros"),
    "weight": ("weight_moments",),
    "pre_grad": ("gradient_moments", "absmax"),
    "grad": ("gradient_moments", "absmax"),
    "weight_grad": ("weight_moments",),
}
#: The site that holds the gradient of each forward site.
GRADIENT_OF: dict[str, str] = {"pre": "pre_grad", "post": "grad", "weight": "weight_grad"}


def statistics_for(site: str, activation: Activation, names: Sequence[str] | None = None) -> list[Statistic]:
    """The applicable statistics of ``site``, looked up by name."""
    chosen = SITE_STATISTICS[site] if names is None else names
    found = (STATISTICS[name](activation) for name in chosen)
    return [stat for stat in found if stat is not None]
