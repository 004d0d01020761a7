"""The study config: one frozen pydantic model, loaded once from YAML plus command-line overrides.

Precedence is YAML < overrides, resolved in :func:`load_config` and nowhere else; the
result is passed explicitly to everything that needs it. Every error names the file
and line (or the override) and the dotted field path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, NonNegativeFloat, ValidationError, model_serializer, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from initlab import activations, schemes
from initlab._pydantic import Frozen, validate_as
from initlab.activations import ActivationConfig, Linear
from initlab.errors import ConfigError
from initlab.schemes import Scheme, SchemeConfig, Zeros

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check_device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError(f"unknown device {value!r}; allowed: auto, cpu, cuda, cuda:N")
    return value


def _scheme_keys(data: dict[str, Any], structural: set[str]) -> set[str]:
    """The keys a flat ``{scheme: ..., <args>, <structural keys>}`` mapping may hold."""
    cls = schemes.REGISTRY.get(schemes.canonical(str(data.get("scheme", "default"))))
    return (set(cls.model_fields) if cls is not None else set(data)) | structural


def _split_scheme(data: dict[str, Any], structural: set[str]) -> dict[str, Any]:
    """Gather the scheme and its arguments into ``weight``; keep the structural keys."""
    weight = {k: v for k, v in data.items() if k not in structural}
    weight.setdefault("scheme", "default")
    return {**{k: v for k, v in data.items() if k in structural}, "weight": weight}


def _flatten(weight: Scheme, rest: dict[str, Any]) -> dict[str, Any]:
    return {**weight.model_dump(mode="json"), **rest}


class ModelConfig(Frozen):
    """The network: ``depth`` blocks of ``Linear(width, width)`` followed by ``activation``."""

    depth: int = Field(100, ge=1, le=100_000, strict=True, description="number of Linear(+activation) blocks")
    width: int = Field(256, ge=1, strict=True, description="features in and out of every block")
    activation: ActivationConfig = Field(default_factory=Linear)
    bias: bool = False


class LayerInit(Frozen):
    """A per-layer override of the weight scheme: ``{index: 0, scheme: constant, val: 0.5}``."""

    index: int = Field(description="block index; negative counts from the end")
    weight: SchemeConfig

    @classmethod
    def _accepted_keys(cls, data: dict[str, Any]) -> set[str]:
        return _scheme_keys(data, {"index"})

    @classmethod
    def _reshape(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _split_scheme(data, {"index"})

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        return _flatten(self.weight, {"index": self.index})


class InitConfig(Frozen):
    """How weights (``scheme`` and its arguments) and biases are initialised."""

    weight: SchemeConfig = Field(default_factory=lambda: schemes.Default())
    layers: tuple[LayerInit, ...] = ()
    bias: SchemeConfig = Field(default_factory=Zeros)

    @classmethod
    def _accepted_keys(cls, data: dict[str, Any]) -> set[str]:
        return _scheme_keys(data, {"layers", "bias"})

    @classmethod
    def _reshape(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _split_scheme(data, {"layers", "bias"})

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        return _flatten(
            self.weight,
            {"layers": [layer.model_dump(mode="json") for layer in self.layers],
             "bias": self.bias.model_dump(mode="json")},
        )

    def scheme_for(self, layer: int, depth: int) -> Scheme:
        """The weight scheme of block ``layer`` (0-based) in a network of ``depth`` blocks."""
        for override in self.layers:
            if override.index % depth == layer:
                return override.weight
        return self.weight


class DataConfig(Frozen):
    """The input batch: ``normal`` (mean, std) or ``uniform`` (low, high)."""

    batch_size: int = Field(16, ge=1, strict=True)
    distribution: Literal["normal", "uniform"] = "normal"
    mean: float = 0.0
    std: NonNegativeFloat = 1.0
    low: float = -1.0
    high: float = 1.0

    @model_validator(mode="after")
    def _params_match(self) -> DataConfig:
        foreign = {"normal": {"low", "high"}, "uniform": {"mean", "std"}}[self.distribution]
        given = sorted(foreign & self.model_fields_set)
        if given:
            message = f"{given[0]!r} does not apply to distribution {self.distribution!r}"
            raise PydanticCustomError("conflict", message, {"key": given[0]})
        if self.distribution == "uniform" and self.high <= self.low:
            raise ValueError(f"uniform needs low < high, got low={self.low}, high={self.high}")
        return self

    @model_serializer(mode="plain")
    def _own_params(self) -> dict[str, Any]:
        params = ("mean", "std") if self.distribution == "normal" else ("low", "high")
        out: dict[str, Any] = {"batch_size": self.batch_size, "distribution": self.distribution}
        return out | {name: getattr(self, name) for name in params}


class VerdictConfig(Frozen):
    """Thresholds of the regime verdict (see the README's "Verdict" section)."""

    orders: float = Field(1.0, gt=0.0, description="|decades| of end-to-end change that decide unless settled")
    settled_orders: float = Field(3.0, gt=0.0, description="|decades| of end-to-end change that decide alone")
    explode_ratio: float = Field(2.0, gt=1.0, description="std/input std above this explodes if the tail still rises")
    vanish_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="std/input std below this vanishes if the tail falls")
    settle: float = Field(0.05, ge=0.0, description="decades the tail must still move to count as a trend")
    trend_t: float = Field(2.5, gt=0.0, description="|HAC t| of the tail's mean step needed to call a trend real")
    saturation: float = Field(0.5, gt=0.0, le=1.0, description="mean saturated fraction over the tail: saturated")
    dead: float = Field(0.9, gt=0.0, le=1.0, description="mean dead-unit fraction over the tail that is noted")
    finite_width: float = Field(1.0, gt=0.0, description="depth/width from which finite width is noted")


