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

import math
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


def _moments_partial(x: torch.Tensor, absmax: bool = False) -> torch.Tensor:
    """Count, mean, M2 and non-finite count of each row of ``x`` (k, 4), and max |x| as a fifth column
    when ``absmax`` (taken in the same pass on the CPU: each slice is read from memory once for both)."""
    flat = x.reshape(x.shape[0], -1)
    if flat.device.type != "cpu":
        two_pass = _moments_two_pass(flat)
        return torch.cat([two_pass, _absmax_partial(flat)], dim=1) if absmax else two_pass
    # On the CPU reading a sum back costs nothing: the per-row arithmetic is done on the host, in
    # numpy, instead of a dozen tiny tensor operations each costing more than a slice's sum.
    n = flat.shape[1]
    s1, s2, *extremes = _slice_pass(flat, absmax=absmax)
    mean = s1 / n
    with np.errstate(invalid="ignore", over="ignore"):
        m2 = s2 - n * mean * mean
        # The one-pass M2 = S2 - n mean^2 is kept where M2 >= _ONE_PASS_FLOOR x S2 (the mean at
        # most ~10 stds from 0); elsewhere, or where anything is non-finite, a second pass.
        redo = ~np.isfinite(s2) | (m2 < _ONE_PASS_FLOOR * s2)
    if redo.any():
        m2 = np.where(redo, _slice_pass(flat, centre=mean)[1], m2)
    # A float64 mean of float32 values is finite exactly when every value is (the sum cannot
    # overflow): only rows with a non-finite mean need their non-finite values counted.
    bad = np.zeros_like(mean) if np.isfinite(mean).all() else _nonfinite(flat).cpu().numpy()[:, 0]
    return torch.from_numpy(np.stack([np.full_like(mean, n), mean, m2, bad, *extremes], axis=1))


def _moments_two_pass(flat: torch.Tensor) -> torch.Tensor:
    """Moments in two float64 passes (mean, then squared deviations), reading nothing back (on a
    GPU a read would synchronise): no cancellation, and squares near float32's limit stay finite."""
    xd = flat.to(torch.float64, copy=True)  # our own: centred in place
    mean = xd.mean(dim=1, keepdim=True)
    m2 = xd.sub_(mean).square_().sum(dim=1, keepdim=True)
    return torch.cat([_count(flat, flat.shape[1]), mean, m2, _nonfinite(flat)], dim=1)


#: The relative error of the one-pass M2 is at most ~1/this x that of S2's sum (~1e-15), far
#: below the 1e-12 the statistics promise.
_ONE_PASS_FLOOR = 0.01
#: On the CPU, float64 sums are taken slice by slice: each slice of this many elements is cast
#: into a scratch buffer small enough to stay in cache for the passes over it (2 MiB of float64).
_SLICE = 1 << 18


