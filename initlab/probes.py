"""Probes: hooks that record statistics of what every layer outputs, as tidy records.

A statistic turns a float64 tensor into a small vector of *partial* results on the
tensor's device (counts, moments, maxima), so that several partials of one layer (one
per ``nn.DataParallel`` replica) merge exactly, and nothing is read back to the host
until the forward pass is over. Statistics are looked up by name in :data:`STATISTICS`.

A probe is a context manager: its hooks exist only inside the ``with`` block. Each
hook knows its layer by what it was registered for, never by module identity, because
DataParallel calls hooks with a fresh replica as the module.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab.activations import Activation

Value = float | None
Record = dict[str, Any]  # {"layer": int, "site": str, "stat": str, "value": float | None}


@dataclass(frozen=True)
class Statistic:
    """A statistic computed from partial results that merge exactly across batch slices."""

    name: str
    partial: Callable[[torch.Tensor], torch.Tensor]  # (batch, width) in any dtype -> 1-D float64
    merge: Callable[[np.ndarray], np.ndarray]  # (parts, k) -> (k,)
    finalize: Callable[[np.ndarray], dict[str, Value]]


def _finite(value: float) -> Value:
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------- moments


def _moments_partial(x: torch.Tensor) -> torch.Tensor:
    xd = x.to(torch.float64)
    n = xd.numel()
    mean = xd.mean()
    # Two passes in float64 (mean, then squared deviations): no cancellation, and squares
    # of values near float32's limit stay finite.
    m2 = torch.linalg.vector_norm(xd - mean).square()
    nonfinite = torch.count_nonzero(x - x)  # x - x is 0 where x is finite and NaN elsewhere
    # torch.full, not torch.tensor: a fill kernel, no host-to-device copy.
    return torch.stack([torch.full((), n, dtype=xd.dtype, device=x.device), mean, m2, nonfinite.to(xd.dtype)])


def merge_moments(parts: np.ndarray) -> np.ndarray:
    """Chan et al. (1979): exact count, mean and M2 of the union of disjoint slices."""
    n_i, mean_i, m2_i, bad_i = parts[:, 0], parts[:, 1], parts[:, 2], parts[:, 3]
    n = n_i.sum()
    mean = (n_i * mean_i).sum() / n
    m2 = m2_i.sum() + (n_i * (mean_i - mean) ** 2).sum()
    return np.array([n, mean, m2, bad_i.sum()])


def _moments_final(merged: np.ndarray) -> dict[str, Value]:
    n, mean, m2, nonfinite = merged
    if nonfinite > 0 or n < 2:
        return {"std": None, "mean": None, "nonfinite": float(nonfinite)}
    # Unbiased, like torch.Tensor.std(): the number a hand-written script prints.
    return {"std": _finite(math.sqrt(m2 / (n - 1))), "mean": _finite(mean), "nonfinite": 0.0}


MOMENTS = Statistic("moments", _moments_partial, merge_moments, _moments_final)


# ---------------------------------------------------------------- max |x|


def _absmax_partial(x: torch.Tensor) -> torch.Tensor:
    low, high = torch.aminmax(x)  # one pass, no |x| copy; NaN propagates
    return torch.maximum(-low, high).to(torch.float64).reshape(1)


ABSMAX = Statistic(
    "absmax",
    _absmax_partial,
    lambda parts: parts.max(axis=0),
    lambda merged: {"absmax": _finite(merged[0])},
)


# ---------------------------------------------------------------- saturation and dead units


def saturation(low: float, high: float, margin: float) -> Statistic:
    """Fraction of outputs within ``margin`` of a bounded activation's range edges."""

    centre, reach = (low + high) / 2, (high - low) / 2 - margin

    def partial(x: torch.Tensor) -> torch.Tensor:
        hits = torch.count_nonzero((x if centre == 0 else x - centre).abs() >= reach)
        return torch.stack([hits, torch.full((), x.numel(), dtype=hits.dtype, device=x.device)]).to(torch.float64)

    return Statistic(
        "saturated",
        partial,
        lambda parts: parts.sum(axis=0),
        lambda merged: {"saturated": float(merged[0] / merged[1])},
    )


def _zeros_partial(x: torch.Tensor) -> torch.Tensor:
    nonzero = torch.count_nonzero(x, dim=0)  # per unit (column)
    rows = torch.full((1,), x.shape[0], dtype=nonzero.dtype, device=x.device)
    return torch.cat([rows, nonzero]).to(torch.float64)


