"""The network under study: an ``nn.ModuleList`` of ``Linear(width, width)`` + activation blocks.

Weights are drawn from an explicit generator in exactly the order a hand-written script
draws them from the global RNG: first every layer's construction-time default init (what
``nn.Linear.__init__`` does), then the configured scheme, layer by layer. So a study with
seed ``s`` equals ``torch.manual_seed(s); nn.ModuleList([nn.Linear(...) ...]); init ...``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from initlab.config import Config
from initlab.schemes import linear_default_


class Linear(nn.Linear):
    """``nn.Linear`` whose constructor draws nothing: :func:`build` draws its default
    initialisation from an explicit generator instead, in the same order."""

    def reset_parameters(self) -> None:
        return None


class Block(nn.Module):
    """``activation(linear(x))``, or with a norm ``activation(norm(linear(x)))``; probes read ``linear``'s
    output (pre), ``norm``'s (normed) and the block's (post)."""

    def __init__(self, linear: nn.Linear, activation: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.linear = linear
        if norm is not None:  # registered only when there is one: a plain block's keys stay as they were
            self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        if hasattr(self, "norm"):
            h = self.norm(h)
        return self.activation(h)  # type: ignore[no-any-return]


class ResidualBlock(nn.Module):
    """``x + α·activation(linear(norm(x)))`` (pre-norm; no norm: ``x + α·activation(linear(x))``).

    Probes read ``linear``'s output (pre), ``norm``'s (normed: the norm's input is the block's
    input, the previous block's output), ``activation``'s (branch, before α) and the block's (post).
    """

    def __init__(self, linear: nn.Linear, activation: nn.Module, alpha: float, norm: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.linear = linear
        if norm is not None:
            self.norm = norm
        self.activation = activation
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x) if hasattr(self, "norm") else x
        return x + self.alpha * self.activation(self.linear(h))  # type: ignore[no-any-return]


class MLP(nn.Module):
    """``depth`` blocks applied in order."""

    def __init__(self, blocks: list[Block | ResidualBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def linears(self) -> list[nn.Linear]:
        """The blocks' Linear layers, in order."""
        return [block.linear for block in self.blocks]  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # (batch, width)
        return x


class ConstructionDraws:
    """Generator states after the construction-time draws, for runs that discard them.

    A sweep builds the same network shape from the same seed under many schemes. The
    draws ``nn.Linear.__init__`` would make advance the generator but are then
    overwritten (unless a layer keeps the ``default`` scheme), so the state they leave
    is computed once per (seed, shape) and restored afterwards: the same numbers, once.
    """

    def __init__(self) -> None:
        self._states: dict[tuple[Any, ...], torch.Tensor] = {}

    def _key(self, config: Config, generator: torch.Generator, dtype: torch.dtype) -> tuple[Any, ...]:
        model = config.model
        return (config.seed, model.depth, model.width, model.bias, dtype, str(generator.device))

    def skip(self, config: Config, generator: torch.Generator, dtype: torch.dtype) -> bool:
        """Advance ``generator`` past the construction draws if their state is known."""
        state = self._states.get(self._key(config, generator, dtype))
        if state is not None:
            generator.set_state(state)
        return state is not None

    def remember(self, config: Config, generator: torch.Generator, dtype: torch.dtype) -> None:
        self._states[self._key(config, generator, dtype)] = generator.get_state()


def keeps_construction(config: Config, layer: int) -> bool:
    """True when block ``layer`` keeps a value ``nn.Linear.__init__`` drew (the ``default`` scheme)."""
    weight = config.init.scheme_for(layer, config.model.depth).scheme
    return weight == "default" or (config.model.bias and config.init.bias.scheme == "default")


def build(
    config: Config, generator: torch.Generator, dtype: torch.dtype, draws: ConstructionDraws | None = None
) -> MLP:
    """Build and initialise the network on ``generator``'s device, drawing from it.

    ``draws`` lets runs that share a seed and a shape skip the construction draws they
    would overwrite anyway (see :class:`ConstructionDraws`); the result is identical.
    """
    depth, width = config.model.depth, config.model.width
    activation = config.model.activation
    linears: list[nn.Linear] = [
        Linear(width, width, bias=config.model.bias, dtype=dtype, device=generator.device) for _ in range(depth)
    ]
    kept = any(keeps_construction(config, i) for i in range(depth))
    with torch.no_grad():
        if draws is None or kept or not draws.skip(config, generator, dtype):
            for linear in linears:  # what nn.Linear.__init__ would have drawn
                linear_default_(linear.weight, linear.bias, generator)
            if draws is not None:
                draws.remember(config, generator, dtype)
        for i, linear in enumerate(linears):
            config.init.scheme_for(i, depth).init_(linear.weight, activation, generator)
            if linear.bias is not None:
                config.init.bias.init_(linear.bias, activation, generator)
    return MLP([make_block(config, linear, dtype) for linear in linears])


def make_block(config: Config, linear: nn.Linear, dtype: torch.dtype) -> Block | ResidualBlock:
    """One block around ``linear``; its norm, if any, at PyTorch's defaults (it draws nothing)."""
    model = config.model
    norm: nn.Module | None = None
    if model.norm == "layernorm":
        norm = nn.LayerNorm(model.width, dtype=dtype, device=linear.weight.device)
    elif model.norm == "batchnorm":  # in training mode, as built: it normalises by the batch's statistics
        norm = nn.BatchNorm1d(model.width, dtype=dtype, device=linear.weight.device)
    if model.block == "residual":
        return ResidualBlock(linear, model.activation.module(), model.alpha, norm)
    return Block(linear, model.activation.module(), norm)


def draw_input(config: Config, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The input batch, ``(batch_size, width)``, drawn after the weights."""
    data = config.data
    shape = (data.batch_size, config.model.width)
    device = generator.device
    if data.distribution == "uniform":
        return torch.empty(shape, dtype=dtype, device=device).uniform_(data.low, data.high, generator=generator)
    x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if (data.mean, data.std) != (0.0, 1.0):
        x = x * data.std + data.mean
    return x


def probe_targets(model: MLP) -> list[tuple[int, str, nn.Module]]:
    """``(layer, site, module)`` for every block: ``pre`` = Linear output, ``post`` = block output;
    with a norm, ``normed`` = the norm's output; in a residual block, ``branch`` = the branch's
    output before α (the activation's)."""
    targets: list[tuple[int, str, nn.Module]] = []
    for i, block in enumerate(model.blocks):
        assert isinstance(block, (Block, ResidualBlock))
        targets += [(i, "pre", block.linear), (i, "post", block)]
        if hasattr(block, "norm"):
            targets.append((i, "normed", block.norm))
        if isinstance(block, ResidualBlock):
            targets.append((i, "branch", block.activation))
    return targets
