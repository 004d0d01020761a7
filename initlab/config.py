"""The study config: one frozen pydantic model, loaded once from YAML plus command-line overrides.

Precedence is YAML < overrides, resolved in :func:`load_config` and nowhere else; the
result is passed explicitly to everything that needs it. Every error names the file
and line (or the override) and the dotted field path.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from initlab import activations, schemes, yamlfile
from initlab._pydantic import (
    Choice,
    Float,
    Frozen,
    NonNegativeFloat,
    custom_error,
    unknown,
    unknown_choice,
    validate_as,
)
from initlab.activations import ActivationConfig, Linear
from initlab.errors import ConfigError
from initlab.schemes import Scheme, SchemeConfig, Zeros

_DEVICE = re.compile(r"^(auto|cpu|cuda(:(?P<index>\d+))?)$")
_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
#: torch keeps a device's index in 8 bits: ``cuda:128`` would silently become ``cuda:-128``.
MAX_DEVICE_INDEX = 127
#: An integer field takes integers only: not ``1e2``, ``true`` or ``"3"``.
Int = Annotated[int, Field(strict=True)]
DeviceIndex = Annotated[int, Field(strict=True, ge=0, le=MAX_DEVICE_INDEX)]


def _check_device(value: str) -> str:
    match = _DEVICE.match(value)
    if not match:
        raise unknown_choice("device", value, _DEVICES, "device")
    if match["index"] is not None and int(match["index"]) > MAX_DEVICE_INDEX:
        raise ValueError(f"a CUDA device index is at most {MAX_DEVICE_INDEX} (torch keeps it in 8 bits)")
    return value


def _residual_scale(value: Any) -> Any:
    """α as given: a positive number or ``auto``, one line otherwise."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise custom_error("residual_scale", "expected a positive number or auto")
    return float(value)


class ModelConfig(Frozen):
    """The network: ``depth`` blocks of ``Linear(width, width)`` followed by ``activation``."""

    depth: Int = Field(100, ge=1, le=100_000, description="number of Linear(+activation) blocks")
    width: Int = Field(256, ge=1, description="features in and out of every block")
    activation: ActivationConfig = Field(default_factory=Linear)
    bias: bool = False
    bias_std: NonNegativeFloat | None = Field(
        None, description="σb, the bias std in one field: sets bias: true and init.bias: {scheme: normal, mean: 0, "
        "std: σb} (so a --grid can sweep it); unset: bias and init.bias say it")
    block: Literal["plain", "residual"] = Field(
        "plain", description="plain: activation(linear(x)); residual: x + α·activation(linear(norm(x)))")
    residual_scale: Annotated[float | Literal["auto"] | None, BeforeValidator(_residual_scale)] = Field(
        None, description="α of a residual block: a number, or auto = 1/√depth; unset: 1")
    norm: Literal["none", "layernorm", "batchnorm"] = Field(
        "none", description="plain: activation(norm(linear(x))); residual: norm before the branch's Linear "
        "(pre-norm). PyTorch defaults (weight 1, bias 0); batchnorm uses the batch's statistics (training mode)")

    #: Left out of a dump when they hold these values, so every config without them dumps (and
    #: hashes) as it did before they existed.
    _LEFT_OUT: ClassVar[dict[str, Any]] = {"bias_std": None, "block": "plain", "residual_scale": None, "norm": "none"}

    @model_serializer(mode="wrap")
    def _unset_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for key, default in self._LEFT_OUT.items():
            if key in out and out[key] == default:
                out.pop(key)
        return out

    @model_validator(mode="after")
    def _scale_needs_residual(self) -> ModelConfig:
        if self.residual_scale is not None and self.block != "residual":
            raise custom_error("conflict", "scales a residual block's branch: give it with block: residual",
                               path="model.residual_scale")
        return self

    @property
    def alpha(self) -> float:
        """α, the residual branch's scale (1 unless ``residual_scale`` says otherwise)."""
        if self.residual_scale == "auto":
            return 1.0 / math.sqrt(self.depth)
        return 1.0 if self.residual_scale is None else float(self.residual_scale)


