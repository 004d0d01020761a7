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
from typing import Any, TypeVar

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
        self.statistics = statistics
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
        partials = [stat.partial(stack) for stat in self.statistics[site]]  # each (k, p)
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
            for stat, size in zip(self.statistics[site], self._sizes[site], strict=True):
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


Hook = Callable[[nn.Module, Any, torch.Tensor], None]
Target = tuple[int, str, nn.Module]
_P = TypeVar("_P", bound="_Probe")


class _Probe:
    """What both probes share: a forward hook per target, bound to its ``(layer, site)`` (so replicas and
    re-created modules are recorded under the layer they stand for), registered on entering the
    ``with`` block and removed on leaving it, whatever happens inside. Subclasses say what a hook does.
    """

    def __init__(self, targets: Sequence[Target], accumulator: Accumulator) -> None:
        self.targets = list(targets)
        self.accumulator = accumulator
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._lock = threading.Lock()  # hooks may add handles from replica threads

    def _hook(self, layer: int, site: str) -> Hook:
        raise NotImplementedError

    def _keep(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        with self._lock:
            self._handles.append(handle)

    def __enter__(self: _P) -> _P:
        try:
            for layer, site, module in self.targets:
                self._keep(module.register_forward_hook(self._hook(layer, site)))
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
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()


class ForwardProbe(_Probe):
    """Records statistics of module outputs during forward passes inside a ``with`` block.

    ``targets`` are ``(layer, site, module)``; each output is recorded under ``(layer, site)``.
    """

    def __init__(
        self, targets: Sequence[Target], statistics: dict[str, list[Statistic]], into: Accumulator | None = None
    ) -> None:
        """``into``: record into this accumulator (one shared by several probes) instead of a new one."""
        super().__init__(targets, into if into is not None else Accumulator(statistics))

    def _hook(self, layer: int, site: str) -> Hook:
        key = (layer, site)

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.accumulator.add(key, output)

        return hook

    def records(self) -> list[Record]:
        """Tidy records of everything recorded so far."""
        return self.accumulator.records()


class GradientProbe(_Probe):
    """Records statistics of the gradients of module outputs, for forward passes run inside a
    ``with`` block and the backward passes through them.

    Each forward hook attaches a tensor hook to the output it sees (when it takes part in
    autograd); autograd calls that hook with the gradient of the output, in whatever thread
    runs that part of the backward pass, and the gradient is recorded under ``(layer,
    GRADIENT_OF[site])`` of the ``accumulator`` given (a :class:`ForwardProbe`'s, so that both
    directions come back in one transfer). Tensor hooks still attached on exit are removed too.
    Targets at sites without a gradient site (the norm's and the residual branch's outputs) are left out.
    """

    def __init__(self, targets: Sequence[Target], accumulator: Accumulator) -> None:
        super().__init__([t for t in targets if t[1] in GRADIENT_OF], accumulator)

    def _hook(self, layer: int, site: str) -> Hook:
        key = (layer, GRADIENT_OF[site])

        def record(grad: torch.Tensor) -> None:
            self.accumulator.add(key, grad)

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if output.requires_grad:
                self._keep(output.register_hook(record))  # type: ignore[no-untyped-call]

        return hook
