"""The gradient fed into the last block's output for the backward pass (``backward.upstream``): its draw,
which comes right after the input's in the generator stream, and its value."""

from __future__ import annotations

import torch

from initlab.config import BackwardConfig, Config


def draw_upstream(config: Config, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor | None:
    """``upstream: normal``'s gradient g ~ N(0, 1), ``(batch_size, width)``, drawn right after the input."""
    if config.backward is None or config.backward.upstream != "normal":
        return None
    shape = (config.data.batch_size, config.model.width)
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)


def upstream_gradient(backward: BackwardConfig, y: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """The gradient fed into the last block's output: g, y itself (the loss |y|^2/2), or ones."""
    if backward.upstream == "normal":
        assert g is not None
        return g
    return y.detach() if backward.upstream == "output" else torch.ones_like(y)