def _zeros_final(merged: np.ndarray) -> dict[str, Value]:
    rows, nonzero = merged[0], merged[1:]
    return {"zero": float(1 - nonzero.sum() / (rows * nonzero.size)), "dead": float((nonzero == 0).mean())}


ZEROS = Statistic("zeros", _zeros_partial, lambda parts: parts.sum(axis=0), _zeros_final)


#: Statistics by name; each factory returns None where the statistic means nothing.
STATISTICS: dict[str, Callable[[Activation], Statistic | None]] = {
    "moments": lambda act: MOMENTS,
    "absmax": lambda act: ABSMAX,
    "saturated": lambda act: saturation(*act.saturation) if act.saturation else None,
    "zeros": lambda act: ZEROS if act.zeros_negative else None,
}
#: Which statistics each site records by default.
SITE_STATISTICS: dict[str, tuple[str, ...]] = {
    "pre": ("moments", "absmax"),
    "post": ("moments", "absmax", "saturated", "zeros"),
}


def statistics_for(site: str, activation: Activation, names: Sequence[str] | None = None) -> list[Statistic]:
    """The applicable statistics of ``site``, looked up by name."""
    chosen = SITE_STATISTICS[site] if names is None else names
    found = (STATISTICS[name](activation) for name in chosen)
    return [stat for stat in found if stat is not None]


# ---------------------------------------------------------------- probes


Key = tuple[int, str]  # (layer, site)


class Accumulator:
    """Partial results per (layer, site), appended from any thread, read back once."""

    def __init__(self, statistics: dict[str, list[Statistic]]) -> None:
        self._statistics = statistics
        self._lock = threading.Lock()
        self._parts: dict[Key, list[torch.Tensor]] = defaultdict(list)
        self._sizes: dict[Key, list[int]] = {}  # length of each statistic's partial

    def add(self, key: Key, tensor: torch.Tensor) -> None:
        x = tensor.detach()
        partials = [stat.partial(x) for stat in self._statistics[key[1]]]
        part = torch.cat(partials)
        with self._lock:
            self._sizes[key] = [p.numel() for p in partials]
            self._parts[key].append(part)

    def records(self) -> list[Record]:
        """Merge and finalise every key's partials: one host transfer for all of them."""
        with self._lock:
            items = [(key, part) for key, parts in self._parts.items() for part in parts]
        if not items:
            return []
        device = items[0][1].device
        flat = torch.cat([part.to(device, non_blocking=True) for _, part in items]).cpu().numpy()
        grouped: dict[Key, list[np.ndarray]] = defaultdict(list)
        offset = 0
        for key, part in items:
            grouped[key].append(flat[offset : offset + part.numel()])
            offset += part.numel()
        out: list[Record] = []
        for (layer, site), parts in sorted(grouped.items()):
            out += self._finalize(layer, site, np.stack(parts))
        return out

    def _finalize(self, layer: int, site: str, parts: np.ndarray) -> list[Record]:
        out: list[Record] = []
        start = 0
        for stat, size in zip(self._statistics[site], self._sizes[(layer, site)], strict=True):
            merged = stat.merge(parts[:, start : start + size])
            start += size
            out += [
                {"layer": layer, "site": site, "stat": name, "value": value}
                for name, value in stat.finalize(merged).items()
            ]
        return out


class ForwardProbe:
    """Records statistics of module outputs during forward passes inside a ``with`` block.

    ``targets`` are ``(layer, site, module)``; the hook for each is bound to its
    ``(layer, site)``, so replicas and re-created modules are recorded under the layer
    they stand for.
    """

    def __init__(
        self, targets: Sequence[tuple[int, str, nn.Module]], statistics: dict[str, list[Statistic]]
    ) -> None:
        self.targets = list(targets)
        self.accumulator = Accumulator(statistics)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, key: Key) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.accumulator.add(key, output)

        return hook

    def __enter__(self) -> ForwardProbe:
        try:
            for layer, site, module in self.targets:
                self._handles.append(module.register_forward_hook(self._hook((layer, site))))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this probe registered (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def records(self) -> list[Record]:
        """Tidy records of everything recorded so far."""
        return self.accumulator.records()
