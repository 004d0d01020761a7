from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from initlab.config import Config, load_config, to_yaml
from initlab.errors import ConfigError
from tests.conftest import CONFIGS

GOOD = """\
name: demo
seed: 1
model:
  depth: 10
  width: 64
  activation: {name: leaky_relu, negative_slope: 0.2}
  bias: true
init:
  scheme: xavier
  gain: 2.0
  layers:
    - {index: 0, scheme: constant, val: 0.5}
    - {index: -1, scheme: orthogonal}
  bias: {scheme: uniform, a: -0.1, b: 0.1}
data:
  batch_size: 4
  distribution: uniform
  low: -2
  high: 2
"""


def errors(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.lines


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load_and_round_trip(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    assert Config.model_validate(yaml.safe_load(to_yaml(config))) == config


def test_full_config_resolves_aliases_and_parameters(write_yaml) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_yaml(GOOD))
    assert config.model.activation.label() == "leaky_relu(negative_slope=0.2)"
    assert config.init.weight.scheme == "xavier_uniform"
    assert config.init.scheme_for(0, 10).scheme == "constant"
    assert config.init.scheme_for(9, 10).scheme == "orthogonal"
    assert config.init.scheme_for(5, 10).label() == "xavier_uniform(gain=2.0)"
    assert (config.data.low, config.data.high) == (-2, 2)
    assert Config.model_validate(yaml.safe_load(to_yaml(config))) == config


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.seed = 2  # type: ignore[misc]


def test_name_defaults_to_file_stem(write_yaml) -> None:  # type: ignore[no-untyped-def]
    assert load_config(write_yaml("seed: 2\n", "my-study.yaml")).name == "my-study"


def test_overrides_take_precedence_and_parse_values(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(GOOD)
    config = load_config(path, ["model.depth=50", "init.gain=auto", "data.low=-1e-3", "seed=7"])
    assert (config.model.depth, config.init.weight.gain, config.data.low, config.seed) == (50, "auto", -0.001, 7)


def test_overriding_the_scheme_drops_the_old_schemes_arguments(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = CONFIGS / "tanh-xavier.yaml"
    config = load_config(path, ["model.depth=50", "init.scheme=kaiming_normal"])
    assert config.init.weight.label() == "kaiming_normal"
    both = load_config(path, ["init.scheme=xavier_normal", "init.gain=3"])
    assert both.init.weight.label() == "xavier_normal(gain=3.0)"


def test_overriding_the_study_name_is_not_a_tag_switch(write_yaml) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_yaml(GOOD), ["name=tanh"])
    assert config.name == "tanh"
    assert config.model.depth == 10  # nothing else was dropped


def test_override_expands_a_bare_activation_name(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("model: {activation: leaky_relu}\n")
    config = load_config(path, ["model.activation.negative_slope=0.3"])
    assert config.model.activation.label() == "leaky_relu(negative_slope=0.3)"
    swapped = load_config(write_yaml(GOOD), ["model.activation.name=tanh"])
    assert swapped.model.activation.label() == "tanh"


LINE = re.compile(r"^(?P<where>[^:]+\.yaml:\d+|override '[^']+'): (?P<path>[\w.]+|\(top level\)): (?P<what>.+)$")


@pytest.mark.parametrize(
    ("text", "line", "path", "what"),
    [
        ("model:\n  depth: 0\n", 2, "model.depth", "greater than or equal to 1"),
        ("model:\n  width: 0\n", 2, "model.width", "greater than or equal to 1"),
        ("data:\n  batch_size: 0\n", 2, "data.batch_size", "greater than or equal to 1"),
        ("model:\n  depth: ten\n", 2, "model.depth", "expected an integer, got 'ten' (text)"),
        ("seed: 1\nmodle: {}\n", 2, "modle", "did you mean 'model'"),
        ("model:\n  widht: 3\n", 2, "model.widht", "did you mean 'width'"),
        ("model:\n  activation: tanhh\n", 2, "model.activation", "did you mean 'tanh'? valid: elu, gelu"),
        ("model:\n  activation: {name: elu, alfa: 1}\n", 2, "model.activation.alfa", "did you mean 'alpha'"),
        ("model:\n  activation: {name: elu, alpha: -1}\n", 2, "model.activation.alpha", "greater than 0"),
        ("init:\n  scheme: xavier_unifrom\n", 2, "init.scheme", "did you mean 'xavier_uniform'"),
        ("init:\n  scheme: xavier\n  gian: 2\n", 3, "init.gian", "did you mean 'gain'"),
        ("init:\n  scheme: xavier\n  layer: []\n", 3, "init.layer", "did you mean 'layers'"),
        ("init:\n  scheme: sparse\n  sparsity: 2\n", 3, "init.sparsity", "less than or equal to 1"),
        ("init:\n  bias: xavier\n", 2, "init.bias", "needs a matrix"),
        ("model: {depth: 6}\ninit:\n  layers:\n    - {index: 9, scheme: zeros}\n", 4, "init.layers.0.index",
         "outside [-6, 5]"),
        ("model: {activation: gelu}\ninit:\n  scheme: xavier\n  gain: torch\n", 4, "init.gain", "no gain for gelu"),
        ("init:\n  scheme: xavier\n  gain: big\n", 3, "init.gain",
         "unknown gain 'big'; valid: auto, second_moment, std_ratio, torch"),
        ("data:\n  low: 1\n", 2, "data.low", "does not apply to distribution 'normal'"),
        ("device: gpu\n", 1, "device", "valid: auto, cpu, cuda, cuda:N"),
        ("name: x y\n", 1, "name", "'x y' is not a folder name: use letters, digits"),
        ("dtype: float8\n", 1, "dtype", "valid: bfloat16, float16, float32, float64"),
    ],
)
def test_bad_values_name_file_line_and_path(write_yaml, text: str, line: int, path: str, what: str) -> None:  # type: ignore[no-untyped-def]
    source = write_yaml(text)
    lines = errors(source)
    assert len(lines) == 1, lines
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert match["where"] == f"{source}:{line}"
    assert match["path"] == path
    assert what in match["what"]


def test_every_error_is_reported_not_just_the_first(write_yaml) -> None:  # type: ignore[no-untyped-def]
    lines = errors(write_yaml("modle: {}\nseed: -1\ndata: {batch_size: 0}\n"))
    assert [line.split(": ")[1] for line in lines] == ["modle", "seed", "data.batch_size"]


def test_malformed_yaml_names_the_line(write_yaml) -> None:  # type: ignore[no-untyped-def]
    source = write_yaml("model:\n  depth: 3\n  width: [1, 2\nseed: 1\n")
    (line,) = errors(source)
    assert line.startswith(f"{source}:") and "malformed YAML" in line


def test_non_mapping_and_missing_files(tmp_path: Path, write_yaml) -> None:  # type: ignore[no-untyped-def]
    assert errors(write_yaml("- 1\n- 2\n"))[0].endswith("the config must be a mapping of keys to values")
    missing = tmp_path / "nope.yaml"
    assert errors(missing) == [f"{missing}: no such config file"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.depth", "expected dotted.path=value"),
        ("model.depth=abc", "override 'model.depth=abc': model.depth: expected an integer, got 'abc' (text)"),
        ("model.dpth=3", "override 'model.dpth=3': model.dpth: unknown key 'dpth'; did you mean 'depth'?"),
        ("seed.x=1", "seed is not a mapping"),
        ("init.layers.5.val=1", "'5' is not an index of a list of 0"),
    ],
)
def test_bad_overrides_are_named(write_yaml, override: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    (line,) = errors(write_yaml("seed: 1\ninit: {layers: []}\n"), (override,))
    assert expected in line


def test_every_conflict_is_reported(write_yaml) -> None:  # type: ignore[no-untyped-def]
    text = ("model: {depth: 6, activation: gelu}\ninit:\n  scheme: xavier\n  gain: torch\n"
            "  layers:\n    - {index: 7, scheme: zeros}\n  bias: xavier\n")
    paths = [line.split(": ")[1] for line in errors(write_yaml(text))]
    assert sorted(paths) == ["init.bias", "init.gain", "init.layers.0.index"]


def test_a_missing_required_field_is_named(write_yaml) -> None:  # type: ignore[no-untyped-def]
    source = write_yaml("init:\n  scheme: constant\n")
    assert errors(source) == [f"{source}:1: init.val: field required"]  # the mapping that lacks it
    (line,) = errors(write_yaml("init:\n  layers:\n    - {index: 0, scheme: sparse}\n"))
    assert "init.layers.0.sparsity: field required" in line


def test_errors_under_an_override_name_the_override(write_yaml) -> None:  # type: ignore[no-untyped-def]
    source = write_yaml("seed: 1\n")
    assert errors(source, ("foo.bar=1",))[0].startswith("override 'foo.bar=1': foo: unknown key 'foo'")
    assert errors(source, ("data_parallel.device_ids=[0]",))[0].startswith(
        "override 'data_parallel.device_ids=[0]': data_parallel: needs device: cuda"
    )
    (line,) = errors(source, ("init.layers.0.val=0.3",))
    assert "init.layers has no item 0" in line


def test_name_from_an_unusual_file_name(write_yaml) -> None:  # type: ignore[no-untyped-def]
    assert load_config(write_yaml("seed: 1\n", "my study.yaml")).name == "my-study"
    assert load_config(write_yaml("seed: 1\n", "_x.yaml")).name == "x"


@pytest.mark.parametrize("text", ["model: {depth: true}\n", "data: {batch_size: false}\n", "seed: true\n"])
def test_booleans_are_not_integers(write_yaml, text: str) -> None:  # type: ignore[no-untyped-def]
    (line,) = errors(write_yaml(text))
    assert "expected an integer, got " in line and "(a boolean)" in line


def test_a_single_value_per_layer_has_no_std(write_yaml) -> None:  # type: ignore[no-untyped-def]
    (line,) = errors(write_yaml("model: {width: 1}\ndata: {batch_size: 1}\n"))
    assert "data.batch_size: a std needs at least 2 values per layer" in line