def _slice_pass(flat: torch.Tensor, centre: np.ndarray | None = None, absmax: bool = False) -> np.ndarray:
    """Float64 sum and sum of squares of each row of a CPU ``flat`` (k, n), of its values minus
    ``centre`` (k,) when given (the second pass of the two-pass M2), and max |x| when ``absmax``:
    (2 or 3, k), one pass over ``flat`` in cache-sized slices."""
    k = flat.shape[0]
    # A single row is cut into 1-D slices: torch's full reductions beat reductions along a dimension.
    parts = torch.split(flat.reshape(-1), _SLICE) if k == 1 else torch.split(flat, max(1, _SLICE // k), dim=1)
    shift = None if centre is None else torch.from_numpy(centre if k == 1 else centre[:, None])
    buffer = _scratch(parts[0], torch.float64)
    out = np.zeros((3 if absmax else 2, len(parts), k))
    for i, part in enumerate(parts):
        if absmax:  # the slice comes from memory here; the copy below reads it from the cache
            out[2, i] = _absmax(part)
        xd = buffer[: part.shape[0]] if k == 1 else buffer[:, : part.shape[1]]
        xd.copy_(part)
        if shift is not None:
            xd.sub_(shift)
        out[0, i] = _total(xd)
        out[1, i] = _total(xd.mul_(xd))  # a float32 value's square is exact in float64
    return np.concatenate([out[:2].sum(axis=1), out[2:].max(axis=1)])  # NaN propagates


def _absmax_partial(x: torch.Tensor) -> torch.Tensor:
    """(k, 1) max |x| of each row, on the device (the GPU path); NaN propagates."""
    low, high = _rowwise(torch.aminmax, x.reshape(x.shape[0], -1))  # one pass, no |x| copy; NaN propagates
    return torch.maximum(-low, high).to(torch.float64)


def _total(xd: torch.Tensor) -> float | np.ndarray:
    """Sum of a 1-D tensor, or of each row of a 2-D one, on the host."""
    return float(xd.sum()) if xd.dim() == 1 else xd.sum(dim=1).numpy()


def _absmax(part: torch.Tensor) -> float | np.ndarray:
    """Max |x| of a 1-D tensor, or of each row of a 2-D one, on the host; NaN propagates."""
    if part.dim() == 1:
        low, high = (float(v) for v in torch.aminmax(part))
        return max(-low, high) if low == low and high == high else math.nan
    lows, highs = torch.aminmax(part, dim=1)
    out: np.ndarray = np.maximum(-lows.double().numpy(), highs.double().numpy())
    return out


def _nonfinite(flat: torch.Tensor) -> torch.Tensor:
    """Non-finite values per row of ``flat``, (k, 1) float64."""
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


def _merge_with_absmax(parts: np.ndarray) -> np.ndarray:
    return np.concatenate([merge_moments(parts[..., :4]), parts[..., 4].max(axis=1)[:, None]], axis=1)  # NaN propagates


def _with_absmax(final: Callable[[np.ndarray], dict[str, np.ndarray]]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    return lambda merged: {**final(merged[:, :4]), "absmax": merged[:, 4]}


def _signal_moments(final: Callable[[np.ndarray], dict[str, np.ndarray]]) -> Statistic:
    """Moments and max |x| of a signal, one statistic: on the CPU both come from one pass over it."""
    return Statistic("moments", lambda x: _moments_partial(x, absmax=True), _merge_with_absmax, _with_absmax(final))


#: Count, mean, std, non-finite count and max |x| of a signal.
MOMENTS = _signal_moments(_moments_final)


def _gradient_moments_final(merged: np.ndarray) -> dict[str, np.ndarray]:
    n, mean, m2, nonfinite = merged.T
    out = _moments_final(merged)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # Root mean square: what the mean-field theory's second moment predicts, and defined for
        # a constant gradient (``upstream: ones``) whose std is 0.
        rms = np.sqrt((m2 + n * mean * mean) / n)
    return {**out, "rms": np.where((nonfinite == 0) & (n >= 1), rms, np.nan)}


#: :data:`MOMENTS` and the root mean square, for gradients.
GRADIENT_MOMENTS = _signal_moments(_gradient_moments_final)


def _weight_moments_partial(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu":
        # Slice by slice in a small scratch buffer: no tensor-sized temporary, which for a thousand
        # layers' weights would fragment the heap that holds them.
        out = _moments_partial(x)
        count, mean, spread = out[:, 0], out[:, 1], out[:, 2]
        spread[spread <= _NOISE * (spread + count * mean * mean)] = 0.0  # a constant's rounding noise, as below
        return out
    # One pass and no float64 copy: the float64 sum and sum of squares (a float32 square is exact
    # in float64), reading nothing back.
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
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


#: Moments of weights: :data:`MOMENTS` on the CPU; on a GPU one pass and no float64 copy, for
#: tensors far from float32's limit (M2 needs their squares' sum to stay finite) and whose std
#: is not below their mean's resolution.
WEIGHT_MOMENTS = Statistic("moments", _weight_moments_partial, merge_moments, _moments_final)


# ---------------------------------------------------------------- saturation and dead units


def saturation(low: float, high: float, margin: float) -> Statistic:
    """Fraction of outputs within ``margin`` of a bounded activation's range edges."""
    centre, reach = (low + high) / 2, (high - low) / 2 - margin

    def partial(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        away = _scratch(flat, flat.dtype)
        away = torch.abs(flat, out=away) if centre == 0 else torch.sub(flat, centre, out=away).abs_()
        hits = away.ge_(reach)  # 1 where saturated, 0 elsewhere, in place: no boolean tensor
        # Counts of ones are exact in a float32 or float64 sum below 2**24 (float32's integers).
        exact = flat.dtype in (torch.float32, torch.float64) and flat.shape[1] < 1 << 24
        counted = _rowwise(torch.sum if exact else torch.count_nonzero, hits)
        assert isinstance(counted, torch.Tensor)
        return torch.cat([counted.to(torch.float64), _count(x, flat.shape[1])], dim=1)

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
    # The arithmetic shift keeps the sign: -256 + e for negative values, e for the others. Counting
    # the two signs apart and adding them is faster than clearing the sign first: half as many
    # increments of one counter follow each other, and the counting loop is bound by them.
    codes = torch.bitwise_right_shift(flat.view(torch.int32), 23, out=_scratch(flat, torch.int32))
    rows = flat.shape[0]
    if rows > 1:
        codes += torch.arange(rows, dtype=torch.int32, device=flat.device)[:, None] * (2 * HISTOGRAM_BINS)
    codes += HISTOGRAM_BINS
    counts = torch.bincount(codes.reshape(-1), minlength=rows * 2 * HISTOGRAM_BINS)
    return counts.view(rows, 2, HISTOGRAM_BINS).sum(dim=1).reshape(-1).to(torch.float64)


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
    "saturated": lambda act: saturation(*act.saturation) if act.saturation else None,
    "zeros": lambda act: ZEROS if act.zeros_negative else None,
    "histogram": lambda act: HISTOGRAM,
}
#: Which statistics each site records by default: a block's pre-activation (its Linear's
#: output), its output (post), its weights, the gradients of the three; a norm's output (normed)
#: and a residual block's branch (before α). A residual block's output is a sum, not an
#: activation's: it records :data:`RESIDUAL_POST` (its branch says what saturates or dies).
SITE_STATISTICS: dict[str, tuple[str, ...]] = {
    "pre": ("moments",),
    "post": ("moments", "saturated", "zeros"),
    "weight": ("weight_moments",),
    "normed": ("moments",),
    "branch": ("moments", "saturated", "zeros"),
    "pre_grad": ("gradient_moments",),
    "grad": ("gradient_moments",),
    "weight_grad": ("weight_moments",),
}
RESIDUAL_POST: tuple[str, ...] = ("moments",)
#: The site that holds the gradient of each forward site.
GRADIENT_OF: dict[str, str] = {"pre": "pre_grad", "post": "grad", "weight": "weight_grad"}


def statistics_for(site: str, activation: Activation, names: Sequence[str] | None = None) -> list[Statistic]:
    """The applicable statistics of ``site``, looked up by name."""
    chosen = SITE_STATISTICS[site] if names is None else names
    found = (STATISTICS[name](activation) for name in chosen)
    return [stat for stat in found if stat is not None]
