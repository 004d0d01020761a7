"""Probes: hooks that record statistics of what every layer outputs, and of the gradients
flowing back through it, as tidy records.

Statistics (:mod:`initlab.statistics`) turn tensors into partial results on their device;
an :class:`Accumulator` collects them from any thread (``nn.DataParallel`` calls forward
hooks, and autograd calls tensor hooks, in replica and device threads) and reads them back
to the host once, after the passes are over.

Large outputs are measured as they come (``k = 1``: the kernels are big, launches are cheap);
small ones are held and measured together after the pass, because for them the cost
is the dozen kernel launches per tensor, not the arithmetic.

A probe is a context manager: its hooks exist only inside the ``with`` block. Each
hook knows its layer by what it was registered for, never by module identity, because
DataParallel calls hooks with a fresh replica as the module.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from initlab.statistics import GRADIENT_OF, Statistic

Value = float | None
Record = dict[str, Any]  # {"layer": int, "site": str, "stat": str, "value": float | None (histogram: counts)}


# ---------------------------------------------------------------- probes


Key = tuple[int, str]  # (layer, site)


#: Outputs with fewer elements than this are held and measured together after the pass...
BATCH_BELOW = 1 << 16
#: ...up to this many elements at a time: the stack and its float64 copies stay small
#: enough to be recycled by the allocator instead of mapped afresh (page faults).
MAX_HELD = 1 << 18


class Accumulator:
    """Partial results per (layer, site), added from any thread, read back once."""

    def __init__(self, statistics: dict[str, list[Statistic]]) -> None:
        self._statistics = statistics
        self._lock = threading.Lock()
        self._parts: dict[Key, list[torch.Tensor]] = defaultdict(list)
        self._sizes: dict[str, list[int]] = {}  # per site: length of each statistic's partial
        self._held: list[tuple[Key, torch.Tensor]] = []
        self._held_elements = 0

    def add(self, key: Key, tensor: torch.Tensor) -> None:
        x = tensor.detach()
        if x.numel() >= BATCH_BELOW:
            self._measure(key[1], [key], x.unsqueeze(0))
            return
        with self._lock:
            self._held.append((key, x))  # outputs are fresh tensors, never changed later
            self._held_elements += x.numel()
            full = self._held_elements >= MAX_HELD
        if full:
            self.flush()

    def flush(self) -> None:
        """Measure the held outputs, one stack per (site, shape, dtype, device)."""
        with self._lock:
            held, self._held, self._held_elements = self._held, [], 0
        groups: dict[tuple[Any, ...], list[tuple[Key, torch.Tensor]]] = defaultdict(list)
        for key, x in held:
            groups[(key[1], x.shape, x.dtype, x.device)].append((key, x))
        for (site, *_), members in groups.items():
            self._measure(site, [key for key, _ in members], torch.stack([x for _, x in members]))

    def _measure(self, site: str, keys: list[Key], stack: torch.Tensor) -> None:
        partials = [stat.partial(stack) for stat in self._statistics[site]]  # each (k, p)
        rows = torch.cat(partials, dim=1)
        with self._lock:
            self._sizes[site] = [p.shape[1] for p in partials]
            for key, row in zip(keys, rows, strict=True):
                self._parts[key].append(row)

    def records(self) -> list[Record]:
        """Merge and finalise every key's partials: one host transfer for all of them."""
        self.flush()
        with self._lock:
            keys = sorted(self._parts)
            parts = [self._parts[key] for key in keys]
        if not keys:
            return []
        device = parts[0][0].device
        flat = torch.cat([p.to(device, non_blocking=True) for group in parts for p in group]).cpu().numpy()
        out: list[Record] = []
        offset = 0
        by_site: dict[str, list[tuple[Key, np.ndarray]]] = defaultdict(list)
        for key, group in zip(keys, parts, strict=True):
            size = sum(p.numel() for p in group)
            by_site[key[1]].append((key, flat[offset : offset + size].reshape(len(group), -1)))
            offset += size
        for site, entries in by_site.items():
            out += self._finalize(site, entries)
        out.sort(key=lambda r: (r["layer"], r["site"]))
        return out

    def _finalize(self, site: str, entries: list[tuple[Key, np.ndarray]]) -> list[Record]:
        """Merge and finalise one site's keys together, vectorised over keys."""
        counts = {len(parts) for _, parts in entries}
        groups = [[e for e in entries if len(e[1]) == c] for c in sorted(counts)]
        out: list[Record] = []
        for group in groups:
            stacked = np.stack([parts for _, parts in group])  # (keys, parts, P)
            start = 0
            columns: dict[str, np.ndarray] = {}
            for stat, size in zip(self._statistics[site], self._sizes[site], strict=True):
                columns |= stat.finalize(stat.merge(stacked[..., start : start + size]))
                start += size
            for i, (key, _) in enumerate(group):
                out += [  # a statistic with a row per key (the histogram) keeps that row
                    {"layer": key[0], "site": site, "stat": name,
                     "value": _value(values[i]) if values.ndim == 1 else values[i]}
                    for name, values in columns.items()
                ]
        return out


def _value(x: float) -> Value:
    return float(x) if math.isfinite(x) else None


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


class GradientProbe:
    """Records statistics of the gradients of module outputs, for forward passes run inside a
    ``with`` block and the backward passes through them.

    Each forward hook attaches a tensor hook to the output it sees (when it takes part in
    autograd); autograd calls that hook with the gradient of the output, in whatever thread
    runs that part of the backward pass, and the gradient is recorded under ``(layer,
    GRADIENT_OF[site])``. Tensor hooks still attached on exit are removed too.
    """

    def __init__(self, targets: Sequence[tuple[int, str, nn.Module]], accumulator: Accumulator) -> None:
        self.targets = list(targets)
        self.accumulator = accumulator
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._lock = threading.Lock()

    def _hook(self, key: Key) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def record(grad: torch.Tensor) -> None:
            self.accumulator.add(key, grad)

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if output.requires_grad:
                handle = output.register_hook(record)  # type: ignore[no-untyped-call]
                with self._lock:
                    self._handles.append(handle)

        return hook

    def __enter__(self) -> GradientProbe:
        try:
            for layer, site, module in self.targets:
                handle = module.register_forward_hook(self._hook((layer, GRADIENT_OF[site])))
                self._handles.append(handle)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this probe registered, forward and tensor hooks (idempotent)."""
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