#: The bias schemes ``model.bias_std`` replaces: the default, and its own (a config's dump has one).
_BIAS_STD_REPLACES = ("zeros", "normal")


def _bias_std(data: Any) -> Any:
    """``model.bias_std: s`` as the two fields it stands for: ``model.bias: true`` and ``init.bias: normal(0, s)``.

    It replaces ``init.bias`` only where that is the default (zeros) or a normal of mean 0 (what a dump of a
    config with ``bias_std`` holds, so a patched dump re-validates); any other bias scheme is a conflict.
    """
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return data
    std = model.get("bias_std")
    if std is None or isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0:
        return data  # unset, or not a std: the field's own validation says so
    init: dict[str, Any] = data["init"] if isinstance(data.get("init"), dict) else {}
    bias = init.get("bias", "zeros")
    scheme = bias if isinstance(bias, str) else bias.get("scheme") if isinstance(bias, dict) else None
    if scheme not in _BIAS_STD_REPLACES or (isinstance(bias, dict) and bias.get("mean", 0) != 0):
        raise custom_error("conflict", "sets init.bias to normal(0, bias_std): give bias_std or init.bias, not both",
                           path="model.bias_std")
    return {**data, "model": {**model, "bias": True},
            "init": {**init, "bias": {"scheme": "normal", "mean": 0.0, "std": float(std)}}}