class DataParallelConfig(Frozen):
    """Run the model under ``nn.DataParallel`` on these CUDA devices."""

    device_ids: tuple[int, ...] = Field(min_length=1, description="CUDA device ids, the first holds the model")
    output_device: int | None = Field(None, ge=0, description="where outputs are gathered; default device_ids[0]")

    @model_validator(mode="after")
    def _distinct(self) -> DataParallelConfig:
        if len(set(self.device_ids)) != len(self.device_ids) or min(self.device_ids) < 0:
            raise ValueError(f"device_ids must be distinct non-negative ids, got {list(self.device_ids)}")
        return self


class Config(Frozen):
    """One study. Field names are initlab's public config interface."""

    name: str = Field("study", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, ge=0, strict=True)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    data: DataConfig = Field(default_factory=DataConfig)
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

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = [
            InitErrorDetails(
                type=PydanticCustomError("conflict", message.replace("{", "{{").replace("}", "}}"), {"path": path}),
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
        if self.data_parallel is not None and self.device == "cpu":
            yield "data_parallel", "needs device: cuda (or auto); device is cpu"
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


# ---------------------------------------------------------------- loading


def _line_map(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    """Record the 1-based line of every key (mappings) and item (sequences) under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_map(item, path + (i,), out)


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple[str | int, ...], int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}:1: the config must be a mapping of keys to values"])
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return raw, lines


def parse_value(text: str) -> Any:
    """An override's value as YAML would read it, with ``1e-3`` read as a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_TAGS = {"activation": "name"}  # other tagged mappings (init, bias, layers) use "scheme"


def _tag_fields(tag: str, value: Any, parent_key: str) -> set[str] | None:
    """Keys the class named by ``value`` accepts, for the mapping at ``parent_key``."""
    registry: Mapping[str, Any]
    if tag == "name":
        registry, value = activations.REGISTRY, activations.ALIASES.get(str(value), value)
    else:
        registry, value = schemes.REGISTRY, schemes.canonical(str(value))
    cls = registry.get(value)
    if cls is None:
        return None
    extra = {"init": {"layers", "bias"}}.get(parent_key, set()) | ({"index"} if isinstance(parent_key, int) else set())
    return set(cls.model_fields) | extra


def apply_override(raw: dict[str, Any], override: str, set_paths: set[tuple[str, ...]]) -> None:
    """Apply one ``dotted.path=value`` override to ``raw`` in place.

    Setting a tag (``init.scheme``, ``model.activation.name``) drops the arguments of the
    old choice the new one does not take, unless an override set them too: the override
    replaces the choice, and arguments belong to the choice.
    """
    if "=" not in override:
        raise ConfigError([f"override {override!r}: expected dotted.path=value, e.g. model.depth=50"])
    dotted, text = override.split("=", 1)
    path = dotted.strip().split(".")
    if not all(path):
        raise ConfigError([f"override {override!r}: empty part in the path {dotted!r}"])
    node: Any = raw
    for depth, key in enumerate(path[:-1]):
        container, node_key = node, _index(node, key, override)
        child = container[node_key] if _has(container, node_key) else None
        if isinstance(child, str):  # a bare name: expand to its tagged mapping
            child = {_TAGS.get(key, "scheme"): child}
        elif child is None:
            if path[depth + 1].lstrip("-").isdigit():
                raise ConfigError([f"override {override!r}: {'.'.join(path[: depth + 1])} has no item "
                                   f"{path[depth + 1]} (set the whole list, e.g. {'.'.join(path[: depth + 1])}=[...])"])
            child = {}
        elif not isinstance(child, (dict, list)):
            raise ConfigError([f"override {override!r}: {'.'.join(path[: depth + 1])} is not a mapping"])
        container[node_key] = child
        node = child
    last = _index(node, path[-1], override)
    value = parse_value(text)
    node[last] = value
    set_paths.add(tuple(path))
    parent_key: Any = path[-2] if len(path) > 1 else ""
    if parent_key.isdigit():
        parent_key = int(parent_key)
    tagged = (path[-1], parent_key) == ("name", "activation") or (
        path[-1] == "scheme" and (parent_key in ("init", "bias") or isinstance(parent_key, int))
    )
    if tagged and isinstance(node, dict):
        accepted = _tag_fields(path[-1], value, parent_key)
        if accepted is not None:
            for key in list(node):
                if key not in accepted and (*path[:-1], key) not in set_paths:
                    del node[key]


def _index(container: Any, key: str, override: str) -> Any:
    if isinstance(container, list):
        if not key.lstrip("-").isdigit() or not -len(container) <= int(key) < len(container):
            raise ConfigError([f"override {override!r}: {key!r} is not an index of a list of {len(container)}"])
        return int(key)
    if not isinstance(container, dict):
        raise ConfigError([f"override {override!r}: cannot set {key!r} inside a {type(container).__name__}"])
    return key


def _has(container: Any, key: Any) -> bool:
    return key in container if isinstance(container, dict) else True


def _raw_path(raw: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """The YAML path an error location refers to, skipping parts the user did not write
    (pydantic's union tags, the ``weight`` that gathers a flat scheme's arguments)."""
    path: list[str | int] = []
    node = raw
    for part in loc:
        if _contains(node, part):
            node = node[part]
            path.append(part)
    return tuple(path)


def _contains(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if error["type"] in ("unknown_key", "unknown_choice", "conflict", "value_error"):
        return message.removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, (dict, list)) or error["type"] == "missing":
        return message.lower() if message[:1].isupper() else message
    return f"{message[:1].lower()}{message[1:]} (got {given!r})"


def format_errors(
    err: ValidationError,
    raw: dict[str, Any],
    lines: Mapping[tuple[str | int, ...], int],
    source: str,
    overrides: Mapping[tuple[str, ...], str],
    prefix: tuple[str, ...] = (),
) -> list[str]:
    """One line per validation error: ``file:line: field.path: what is wrong``."""
    out = []
    for error in err.errors():
        ctx = error.get("ctx") or {}
        if "path" in ctx:
            loc: tuple[str | int, ...] = tuple(int(p) if p.isdigit() else p for p in ctx["path"].split("."))
        else:
            loc = _raw_path(raw, (*prefix, *error["loc"]))
            if "key" in ctx and loc[-1:] != (ctx["key"],) and (*loc, ctx["key"]) in lines:
                loc = (*loc, ctx["key"])
            elif error["type"] == "missing":  # the field the user did not write: name it
                loc = (*loc, error["loc"][-1])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        where = _where(loc, lines, source, overrides) if lines or overrides else source
        out.append(f"{where}: {dotted}: {_describe(error)}")
    return out


def _where(
    loc: tuple[str | int, ...],
    lines: Mapping[tuple[str | int, ...], int],
    source: str,
    overrides: Mapping[tuple[str, ...], str],
) -> str:
    key = tuple(str(p) for p in loc)
    for n in range(len(key), 0, -1):
        if key[:n] in overrides:
            return f"override {overrides[key[:n]]!r}"
    below = [text for path, text in overrides.items() if key and path[: len(key)] == key]
    if below:  # the override created or changed something under this path
        return f"override {below[0]!r}"
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{source}:{lines[loc[:n]]}"
    return f"{source}:1"


def parse_cli_choice(kind: Literal["activation", "scheme"], value: dict[str, Any], source: str) -> Any:
    """Validate an activation or scheme given on the command line; errors name ``source``."""
    target = activations.ActivationConfig if kind == "activation" else SchemeConfig
    try:
        return validate_as(target, value)
    except ValidationError as err:
        lines: dict[tuple[str | int, ...], int] = {}
        raise ConfigError(format_errors(err, {kind: value}, lines, source, {}, prefix=(kind,))) from None


def _name_from(stem: str) -> str:
    """A results-folder name from a file name: unsafe characters become ``-``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip("-_.")
    return name or "study"


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate once."""
    source = str(path) if path is not None else "(defaults)"
    if path is None:
        raw: dict[str, Any] = {}
        lines: dict[tuple[str | int, ...], int] = {}
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([f"{source}: no such config file"]) from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
            raise ConfigError([f"{source}: cannot read the config: {err}"]) from None
        raw, lines = _parse_yaml(text, source)
        raw.setdefault("name", _name_from(Path(path).stem))
    set_paths: set[tuple[str, ...]] = set()
    by_path: dict[tuple[str, ...], str] = {}
    for override in overrides:
        before = set(set_paths)
        apply_override(raw, override, set_paths)
        for new in set_paths - before:
            by_path[new] = override
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, raw, lines, source, by_path)) from None


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, in the same shape a user writes (re-loads to an equal config)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
