"""Depth in bounded memory: the study run block by block (``memory: stream``).

The reference contract fixes the generator stream (:mod:`initlab.model`): every block's construction-time
draws, then every block's scheme draws, then the input. A block cannot run before the input exists, and the
input comes after every weight, so the stream is walked twice. The first walk draws every weight into one
reused buffer, keeping the generator's state where each block's draws begin (5 KiB per state for the CPU's
mt19937, 16 bytes on CUDA) and recording the weights' statistics, then draws the input. The second walk
restores each block's states, draws the block again exactly as the in-memory model holds it, runs it,
records it and frees it. Memory: one block's weights plus the batch, whatever the depth; time: every weight
is drawn twice (three times with a backward pass).

Backward: each block's input is kept during the forward walk (``depth × batch × width`` values, one tensor per
block where autograd keeps two), and the blocks are recomputed from the last to the first, each drawn again,
fed its output's gradient, passing its input's gradient down: the kernels of a backward pass through the whole
model, in its order, so the same numbers.

Statistics of small tensors are measured in stacks whose size changes their last bits, so the accumulator is
fed in exactly the in-memory run's order: weights, input, the forward signal, the gradients from the last block
down, then the weights' gradients from the first block up (those under :data:`~initlab.probes.BATCH_BELOW`
values are kept until then; larger ones are measured alone, in any order).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from initlab.config import Config
from initlab.devices import DTYPES, Placement
from initlab.model import MLP, Linear, draw_input, keeps_construction, make_block, probe_targets
from initlab.probes import BATCH_BELOW, Accumulator, ForwardProbe, GradientProbe, Record, Target
from initlab.schemes import linear_default_
from initlab.statistics import Statistic
from initlab.upstream import draw_upstream, upstream_gradient


@dataclass(frozen=True)
class Replay:
    """The generator's state where each block's draws begin: its construction draws (only for blocks that
    keep them, under the ``default`` scheme) and its scheme draws."""

    construction: list[torch.Tensor | None]
    scheme: list[torch.Tensor]


class _Setting:
    """What every block of a streamed run shares, and the one block every block is drawn into in turn (so a
    deep run allocates no weights per block: freed and re-allocated, they would fragment the heap)."""

    def __init__(self, config: Config, generator: torch.Generator, draw_dtype: torch.dtype, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.config = config
        self.generator = generator  # the run's: set to a saved state before each block is drawn again
        width, bias = config.model.width, config.model.bias
        self.drawn = Linear(width, width, bias=bias, dtype=draw_dtype, device=generator.device)
        same = (device, dtype) == (generator.device, draw_dtype)
        self.linear = self.drawn if same else Linear(width, width, bias=bias, dtype=dtype, device=device)
        self.block = make_block(config, self.linear, dtype)
        self.targets = probe_targets(MLP([self.block]))


#: Blocks between two returns of freed heap memory to the system (:func:`_release_freed`).
RELEASE_EVERY = 16


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    return trim


def _release_freed(layer: int) -> None:
    """Every :data:`RELEASE_EVERY` blocks, hand freed heap pages back to the system.

    Each block frees its tensors and allocates the next block's, while the statistics it leaves behind (a few
    small arrays) stay: glibc places those in the freed space, the next block's tensors no longer fit there, and
    the heap grows by a block's tensors every block although nothing leaks (measured: 1.2 MiB per block at width
    1,024 with the backward pass, 12 GiB at depth 10,000). ``malloc_trim`` returns the free pages whatever
    surrounds them.
    """
    trim = _malloc_trim()
    if trim is not None and layer % RELEASE_EVERY == 0:
        trim(0)


def passes(
    config: Config, placement: Placement, statistics: dict[str, list[Statistic]]
) -> tuple[list[Record], dict[str, float]]:
    """The records and timings of :func:`initlab.runner.run`'s passes, block by block."""
    dtype = DTYPES[config.dtype]
    draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    source = placement.device if config.rng == "device" else torch.device("cpu")
    generator = torch.Generator(device=source).manual_seed(config.seed)
    setting = _Setting(config, generator, draw_dtype, placement.device, dtype)
    accumulator = Accumulator(statistics)

    tick = time.perf_counter()
    replay = advance(setting, accumulator)
    x = draw_input(config, generator, draw_dtype)
    g = draw_upstream(config, generator, draw_dtype)
    x = x.to(placement.device, dtype)
    g = None if g is None else g.to(placement.device, dtype)
    timings = {"build_s": time.perf_counter() - tick}

    accumulator.add((-1, "input"), x)
    tick = time.perf_counter()
    y, kept = _forward(setting, replay, accumulator, x)
    timings["forward_s"] = time.perf_counter() - tick
    if config.backward is not None:
        tick = time.perf_counter()
        _backward(setting, replay, accumulator, kept, upstream_gradient(config.backward, y, g))
        timings["backward_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    records = accumulator.records()
    timings["statistics_s"] = time.perf_counter() - tick
    return records, timings


def advance(setting: _Setting, accumulator: Accumulator) -> Replay:
    """Walk the generator past every weight draw, keeping its state at each block's draws and recording each
    block's weights under ``(layer, "weight")`` in the model's dtype and on its device."""
    config, generator = setting.config, setting.generator
    depth, width, activation = config.model.depth, config.model.width, config.model.activation
    dtype = setting.drawn.weight.dtype
    weight = torch.empty(width, width, dtype=dtype, device=generator.device)
    bias = torch.empty(width, dtype=dtype, device=generator.device) if config.model.bias else None
    construction: list[torch.Tensor | None] = []
    scheme: list[torch.Tensor] = []
    with torch.no_grad():
        for layer in range(depth):
            construction.append(generator.get_state() if keeps_construction(config, layer) else None)
            linear_default_(weight, bias, generator)
        for layer in range(depth):
            scheme.append(generator.get_state())
            config.init.scheme_for(layer, depth).init_(weight, activation, generator)
            if bias is not None:
                config.init.bias.init_(bias, activation, generator)
            accumulator.add((layer, "weight"), _drawn(setting, Replay(construction, scheme), layer, weight))
    return Replay(construction, scheme)


def _drawn(setting: _Setting, replay: Replay, layer: int, weight: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s weight as the model holds it: the buffer just drawn, or, for a block that keeps its
    construction draw, that draw again (the buffer has been drawn over since)."""
    if replay.construction[layer] is not None:
        state = setting.generator.get_state()
        weight = _linear(setting, replay, layer).weight
        setting.generator.set_state(state)
    elif setting.linear is not setting.drawn:
        weight = setting.linear.weight.copy_(weight)  # cast into the model's dtype, on its device
    # Large tensors are measured as they are added, before the buffer is drawn into again; small ones are held.
    return weight if weight.numel() >= BATCH_BELOW else weight.clone()


def _linear(setting: _Setting, replay: Replay, layer: int) -> nn.Linear:
    """Block ``layer``'s Linear, drawn again from the saved states into the run's one block."""
    config, generator, drawn = setting.config, setting.generator, setting.drawn
    depth, activation = config.model.depth, config.model.activation
    with torch.no_grad():
        state = replay.construction[layer]
        if state is not None:
            generator.set_state(state)
            linear_default_(drawn.weight, drawn.bias, generator)
        generator.set_state(replay.scheme[layer])
        config.init.scheme_for(layer, depth).init_(drawn.weight, activation, generator)
        if drawn.bias is not None:
            config.init.bias.init_(drawn.bias, activation, generator)
        if setting.linear is not drawn:
            setting.linear.load_state_dict(drawn.state_dict())  # copies into place, casting
    return setting.linear


def _block(setting: _Setting, replay: Replay, layer: int) -> tuple[nn.Module, list[Target]]:
    """Block ``layer`` and its probe targets, recorded under ``layer``."""
    _linear(setting, replay, layer)
    return setting.block, [(layer, site, module) for _, site, module in setting.targets]


def _forward(
    setting: _Setting, replay: Replay, accumulator: Accumulator, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run every block on ``x``, recording what it outputs; return the output and, with a backward pass to
    come, every block's input."""
    kept: list[torch.Tensor] = []
    statistics = accumulator.statistics
    with torch.no_grad():
        for layer in range(setting.config.model.depth):
            block, targets = _block(setting, replay, layer)
            if setting.config.backward is not None:
                kept.append(x)
            with ForwardProbe(targets, statistics, into=accumulator):
                x = block(x)
            _release_freed(layer)
    return x, kept


def _backward(
    setting: _Setting, replay: Replay, accumulator: Accumulator, kept: list[torch.Tensor], grad: torch.Tensor
) -> None:
    """Recompute the blocks from the last to the first, feeding each its output's gradient ``grad``; record the
    gradients autograd passes through them, then the weights' gradients from the first block up."""
    small: list[tuple[int, torch.Tensor]] = []  # weight gradients measured in stacks: added in the model's order
    for layer in reversed(range(setting.config.model.depth)):
        block, targets = _block(setting, replay, layer)
        setting.linear.weight.grad = None  # the block before's, in the one block they share
        x = kept.pop().requires_grad_(layer > 0)  # the model's input needs no gradient
        with torch.enable_grad(), GradientProbe(targets, accumulator):
            block(x).backward(grad)
        weight_grad = setting.linear.weight.grad
        assert weight_grad is not None  # every weight takes part in the output
        if weight_grad.numel() < BATCH_BELOW:
            small.append((layer, weight_grad))
        else:
            accumulator.add((layer, "weight_grad"), weight_grad)
        if x.grad is not None:
            grad = x.grad
        _release_freed(layer)
    for layer, weight_grad in reversed(small):
        accumulator.add((layer, "weight_grad"), weight_grad)