class _WithScheme(Frozen):
    """A mapping holding a weight scheme's keys beside its own, as the YAML has it:
    ``{scheme: constant, val: 0.5, index: 0}``. The scheme's keys are gathered into
    ``weight`` on the way in and put back beside the others on the way out."""

    weight: SchemeConfig
    #: The scheme when the mapping names none; None: ``scheme`` is required.
    default_scheme: ClassVar[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _gather(cls, data: Any) -> Any:
        if not isinstance(data, dict) or isinstance(data.get("weight"), Scheme):
            return data
        own = {info.alias or name for name, info in cls.model_fields.items()} - {"weight"}  # init.from
        scheme = {key: value for key, value in data.items() if key not in own}
        if cls.default_scheme is not None:
            scheme = {"scheme": cls.default_scheme, **scheme}
        return {**{k: v for k, v in data.items() if k in own}, "weight": scheme}

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if "from_" in out:  # written as the YAML has it; left out when unset, so older configs dump (and hash) alike
            loaded = out.pop("from_")
            out |= {"from": loaded} if loaded is not None else {}
        return {**out.pop("weight"), **out}


class LayerInit(_WithScheme):
    """A per-layer override of the weight scheme: ``{index: 0, scheme: constant, val: 0.5}``.
    It names its scheme, as ``init.bias`` does: an override that silently meant ``default``
    would hide a forgotten key."""

    index: Int = Field(description="block index; negative counts from the end")


def _checkpoint_file(value: str) -> str:
    """``init.from`` as an absolute path to an existing file (a relative one is the current folder's; a
    YAML's own relative paths are made relative to its folder by :func:`load_config`)."""
    path = Path(value).expanduser().absolute()
    where = f" {path}" if str(path) != value else ""  # the error shows the value as given after it
    if not path.exists():
        raise ValueError(f"no such file{where}")
    if not path.is_file():
        raise ValueError(f"not a file{where} (expected a state_dict saved by torch.save)")
    return str(path)


class InitConfig(_WithScheme):
    """How weights (``scheme`` and its arguments) and biases are initialised, or the file they are loaded from."""

    weight: SchemeConfig = Field(default_factory=schemes.Default)
    default_scheme: ClassVar[str | None] = "default"
    layers: tuple[LayerInit, ...] = ()
    bias: SchemeConfig = Field(default_factory=Zeros)
    from_: Annotated[str, AfterValidator(_checkpoint_file)] | None = Field(
        None, alias="from", description="a state_dict file (torch.save) whose weights are studied instead of drawn; "
        "the scheme's draws still advance the generator, so the input is the one the drawn study gets")

    def scheme_for(self, layer: int, depth: int) -> Scheme:
        """The weight scheme of block ``layer`` (0-based) in a network of ``depth`` blocks."""
        for override in self.layers:
            if override.index % depth == layer:
                return override.weight
        return self.weight


class _Data(Frozen):
    batch_size: Int = Field(16, ge=1)


class NormalData(_Data):
    """Inputs drawn from N(mean, std²)."""

    distribution: Literal["normal"] = "normal"
    mean: Float = 0.0
    std: NonNegativeFloat = 1.0


class UniformData(_Data):
    """Inputs drawn from U(low, high)."""

    distribution: Literal["uniform"] = "uniform"
    low: Float = -1.0
    high: Float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> UniformData:
        if self.high <= self.low:
            raise ValueError(f"uniform needs low < high, got low={self.low}, high={self.high}")
        return self


#: The input batch: ``normal`` (mean, std) or ``uniform`` (low, high), normal when not said.
DataConfig = Annotated[
    Union[NormalData, UniformData],  # noqa: UP007
    Field(discriminator="distribution"),
    BeforeValidator(Choice("distribution", "distribution", {"normal": NormalData, "uniform": UniformData},
                           default="normal")),
]


class VerdictConfig(Frozen):
    """Thresholds of the regime verdict (see the README's "Verdict" section)."""

    orders: Float = Field(1.0, gt=0.0, description="|decades| of end-to-end change that decide unless settled")
    settled_orders: Float = Field(3.0, gt=0.0, description="|decades| of end-to-end change that decide alone")
    explode_ratio: Float = Field(2.0, gt=1.0, description="std/input std above this explodes if the tail still rises")
    vanish_ratio: Float = Field(0.5, gt=0.0, lt=1.0, description="std/input std below this vanishes if the tail falls")
    settle: Float = Field(0.075, ge=0.0, description="decades the tail must still move its way to count as moving")
    trend_t: Float = Field(2.5, gt=0.0, description="group-means t of the tail's mean step needed to call a trend "
                           "real, as a normal quantile (the t's own Student quantile is used)")
    saturation: Float = Field(0.5, gt=0.0, le=1.0, description="mean saturated fraction over the tail: saturated")
    dead: Float = Field(0.9, gt=0.0, le=1.0, description="mean dead-unit fraction over the tail that is noted")
    finite_width: Float = Field(1.0, gt=0.0, description="depth/width from which finite width is noted")


class BackwardConfig(Frozen):
    """The backward pass: gradient statistics of every block (``backward: false`` turns it off)."""

    upstream: Literal["normal", "output", "ones"] = Field(
        "normal", description="the gradient fed into the last block's output: normal = g ~ N(0, 1) drawn after "
        "the input; output = y itself (y.backward(y), the loss |y|^2/2); ones = torch.ones_like(y)"
    )


def _switch(value: Any) -> Any:
    """A section that is on or off: ``true`` is on with every default, ``false`` is off (None), a
    mapping sets its keys. An empty value (``backward:`` with every key commented out) is refused:
    on or off, it does not say which."""
    if value is True:
        return {}
    if value is False or isinstance(value, (dict, BaseModel)):
        return None if value is False else value
    if value is None:
        raise PydanticCustomError("switch", "empty: write true (on, every default), false (off) or its keys")
    raise PydanticCustomError("switch", "expected true, false or a mapping of its keys")


#: Largest number of inputs whose Jacobian a study may ask for (each is a width x width matrix).
MAX_JACOBIAN_SAMPLES = 4096


class JacobianConfig(Frozen):
    """The input-output Jacobian of ``samples`` inputs of the batch and its singular values."""

    samples: Int = Field(1, ge=1, le=MAX_JACOBIAN_SAMPLES, description="inputs of the batch (the first ones)")


class DataParallelConfig(Frozen):
    """Run the model under ``nn.DataParallel`` on these CUDA devices."""

    device_ids: tuple[DeviceIndex, ...] = Field(min_length=1, description="CUDA device ids, the first holds the model")
    output_device: DeviceIndex | None = Field(None, description="where outputs are gathered; default device_ids[0]")

    @model_validator(mode="after")
    def _distinct(self) -> DataParallelConfig:
        if len(set(self.device_ids)) != len(self.device_ids) or min(self.device_ids) < 0:
            raise ValueError(f"device_ids must be distinct non-negative ids, got {list(self.device_ids)}")
        return self


class Config(Frozen):
    """One study. Field names are initlab's public config interface."""

    name: str = Field("study", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: Int = Field(0, ge=0, le=2**64 - 1, description="torch.Generator.manual_seed takes 0 ... 2**64-1")
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    data: DataConfig = Field(default_factory=NormalData)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    device: Annotated[str, AfterValidator(_check_device)] = "cpu"
    data_parallel: DataParallelConfig | None = None
    dtype: Literal["float32", "float64", "float16", "bfloat16"] = "float32"
    precision: Literal["highest", "high", "medium"] = Field(
        "highest", description="float32 matmul precision: highest = full float32 (no TF32)"
    )
    rng: Literal["cpu", "device"] = Field(
        "cpu", description="cpu: draw on the CPU then move (same numbers everywhere); device: draw on the device"
    )
    backward: Annotated[BackwardConfig | None, BeforeValidator(_switch)] = Field(
        default_factory=BackwardConfig, description="gradient statistics of every block; false: forward only"
    )
    # The default is "false", not None: defaults are validated too, and an empty value is refused.
    jacobian: Annotated[JacobianConfig | None, BeforeValidator(_switch)] = Field(  # type: ignore[assignment]
        False, description="the input-output Jacobian's singular values; off unless given"
    )
    memory: Literal["auto", "full", "stream"] = Field(
        "auto", description="full: every block's weights held at once; stream: block by block, memory bounded by "
        "one block's weights plus the batch (same numbers); auto: full where it fits, else stream"
    )

    @model_validator(mode="before")
    @classmethod
    def _bias_std(cls, data: Any) -> Any:
        return _bias_std(data)

    @field_serializer("backward", "jacobian")
    def _off_as_false(self, value: Frozen | None) -> Any:
        return False if value is None else value

    @model_serializer(mode="wrap")
    def _auto_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out when auto, so every config without it dumps (and hashes) as it did before it existed.
        out: dict[str, Any] = handler(self)
        if out.get("memory") == "auto":
            out.pop("memory", None)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = [
            InitErrorDetails(
                type=custom_error("conflict", message, path=path),
                loc=(), input=None,
            )
            for path, message in self._conflicts()
        ]
        if problems:  # every conflict, one line each, not just the first
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _conflicts(self) -> Iterable[tuple[str, str]]:
        depth, act = self.model.depth, self.model.activation
        if self.model.width * self.data.batch_size < 2:
            yield "data.batch_size", "a std needs at least 2 values per layer: raise batch_size or model.width"
        if self.model.norm == "batchnorm" and self.data.batch_size < 2:
            yield "data.batch_size", "batchnorm normalises over the batch: it needs data.batch_size >= 2"
        seen: set[int] = set()
        for i, layer in enumerate(self.init.layers):
            if not -depth <= layer.index < depth:
                yield f"init.layers.{i}.index", f"index {layer.index} is outside [-{depth}, {depth - 1}]"
            elif layer.index % depth in seen:
                yield f"init.layers.{i}.index", f"block {layer.index % depth} is overridden twice"
            seen.add(layer.index % depth)
        if self.init.bias.needs_matrix:
            yield "init.bias", f"{self.init.bias.scheme} needs a matrix; a bias can use: " + ", ".join(
                sorted(n for n, c in schemes.REGISTRY.items() if not c.needs_matrix)
            )
        if self.jacobian is not None and self.jacobian.samples > self.data.batch_size:
            yield "jacobian.samples", (f"{self.jacobian.samples} inputs asked for, and the batch has "
                                       f"{self.data.batch_size}: at most data.batch_size")
        if self.jacobian is not None and (self.model.block, self.model.norm) != ("plain", "none"):
            yield "jacobian", "the Jacobian covers plain blocks without a norm (model.block: plain, model.norm: none)"
        if self.data_parallel is not None and self.device == "cpu":
            yield "data_parallel", "needs device: cuda (or auto); device is cpu"
        if self.memory == "stream" and self.data_parallel is not None:
            yield "memory", "stream runs one block at a time on one device; data_parallel needs the whole model"
        if self.memory == "stream" and self.init.from_ is not None:
            yield "memory", "stream draws one block at a time; init.from loads the whole model (memory: full or auto)"
        if self.memory == "stream" and self.jacobian is not None:
            yield "memory", "stream holds one block at a time; the Jacobian needs the whole model (jacobian: false)"
        if self.data_parallel is not None and self.device.startswith("cuda:"):
            yield "device", "with data_parallel, give device: cuda and choose GPUs in data_parallel.device_ids"
        for path, scheme in [("init", self.init.weight)] + [
            (f"init.layers.{i}", layer.weight) for i, layer in enumerate(self.init.layers)
        ]:
            yield from _auto_problems(path, scheme, act)


def _auto_problems(path: str, scheme: Scheme, act: activations.Activation) -> Iterable[tuple[str, str]]:
    if getattr(scheme, "gain", None) == "torch" and act.torch_gain() is None:
        yield f"{path}.gain", (
            f"'torch': torch.nn.init.calculate_gain defines no gain for {act.label()}; "
            "use auto, second_moment, std_ratio or a number"
        )
    if getattr(scheme, "nonlinearity", None) == "auto" and act.torch_nonlinearity() is None:
        yield f"{path}.nonlinearity", (
            f"'auto': torch.nn.init.calculate_gain has no entry for {act.name!r}; name one of: "
            "linear, sigmoid, tanh, relu, leaky_relu, selu"
        )


# ---------------------------------------------------------------- overrides

#: A command-line value read as the YAML of a file reads it (one number rule for both).
parse_value = yamlfile.parse_value

ConfigPath = yamlfile.KeyPath
_INDEX = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class Override:
    """One value set over the config file: ``value`` at ``path``.

    ``source`` is how errors name it (``override 'model.depth=3'``, ``--device 'tpu'``);
    ``text``, when the value was typed as text, is what errors show of it.
    """

    path: ConfigPath
    value: Any
    source: str
    text: str | None = None

    @classmethod
    def parse(cls, text: str) -> Override:
        """A command-line ``dotted.path=value``; the value is read as YAML (see :mod:`initlab.yamlfile`)."""
        source = f"override {text!r}"
        if "=" not in text:
            raise ConfigError([f"{source}: expected dotted.path=value, e.g. model.depth=50"])
        dotted, value = text.split("=", 1)
        return cls(parse_path(dotted.strip(), source), parse_value(value), source, value)


def parse_path(dotted: str, source: str) -> ConfigPath:
    """A dotted config path (``init.layers.0.val``): list indices as integers; ``source`` names it in errors."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError([f"{source}: empty part in the path {dotted!r}"])
    return tuple(int(part) if _INDEX.match(part) else part for part in parts)


def _apply(raw: Any, override: Override, set_paths: set[ConfigPath]) -> None:
    """Set ``override`` in ``raw`` in place, creating the mappings on its path.

    Setting a tag (``init.scheme``, ``model.activation.name``, ``data.distribution``) drops
    the old choice's arguments the new one does not take, unless an override set them too:
    the override replaces the choice, and arguments belong to the choice.
    """
    path, node = override.path, raw
    configured = next((other for other in set_paths if other[: len(path)] == path and other != path), None)
    if override.value is False and configured is not None:  # backward.upstream=ones, then --no-backward
        raise ConfigError([f"{override.source}: turns off {_dotted(path)}, which {_dotted(configured)} (an earlier "
                           "override) configures; give only one of them"])
    for depth, key in enumerate(path[:-1]):
        key = _index(node, key, override)
        child = node[key] if not isinstance(node, dict) or key in node else None
        if isinstance(child, str):  # a bare name: expand to its tagged mapping
            shape = _shape(raw, path[: depth + 1])
            child = {shape.choice.tag if shape and shape.choice else "name": child}
        elif isinstance(child, bool):  # a section switched on or off: setting a key in it turns it on
            child = {}
        elif child is None:
            dotted = _dotted(path[: depth + 1])
            if isinstance(path[depth + 1], int):
                raise ConfigError([f"{override.source}: {dotted} has no item {path[depth + 1]} "
                                   f"(set the whole list, e.g. {dotted}=[...])"])
            child = {}
        elif not isinstance(child, (dict, list)):
            raise ConfigError([f"{override.source}: {_dotted(path[: depth + 1])} is not a mapping"])
        node[key] = child
        node = child
    node[_index(node, path[-1], override)] = override.value
    set_paths.add(path)
    shape = _shape(raw, path[:-1])
    if shape is not None and shape.choice is not None and path[-1] == shape.choice.tag and isinstance(node, dict):
        for key in [k for k in node if k not in shape.fields and (*path[:-1], k) not in set_paths]:
            del node[key]


def _index(container: Any, key: str | int, override: Override) -> Any:
    if isinstance(container, list):
        if not isinstance(key, int) or not -len(container) <= key < len(container):
            raise ConfigError([f"{override.source}: {str(key)!r} is not an index of a list of {len(container)}"])
        return key
    if not isinstance(container, dict):
        raise ConfigError([f"{override.source}: cannot set {str(key)!r} inside a {type(container).__name__}"])
    return str(key)


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in path)


# ---------------------------------------------------------------- what a mapping may hold


@dataclass(frozen=True)
class _Shape:
    """The keys the mapping at one config path may hold, and the registry its tag picks from."""

    fields: dict[str, FieldInfo]
    choice: Choice | None
    tag: str | None = None  # the registered name the mapping's tag selects


def _choice_in(info: FieldInfo) -> Choice | None:
    return next((m.func for m in info.metadata if isinstance(getattr(m, "func", None), Choice)), None)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class of ``Model``, ``Model | None`` or ``tuple[Model, ...]``."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
        return node[part]
    return None


def _shape(raw: Any, path: ConfigPath, root: Mapping[str, FieldInfo] | None = None) -> _Shape | None:
    """What the mapping at ``path`` of ``raw`` may hold, walking the models as the YAML nests
    them (None where the path, or a tag on it, names nothing)."""
    shape: _Shape | None = _Shape(dict(Config.model_fields if root is None else root), None)
    node, info = raw, None
    for part in path:
        node = _child(node, part)
        if isinstance(part, int):  # an item of a list: the list's field names its model
            shape = _shape_of(_model_in(info.annotation) if info else None, None, node)
        elif shape is not None and part in shape.fields:
            info = shape.fields[part]
            shape = _shape_of(_model_in(info.annotation), _choice_in(info), node)
        else:
            return None
    return shape


def _shape_of(model: type[BaseModel] | None, choice: Choice | None, node: Any) -> _Shape | None:
    if choice is not None:
        model = choice.model(node if node is not None else {})
    if model is None:
        return None
    fields = {info.alias or name: info for name, info in model.model_fields.items()}  # as the YAML spells them
    if not issubclass(model, _WithScheme):
        return _Shape(fields, choice, model.model_fields[choice.tag].default if choice else None)
    weight = _choice_in(fields.pop("weight"))
    scheme = _shape_of(None, weight, node if isinstance(node, dict) and "scheme" in node else "default")
    return _Shape({**(scheme.fields if scheme else {}), **fields}, weight, scheme.tag if scheme else None)


# ---------------------------------------------------------------- errors

#: How a value of each type is named in "expected an integer, got 1e2 (a float)".
_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "text"))
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "text",
    "model_type": "a mapping of keys to values", "model_attributes_type": "a mapping of keys to values",
    "dict_type": "a mapping of keys to values", "tuple_type": "a list", "list_type": "a list",
}


def _got(given: Any, text: str | None, kind: bool = False) -> str:
    """What the user gave, as they typed it: ``1e2 (a float)``, ``'ten'``, ``a list``."""
    if isinstance(given, (dict, list, tuple)):
        return "a mapping" if isinstance(given, dict) else "a list" if given else "an empty list"
    if given is None:
        return "nothing (null)"
    shown = repr(given) if isinstance(given, str) else text if text is not None else repr(given)
    name = next(name for cls, name in (*_KINDS, (object, "a value")) if isinstance(given, cls))
    return f"{shown} ({name})" if kind else shown


def _describe(error: Mapping[str, Any], path: ConfigPath, raw: Any, text: str | None,
              root: Mapping[str, FieldInfo] | None) -> str:
    """One error as the user reads it, naming what they wrote."""
    kind, given, message = error["type"], error.get("input"), str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return _unknown_key(raw, path, root)
    if kind == "literal_error":
        shape = _shape(raw, path[:-1], root)
        info = shape.fields.get(str(path[-1])) if shape else None
        return unknown(str(path[-1]), given, [str(v) for v in get_args(info.annotation)] if info else [])
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_got(given, text, kind=True)}"
    if kind == "string_pattern_mismatch":  # the study's name, which names its results folder
        return f"{given!r} is not a folder name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    if kind == "too_short":
        return f"expected at least one item, got {_got(given, text)}"
    if kind == "missing":
        return "field required"
    if kind in ("unknown_choice", "conflict") or isinstance(given, (dict, list, tuple)):
        return message[:1].lower() + message[1:]
    return f"{message[:1].lower()}{message[1:]} (got {_got(given, text)})"


def _unknown_key(raw: Any, path: ConfigPath, root: Mapping[str, FieldInfo] | None) -> str:
    key, shape = str(path[-1]), _shape(raw, path[:-1], root)
    if shape is None:
        return f"unknown key {key!r}"
    choice = shape.choice
    if choice and any(key in cls.model_fields for cls in choice.registry.values()):
        return f"{key!r} does not apply to {choice.kind} {shape.tag!r}; valid: {', '.join(sorted(shape.fields))}"
    return unknown("key", key, shape.fields)


def _node(raw: Any, path: ConfigPath) -> Any:
    for part in path:
        raw = _child(raw, part)
    return raw


def _raw_path(raw: Any, loc: Sequence[str | int]) -> ConfigPath:
    """The YAML path an error location refers to, skipping parts the user did not write
    (pydantic's union tags, the ``weight`` that gathers a flat scheme's arguments)."""
    path: list[str | int] = []
    for part in loc:
        child = _child(raw, part)
        if child is not None or (isinstance(raw, dict) and part in raw):
            raw = child
            path.append(part)
    return tuple(path)


def format_errors(
    err: ValidationError,
    raw: dict[str, Any],
    lines: Mapping[ConfigPath, int],
    source: str,
    overrides: Iterable[Override],
    prefix: ConfigPath = (),
    texts: Mapping[ConfigPath, str] | None = None,
    root: Mapping[str, FieldInfo] | None = None,
) -> list[str]:
    """One line per validation error, in the file's order: ``file:line: field.path: what is wrong``.

    ``lines`` and ``texts`` are the file's (see :class:`initlab.yamlfile.Document`); an error
    under an override names the override instead; ``root`` is the model's fields (the Config's
    by default).
    """
    overrides = list(overrides)
    located = []
    for n, error in enumerate(_causes(err.errors())):
        path = _error_path(error, raw, prefix)
        where, line = _where(_blamed(error, path, raw, root, overrides), lines, source, overrides)
        text = next((o.text for o in reversed(overrides) if o.path == path), (texts or {}).get(path))
        what = _describe(error, path, raw, text, root)
        located.append((line, n, f"{where}: {_dotted(path) or '(top level)'}: {what}"))
    return [message for *_, message in sorted(located)]


def _blamed(error: Mapping[str, Any], path: ConfigPath, raw: Any, root: Mapping[str, FieldInfo] | None,
            overrides: Sequence[Override]) -> ConfigPath:
    """The path whose writer an error names: for a missing argument, the tag that chose what
    requires it (``init.layers.0.scheme=constant`` makes ``val`` required) when an override set it."""
    shape = _shape(raw, path[:-1], root) if error["type"] == "missing" and path else None
    tag = (*path[:-1], shape.choice.tag) if shape and shape.choice else None
    return tag if tag and any(o.path == tag for o in overrides) else path


def _causes(errors: list[Any]) -> list[Any]:
    """The errors without those that only follow from another: a list "too short after
    validation" because its items failed (``device_ids: [a]`` is one problem, not two)."""
    def follows(error: Any) -> bool:
        loc = tuple(error["loc"])
        return error["type"] == "too_short" and any(
            len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in errors
        )

    return [error for error in errors if not follows(error)]


def _error_path(error: Mapping[str, Any], raw: Any, prefix: ConfigPath) -> ConfigPath:
    ctx = error.get("ctx") or {}
    if "path" in ctx:  # a conflict between fields names the one to change
        return tuple(int(p) if _INDEX.match(p) else p for p in str(ctx["path"]).split("."))
    path = _raw_path(raw, (*prefix, *error["loc"]))
    node = _node(raw, path)
    if "key" in ctx and path[-1:] != (ctx["key"],) and isinstance(node, dict) and ctx["key"] in node:
        return (*path, ctx["key"])
    if error["type"] == "missing":  # the field the user did not write: name it
        return (*path, error["loc"][-1])
    return path


def _where(
    path: ConfigPath, lines: Mapping[ConfigPath, int], source: str, overrides: Sequence[Override]
) -> tuple[str, float]:
    """Who wrote ``path``, and the line to sort by: the last override that set it or something
    under it, else the file's line of it (or of the mapping that holds it)."""
    for override in reversed(overrides):
        if override.path == path[: len(override.path)]:
            return override.source, math.inf
    for override in reversed(overrides):
        if path and override.path[: len(path)] == path:
            return override.source, math.inf
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return f"{source}:{lines[path[:n]]}", lines[path[:n]]
    return (f"{source}:1", 1) if lines else (source, 0)


def parse_cli_choice(kind: Literal["activation", "scheme"], value: dict[str, Any], source: str) -> Any:
    """Validate an activation or scheme given on the command line; errors name ``source``."""
    target = activations.ActivationConfig if kind == "activation" else SchemeConfig
    try:
        return validate_as(target, value)
    except ValidationError as err:
        root: dict[str, FieldInfo] = {kind: FieldInfo.from_annotation(target)}  # type: ignore[arg-type]
        raise ConfigError(format_errors(err, {kind: value}, {}, source, (), prefix=(kind,), root=root)) from None


def _name_from(stem: str) -> str:
    """A results-folder name from a file name: unsafe characters become ``-``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip("-_.")
    return name or "study"


def _read(path: str | Path, source: str) -> yamlfile.Document:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such config file"]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError([f"{source}: cannot read the config: {err}"]) from None
    doc = yamlfile.read(text, source)
    doc.data.setdefault("name", _name_from(Path(path).stem))
    return doc


def load_config(path: str | Path | None, overrides: Sequence[str | Override] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate once.

    An override is ``dotted.path=value`` text (the value read as YAML) or a typed
    :class:`Override`, whose ``source`` names it in errors (``--device 'tpu'``).
    """
    source = str(path) if path is not None else "(defaults)"
    doc = _read(path, source) if path is not None else yamlfile.Document({})
    if path is not None:
        _relative_to_file(doc.data, Path(path))
    typed = [o if isinstance(o, Override) else Override.parse(o) for o in overrides]
    return _validated(doc, source, typed)


def _relative_to_file(data: dict[str, Any], path: Path) -> None:
    """A relative ``init.from`` in a YAML file names a file beside the YAML, not in the current folder."""
    init = data.get("init")
    loaded = init.get("from") if isinstance(init, dict) else None
    if isinstance(loaded, str) and loaded and not Path(loaded).expanduser().is_absolute():
        init["from"] = str(path.parent / loaded)  # type: ignore[index]


def patched(raw: Mapping[str, Any], overrides: Sequence[Override]) -> Config:
    """A config from a mapping (another config's dump, say) with ``overrides`` set on it, validated once;
    ``raw`` is not changed. Errors name the override that set the field (``--grid init.gain=x``)."""
    return _validated(yamlfile.Document(copy.deepcopy(dict(raw))), "(config)", overrides)


def _validated(doc: yamlfile.Document, source: str, overrides: Sequence[Override]) -> Config:
    set_paths: set[ConfigPath] = set()
    for override in overrides:
        _apply(doc.data, override, set_paths)
    try:
        return Config.model_validate(doc.data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, doc.data, doc.lines, source, overrides, texts=doc.texts)) from None


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, in the same shape a user writes (re-loads to an equal config)."""
    return yamlfile.dump(config.model_dump(mode="json"))
