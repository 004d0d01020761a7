"""The activation registry: every nonlinearity a block can end with, with its parameters.

Each activation is a frozen config model whose ``name`` is its tag, so a YAML entry
``tanh`` or ``{name: leaky_relu, negative_slope: 0.2}`` validates straight into it.
The models know how to build their ``torch.nn`` module, the gain PyTorch's
``calculate_gain`` defines for them (if any), and which probe statistics mean
something for them (saturation for bounded ones, dead units for the ReLU family).
torch is imported lazily so that validating a config never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field

from initlab._pydantic import Choice, Float, Frozen, PositiveFloat, validate_as

if TYPE_CHECKING:
    import torch
    from torch import nn

ALIASES = {"identity": "linear", "none": "linear", "swish": "silu"}


class Activation(Frozen):
    """Base of every activation model; subclasses fix ``name`` and add parameters."""

    name: str
    #: Output range whose edges count as saturated: (low, high, margin).
    saturation: ClassVar[tuple[float, float, float] | None] = None
    #: True when the activation outputs exact zeros for negative inputs (dead units).
    zeros_negative: ClassVar[bool] = False

    def module(self) -> nn.Module:
        """A fresh ``torch.nn`` module computing this activation."""
        raise NotImplementedError

    def function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The activation as a plain tensor function (works in float64)."""
        return self.module()

    def torch_gain(self) -> float | None:
        """``torch.nn.init.calculate_gain`` for this activation, or None if it defines none."""
        return None

    def torch_nonlinearity(self) -> tuple[str, float | None] | None:
        """The (nonlinearity, param) pair ``calculate_gain`` knows this activation by."""
        return None

    def label(self) -> str:
        """Short human label with non-default parameters, e.g. ``leaky_relu(negative_slope=0.2)``."""
        params = self.model_dump(exclude={"name"}, exclude_defaults=True)
        inner = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{self.name}({inner})" if inner else self.name


class _TorchKnown(Activation):
    """Activations ``calculate_gain`` has an entry for, under the same name."""

    def torch_nonlinearity(self) -> tuple[str, float | None] | None:
        return (self.name, None)

    def torch_gain(self) -> float | None:
        from torch.nn.init import calculate_gain

        spec = self.torch_nonlinearity()
        assert spec is not None
        return float(calculate_gain(spec[0], spec[1]))  # type: ignore[arg-type]


class Linear(_TorchKnown):
    name: Literal["linear"] = "linear"

    def module(self) -> nn.Module:
        from torch import nn

        return nn.Identity()


class Tanh(_TorchKnown):
    name: Literal["tanh"] = "tanh"
    saturation: ClassVar[tuple[float, float, float] | None] = (-1.0, 1.0, 0.03)

    def module(self) -> nn.Module:
        from torch import nn

        return nn.Tanh()


class Sigmoid(_TorchKnown):
    name: Literal["sigmoid"] = "sigmoid"
    saturation: ClassVar[tuple[float, float, float] | None] = (0.0, 1.0, 0.03)

    def module(self) -> nn.Module:
        from torch import nn

        return nn.Sigmoid()


class ReLU(_TorchKnown):
    name: Literal["relu"] = "relu"
    zeros_negative: ClassVar[bool] = True

    def module(self) -> nn.Module:
        from torch import nn

        return nn.ReLU()


class LeakyReLU(_TorchKnown):
    name: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: Float = Field(0.01, ge=0.0, description="slope for negative inputs")

    def module(self) -> nn.Module:
        from torch import nn

        return nn.LeakyReLU(self.negative_slope)

    def torch_nonlinearity(self) -> tuple[str, float | None] | None:
        return ("leaky_relu", self.negative_slope)


class SELU(_TorchKnown):
    name: Literal["selu"] = "selu"

    def module(self) -> nn.Module:
        from torch import nn

        return nn.SELU()


class ELU(Activation):
    name: Literal["elu"] = "elu"
    alpha: PositiveFloat = Field(1.0, description="value approached for large negative inputs")

    def module(self) -> nn.Module:
        from torch import nn

        return nn.ELU(self.alpha)


class GELU(Activation):
    name: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"

    def module(self) -> nn.Module:
        from torch import nn

        return nn.GELU(approximate=self.approximate)


class SiLU(Activation):
    name: Literal["silu"] = "silu"

    def module(self) -> nn.Module:
        from torch import nn

        return nn.SiLU()


class Mish(Activation):
    name: Literal["mish"] = "mish"

    def module(self) -> nn.Module:
        from torch import nn

        return nn.Mish()


class Softplus(Activation):
    name: Literal["softplus"] = "softplus"
    beta: PositiveFloat = 1.0
    threshold: PositiveFloat = Field(20.0, description="above beta*x > threshold the output is linear")

    def module(self) -> nn.Module:
        from torch import nn

        return nn.Softplus(self.beta, self.threshold)


_CLASSES: tuple[type[Activation], ...] = (
    Linear, Tanh, Sigmoid, ReLU, LeakyReLU, ELU, SELU, GELU, SiLU, Mish, Softplus,
)
REGISTRY: dict[str, type[Activation]] = {
    cls.model_fields["name"].default: cls for cls in _CLASSES
}


ActivationConfig = Annotated[
    Union[Linear, Tanh, Sigmoid, ReLU, LeakyReLU, ELU, SELU, GELU, SiLU, Mish, Softplus],  # noqa: UP007
    Field(discriminator="name"),
    BeforeValidator(Choice("activation", "name", REGISTRY, ALIASES)),
]


def parse_activation(value: str | dict[str, Any]) -> Activation:
    """Validate one activation given as a name or a mapping (for the library and CLI)."""
    result: Activation = validate_as(ActivationConfig, value)
    return result


def names() -> list[str]:
    """Registered activation names, sorted."""
    return sorted(REGISTRY)


__all__ = ["ALIASES", "REGISTRY", "Activation", "ActivationConfig", "names", "parse_activation"]
