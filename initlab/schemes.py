"""Weight-initialization schemes, mirroring ``torch.nn.init``: same names, same arguments.

Each scheme is a frozen config model tagged by ``scheme`` whose fields are the
arguments of the ``torch.nn.init`` function of the same name, with the same
defaults. ``init_(tensor, activation, generator)`` fills the tensor in place by
calling that function, so a study reproduces a hand-written script bit for bit.
Two schemes torch has no function for are added:

* ``default``: leave the tensor as ``nn.Linear`` initialises it on its own;
* ``lecun_normal``: :math:`\\mathcal{N}(0, \\text{gain}^2/\\text{fan\\_in})` (LeCun et al., 1998).

``gain: auto`` and ``nonlinearity: auto`` opt in to the network's activation.
torch is imported lazily: validating a config does not need it.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from initlab._pydantic import Choice, Float, Frozen, NonNegativeFloat, PositiveFloat, unknown_choice, validate_as
from initlab.activations import Activation

if TYPE_CHECKING:
    import torch

ALIASES = {
    "xavier": "xavier_uniform",
    "glorot": "xavier_uniform",
    "glorot_uniform": "xavier_uniform",
    "glorot_normal": "xavier_normal",
    "kaiming": "kaiming_normal",
    "he": "kaiming_normal",
    "he_normal": "kaiming_normal",
    "he_uniform": "kaiming_uniform",
    "lecun": "lecun_normal",
}

#: A gain: a number, or a definition computed from the network's activation (see
#: :mod:`initlab.gain`): ``auto`` (PyTorch's ``calculate_gain`` where it has one, else
#: ``second_moment``), ``torch``, ``second_moment`` or ``std_ratio``.
GainName = Literal["auto", "torch", "second_moment", "std_ratio"]
_GAIN_NAMES = ("auto", "torch", "second_moment", "std_ratio")


def _check_gain(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):  # one error, not one per union member
        raise PydanticCustomError("value_error", f"expected a number or one of {', '.join(_GAIN_NAMES)}")
    if isinstance(value, str) and value not in _GAIN_NAMES:  # text is a name, never a number ('1_000')
        raise unknown_choice("gain", value, _GAIN_NAMES, "gain")
    return value


Gain = Annotated[Union[float, GainName], BeforeValidator(_check_gain)]  # noqa: UP007
Nonlinearity = Literal["auto", "linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]


class Scheme(Frozen):
    """Base of every scheme model; ``init_`` fills a tensor in place."""

    scheme: str
    #: Schemes that need fan_in/fan_out (a 2-D weight) cannot initialise a bias.
    needs_matrix: ClassVar[bool] = False

    def init_(
        self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None
    ) -> None:
        raise NotImplementedError

    def label(self) -> str:
        """``scheme(arg=value, ...)`` with the non-default arguments."""
        params = self.model_dump(exclude={"scheme"}, exclude_defaults=True)
        inner = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{self.scheme}({inner})" if inner else self.scheme


def resolve_gain(gain: Gain, activation: Activation) -> float:
    """The number a ``gain`` stands for under ``activation``."""
    if isinstance(gain, str):
        return _named_gain(activation, gain)
    return float(gain)


@functools.lru_cache(maxsize=64)
def _named_gain(activation: Activation, name: str) -> float:
    """Computed once per activation and definition: every layer of a study asks again."""
    from initlab import gain as gains

    return gains.resolve_gain(activation, name)


class Normal(Scheme):
    r"""Fill with :math:`\mathcal{N}(\text{mean}, \text{std}^2)` (``torch.nn.init.normal_``)."""

    scheme: Literal["normal"] = "normal"
    mean: Float = 0.0
    std: NonNegativeFloat = 1.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.normal_(tensor, self.mean, self.std, generator=generator)


class Uniform(Scheme):
    r"""Fill with :math:`\mathcal{U}(a, b)` (``torch.nn.init.uniform_``)."""

    scheme: Literal["uniform"] = "uniform"
    a: Float = 0.0
    b: Float = 1.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.uniform_(tensor, self.a, self.b, generator=generator)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.b < self.a:
            raise ValueError(f"uniform needs a <= b, got a={self.a}, b={self.b}")
        return self


class Constant(Scheme):
    """Fill with ``val`` (``torch.nn.init.constant_``)."""

    scheme: Literal["constant"] = "constant"
    val: Float

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.constant_(tensor, self.val)


class Zeros(Scheme):
    """Fill with 0 (``torch.nn.init.zeros_``)."""

    scheme: Literal["zeros"] = "zeros"

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.zeros_(tensor)


class Ones(Scheme):
    """Fill with 1 (``torch.nn.init.ones_``)."""

    scheme: Literal["ones"] = "ones"

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.ones_(tensor)


class XavierUniform(Scheme):
    r"""Glorot & Bengio (2010): :math:`\mathcal{U}(-a, a)`,
    :math:`a = \text{gain}\sqrt{6/(\text{fan\_in}+\text{fan\_out})}` (``xavier_uniform_``)."""

    scheme: Literal["xavier_uniform"] = "xavier_uniform"
    needs_matrix: ClassVar[bool] = True
    gain: Gain = 1.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.xavier_uniform_(tensor, resolve_gain(self.gain, activation), generator=generator)


class XavierNormal(Scheme):
    r"""Glorot & Bengio (2010): :math:`\mathcal{N}(0, \sigma^2)`,
    :math:`\sigma = \text{gain}\sqrt{2/(\text{fan\_in}+\text{fan\_out})}` (``xavier_normal_``)."""

    scheme: Literal["xavier_normal"] = "xavier_normal"
    needs_matrix: ClassVar[bool] = True
    gain: Gain = 1.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.xavier_normal_(tensor, resolve_gain(self.gain, activation), generator=generator)


class _Kaiming(Scheme):
    needs_matrix: ClassVar[bool] = True
    a: NonNegativeFloat = Field(0.0, description="negative slope, used with leaky_relu")
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    nonlinearity: Nonlinearity = "leaky_relu"

    def _resolved(self, activation: Activation) -> tuple[float, str]:
        if self.nonlinearity != "auto":
            return self.a, self.nonlinearity
        known = activation.torch_nonlinearity()
        if known is None:
            raise ValueError(
                f"nonlinearity 'auto': torch.nn.init.calculate_gain has no entry for {activation.name!r}"
            )
        name, param = known
        return (param if param is not None else self.a), name


class KaimingUniform(_Kaiming):
    r"""He et al. (2015): :math:`\mathcal{U}(-b, b)`, :math:`b = \text{gain}\sqrt{3/\text{fan\_mode}}`
    (``kaiming_uniform_``)."""

    scheme: Literal["kaiming_uniform"] = "kaiming_uniform"

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        a, nonlinearity = self._resolved(activation)
        init.kaiming_uniform_(tensor, a, self.mode, nonlinearity, generator=generator)  # type: ignore[arg-type]


class KaimingNormal(_Kaiming):
    r"""He et al. (2015): :math:`\mathcal{N}(0, \sigma^2)`, :math:`\sigma = \text{gain}/\sqrt{\text{fan\_mode}}`
    (``kaiming_normal_``)."""

    scheme: Literal["kaiming_normal"] = "kaiming_normal"

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        a, nonlinearity = self._resolved(activation)
        init.kaiming_normal_(tensor, a, self.mode, nonlinearity, generator=generator)  # type: ignore[arg-type]


class Orthogonal(Scheme):
    """Saxe et al. (2013): a (semi-)orthogonal matrix scaled by ``gain`` (``orthogonal_``)."""

    scheme: Literal["orthogonal"] = "orthogonal"
    needs_matrix: ClassVar[bool] = True
    gain: Gain = 1.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.orthogonal_(tensor, resolve_gain(self.gain, activation), generator=generator)


class TruncNormal(Scheme):
    r""":math:`\mathcal{N}(\text{mean}, \text{std}^2)` redrawn outside :math:`[a, b]` (``trunc_normal_``)."""

    scheme: Literal["trunc_normal"] = "trunc_normal"
    mean: Float = 0.0
    std: PositiveFloat = 1.0
    a: Float = -2.0
    b: Float = 2.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        init.trunc_normal_(tensor, self.mean, self.std, self.a, self.b, generator=generator)

    @model_validator(mode="after")
    def _ordered(self) -> TruncNormal:
        if self.b <= self.a:
            raise ValueError(f"trunc_normal needs a < b, got a={self.a}, b={self.b}")
        return self


class Sparse(Scheme):
    r"""Martens (2010): a ``sparsity`` fraction of each column zero, the rest
    :math:`\mathcal{N}(0, \text{std}^2)` (``sparse_``).

    ``torch.nn.init.sparse_`` draws its zero positions with ``randperm`` from the global
    RNG even when given a generator; this does the same draws, in the same order, from
    ``generator``, so a seeded study is reproducible and still equals the hand-written
    script (``torch.manual_seed(s)`` then ``sparse_``).
    """

    scheme: Literal["sparse"] = "sparse"
    needs_matrix: ClassVar[bool] = True
    sparsity: Float = Field(ge=0.0, le=1.0)
    std: NonNegativeFloat = 0.01

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        import torch

        rows, cols = tensor.shape
        zeros = math.ceil(self.sparsity * rows)
        tensor.normal_(0, self.std, generator=generator)
        for col in range(cols):
            tensor[torch.randperm(rows, generator=generator)[:zeros], col] = 0


class LecunNormal(Scheme):
    r"""LeCun et al. (1998), "Efficient BackProp": :math:`\mathcal{N}(0, \text{gain}^2/\text{fan\_in})`."""

    scheme: Literal["lecun_normal"] = "lecun_normal"
    needs_matrix: ClassVar[bool] = True
    gain: Gain = 1.0

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        from torch.nn import init

        fan_in = tensor.shape[1]
        init.normal_(tensor, 0.0, resolve_gain(self.gain, activation) / math.sqrt(fan_in), generator=generator)


class Default(Scheme):
    r"""What ``nn.Linear`` does on its own (``reset_parameters``): weight
    :math:`\mathcal{U}(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})` (``kaiming_uniform_`` with
    ``a=√5``), bias the same bound. Tensors already hold these values after construction, so
    applying it changes nothing and draws nothing."""

    scheme: Literal["default"] = "default"

    def init_(self, tensor: torch.Tensor, activation: Activation, generator: torch.Generator | None) -> None:
        return None


def linear_default_(
    weight: torch.Tensor, bias: torch.Tensor | None, generator: torch.Generator | None
) -> None:
    """``nn.Linear.reset_parameters`` with an explicit generator, drawing in the same order."""
    from torch.nn import init

    init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        fan_in = weight.shape[1]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound, generator=generator)


_CLASSES: tuple[type[Scheme], ...] = (
    Default, Normal, Uniform, Constant, Zeros, Ones, XavierUniform, XavierNormal,
    KaimingUniform, KaimingNormal, Orthogonal, TruncNormal, Sparse, LecunNormal,
)
REGISTRY: dict[str, type[Scheme]] = {cls.model_fields["scheme"].default: cls for cls in _CLASSES}


def canonical(name: str) -> str:
    """The registered name for ``name`` or one of its aliases (unchanged if unknown)."""
    return ALIASES.get(name, name)


SchemeConfig = Annotated[
    Union[  # noqa: UP007
        Default, Normal, Uniform, Constant, Zeros, Ones, XavierUniform, XavierNormal,
        KaimingUniform, KaimingNormal, Orthogonal, TruncNormal, Sparse, LecunNormal,
    ],
    Field(discriminator="scheme"),
    BeforeValidator(Choice("scheme", "scheme", REGISTRY, ALIASES)),
]


def parse_scheme(value: str | dict[str, Any]) -> Scheme:
    """Validate one scheme given as a name or a mapping with its arguments."""
    result: Scheme = validate_as(SchemeConfig, value)
    return result


def names() -> list[str]:
    """Registered scheme names, sorted."""
    return sorted(REGISTRY)


__all__ = [
    "ALIASES", "REGISTRY", "Gain", "Scheme", "SchemeConfig", "canonical", "linear_default_",
    "names", "parse_scheme", "resolve_gain",
]
