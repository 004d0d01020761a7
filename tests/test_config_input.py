"""What a user types into a config or onto the command line, and what initlab says back (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from initlab.cli import app
from initlab.config import Config, Override, load_config, to_yaml
from initlab.errors import ConfigError
from initlab.schemes import Constant, Normal
from tests.conftest import CONFIGS

runner = CliRunner()
TINY = ["model.depth=3", "model.width=8"]
#: Phrases of pydantic's own messages that mean nothing to someone who wrote a YAML file.
INTERNALS = ("instance of", "tuple", "model_type", "Input should be a valid dictionary", "Extra inputs",
             "pydantic", "function-", "Value error", "[type=", "Choice(", "<class", "typing.", "literal[")


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def refused(*args: str) -> str:
    """The one error line of a command that must be refused as bad input (exit 2, nothing on stdout)."""
    code, out, err = invoke(*args)
    assert code == 2, (code, out, err)
    assert out == "" and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


# ---------------------------------------------------------------- duplicate keys (item 8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: 1\nmodel: {}\nseed: 2\n", ":3: seed: duplicate key (first at line 1)"),
        ("model:\n  depth: 3\n  width: 8\n  depth: 5\n", ":4: model.depth: duplicate key (first at line 2)"),
        ("init:\n  layers:\n    - index: 0\n      scheme: zeros\n      index: 1\n",
         ":5: init.layers.0.index: duplicate key (first at line 3)"),
    ],
)
def test_a_duplicate_key_names_both_lines(write_yaml, text: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(text)
    assert refused("run", str(path), "--no-save") == f"{path}{expected}"


@pytest.mark.parametrize(
    ("text", "depth", "width"),
    [
        ("model: {<<: {depth: 3, width: 8}, width: 4}\n", 3, 4),
        ("model:\n  width: 4\n  <<: {depth: 3, width: 8}\n", 3, 4),
        ("model: {<<: [{depth: 3}, {depth: 5, width: 8}]}\n", 3, 8),
    ],
)
def test_a_key_written_beside_a_merge_overrides_it(write_yaml, text: str, depth: int, width: int) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_yaml(text))
    assert (config.model.depth, config.model.width) == (depth, width)


def test_a_merged_anchor_keeps_its_lines(write_yaml) -> None:  # type: ignore[no-untyped-def]
    text = "init:\n  layers:\n    - &l {index: 0, scheme: constant, val: 0.5}\n    - {<<: *l, index: 1}\n"
    layers = load_config(write_yaml(text, "ok.yaml"), ["model.depth=3"]).init.layers
    assert [(layer.index, layer.weight) for layer in layers] == [(0, Constant(val=0.5)), (1, Constant(val=0.5))]
    path = write_yaml(text + "    - {<<: *l, index: 2, val: x}\n")
    line = refused("run", str(path), "model.depth=3", "--no-save")
    assert line == f"{path}:5: init.layers.2.val: expected a number, got 'x' (text)"


def test_a_duplicate_beside_a_merge_is_still_refused(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("model:\n  <<: {depth: 3}\n  width: 4\n  width: 5\n")
    assert refused("run", str(path), "--no-save") == f"{path}:4: model.width: duplicate key (first at line 3)"


def test_every_duplicate_is_reported(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("seed: 1\nseed: 2\nmodel: {depth: 3, depth: 4}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.lines == [f"{path}:2: seed: duplicate key (first at line 1)",
                                f"{path}:3: model.depth: duplicate key (first at line 3)"]


# ---------------------------------------------------------------- one number rule (item 13)


@pytest.mark.parametrize(("text", "value"), [("1e-3", 0.001), (".5", 0.5), ("2.5E+1", 25.0), ("1e2", 100.0)])
def test_a_number_reads_the_same_in_a_file_and_an_override(write_yaml, text: str, value: float) -> None:  # type: ignore[no-untyped-def]
    from_file = load_config(write_yaml(f"init: {{scheme: normal, std: {text}}}\n"))
    from_override = load_config(write_yaml("init: {scheme: normal}\n"), [f"init.std={text}"])
    assert from_file.init.weight == from_override.init.weight
    assert from_file.init.weight.std == value  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "value"), [("017", 17), ("0o17", 15), ("0x11", 17), ("+5", 5)])
def test_integers_are_yaml_1_2(write_yaml, text: str, value: int) -> None:  # type: ignore[no-untyped-def]
    assert load_config(write_yaml(f"model: {{depth: {text}}}\n")).model.depth == value
    assert load_config(write_yaml("seed: 1\n"), [f"model.depth={text}"]).model.depth == value


@pytest.mark.parametrize("field", ["model.depth", "model.width", "data.batch_size", "seed"])
def test_an_integer_field_refuses_a_float_alike_from_file_and_override(write_yaml, field: str) -> None:  # type: ignore[no-untyped-def]
    section, _, key = field.rpartition(".")
    text = f"{section}:\n  {key}: 1e2\n" if section else f"{key}: 1e2\n"
    path = write_yaml(text)
    from_file = refused("run", str(path), "--no-save")
    from_override = refused("run", str(write_yaml("seed: 1\n", "other.yaml")), f"{field}=1e2", "--no-save")
    what = f"{field}: expected an integer, got 1e2 (a float)"
    assert from_file == f"{path}:{text.count(chr(10))}: {what}"
    assert from_override == f"override '{field}=1e2': {what}"


@pytest.mark.parametrize(("field", "text", "shown"), [
    ("init.std", "1_000", "'1_000' (text)"), ("init.std", '"0.5"', "'0.5' (text)"),
    ("init.std", "' 2 '", "' 2 ' (text)"), ("init.std", "'1e-1'", "'1e-1' (text)"),
    ("init.mean", "true", "true (a boolean)"), ("data.mean", "1_000", "'1_000' (text)"),
    ("model.activation.negative_slope", "'0.2'", "'0.2' (text)"),
])
def test_a_float_field_takes_numbers_only_from_file_and_override(write_yaml, field: str, text: str, shown: str) -> None:  # type: ignore[no-untyped-def]
    section, key = field.rsplit(".", 1)
    head = {"init": "init: {scheme: normal, ", "data": "data: {",
            "model.activation": "model: {activation: {name: leaky_relu, "}
    path = write_yaml(f"{head[section]}{key}: {text}}}{'}' if section.startswith('model') else ''}\n")
    what = f"{field}: expected a number, got {shown}"
    assert refused("run", str(path), "--no-save") == f"{path}:1: {what}"
    base = write_yaml(f"{head[section]}}}{'}' if section.startswith('model') else ''}\n", "base.yaml")
    assert refused("run", str(base), f"{field}={text}", "--no-save") == f"override {f'{field}={text}'!r}: {what}"


def test_a_float_field_still_takes_an_integer(write_yaml) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_yaml("init: {scheme: normal, std: 2}\n"), ["data.mean=1", "init.mean=-3"])
    assert (config.init.weight.std, config.init.weight.mean, config.data.mean) == (2.0, -3.0, 1.0)  # type: ignore[union-attr]
    assert load_config(write_yaml("init: {scheme: xavier, gain: auto}\n")).init.weight.gain == "auto"  # type: ignore[union-attr]


@pytest.mark.parametrize("layer", ["{index: 0}", "{index: 0, val: 0.5}"])
def test_a_layer_override_names_its_scheme_as_the_bias_does(write_yaml, layer: str) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(f"init:\n  layers:\n    - {layer}\n")
    line = refused("run", str(path), "--no-save")
    assert line.startswith(f"{path}:3: init.layers.0: no 'scheme': name the scheme, one of: constant, default, ")
    bias = refused("run", str(write_yaml("model: {bias: true}\ninit: {bias: {std: 2}}\n", "b.yaml")), "--no-save")
    assert bias.split(": ", 2)[2] == line.split(": ", 2)[2]
    named = load_config(write_yaml("init:\n  layers:\n    - {index: 0, scheme: constant, val: 0.5}\n", "ok.yaml"))
    assert named.init.layers[0].weight == Constant(val=0.5)
    assert load_config(write_yaml("init: {std: 2, scheme: normal}\n", "top.yaml")).init.weight == Normal(std=2)


def test_a_layer_index_takes_integers_only(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("init:\n  layers:\n    - {index: 1.0, scheme: zeros}\n")
    assert refused("run", str(path)) == f"{path}:3: init.layers.0.index: expected an integer, got 1.0 (a float)"


# ---------------------------------------------------------------- empty files (item 14)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here yet\n", "---\n"])
def test_an_empty_config_is_refused(write_yaml, tmp_path: Path, text: str) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(text)
    assert refused("run", str(path), "--out", str(tmp_path / "out")) == (
        f"{path} is empty: write at least one key, or {{}} to run every default"
    )
    assert not (tmp_path / "out").exists()


def test_braces_run_every_default(write_yaml) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_yaml("{}\n", "defaults.yaml"))
    assert config == Config(name="defaults")


# ---------------------------------------------------------------- numbers torch cannot take (item 5)


def test_the_largest_seed_torch_takes_is_accepted(write_yaml) -> None:  # type: ignore[no-untyped-def]
    import torch

    config = load_config(write_yaml(f"seed: {2**64 - 1}\n"))
    torch.Generator().manual_seed(config.seed)  # the bound is torch's own


@pytest.mark.parametrize(
    "args",
    [
        ["seed=18446744073709551616"],
        ["seed=-1"],
        ["init.gain=1e300"],
        ["init.scheme=uniform", "init.a=-1e39"],
        ["init.scheme=constant", "init.val=1e300"],
        ["init.scheme=kaiming_normal", "init.a=1e300"],
        ["init.scheme=normal", "init.std=1e300"],
        ["model.bias=true", "init.bias.scheme=uniform", "init.bias.a=-1e300"],
        ["data.distribution=uniform", "data.low=-1e300"],
        ["data.mean=1e300"],
        ["model.activation.name=leaky_relu", "model.activation.negative_slope=1e300"],
        ["model.activation.name=elu", "model.activation.alpha=1e300"],
        ["model.activation.name=softplus", "model.activation.beta=1e300"],
        ["verdict.trend_t=1e300"],
        ["init.layers=[{index: 0, scheme: constant, val: -1e300}]"],
    ],
    ids=lambda args: " ".join(args),
)
def test_numbers_torch_would_crash_on_are_refused(write_yaml, tmp_path: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("init: {scheme: xavier}\n")
    line = refused("run", str(path), *TINY, *args, "--out", str(tmp_path / "out"))
    assert line.startswith(f"override '{args[-1]}': ")
    assert "less than or equal to 18446744073709551615" in line or "greater than or equal to 0" in line or (
        "must lie within ±1e+38" in line
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "cuda:99999999999"], "--device 'cuda:99999999999': device: a CUDA device index is at most 127"),
        (["--device", "cuda:128"], "--device 'cuda:128': device: a CUDA device index is at most 127"),
        (["--devices", "0,128"], "--devices '0,128': data_parallel.device_ids.1: input should be less than or equal"),
        (["data_parallel={device_ids: [0], output_device: 99999999999999999999}", "device=cuda"],
         "data_parallel.output_device: input should be less than or equal to 127"),
    ],
)
def test_device_indices_fit_torchs_eight_bits(write_yaml, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    assert expected in refused("run", str(write_yaml("seed: 1\n")), *args)


def test_a_seed_beyond_torch_from_a_file_and_from_compare(write_yaml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("seed: 18446744073709551616\n")
    assert refused("run", str(path)) == (
        f"{path}:1: seed: input should be less than or equal to 18446744073709551615 (got 18446744073709551616)"
    )
    line = refused("compare", "--schemes", "xavier", "--seed", str(2**64), "--out", str(tmp_path / "out"))
    assert line.startswith(f"--seed {2**64}: seed: input should be less than or equal to")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- messages (items 15 and 16)


def test_devices_that_are_not_ids_are_one_line_naming_the_option(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = str(write_yaml("seed: 1\n"))
    assert refused("run", path, "--devices", "a,b") == (
        "--devices 'a,b': expected CUDA device ids separated by commas, e.g. 0,1"
    )
    assert refused("run", path, "--devices", "0,0").startswith(
        "--devices '0,0': data_parallel: device_ids must be distinct"
    )


def test_a_bad_device_names_the_option_as_typed(write_yaml) -> None:  # type: ignore[no-untyped-def]
    line = refused("run", str(write_yaml("seed: 1\n")), "--device", "tpu")
    assert line == "--device 'tpu': device: unknown device 'tpu'; did you mean 'cpu'? valid: auto, cpu, cuda, cuda:N"


def test_compare_options_are_named_as_typed(tmp_path: Path) -> None:
    assert refused("compare", "--schemes", "xavier", "--activation", "tanhh", "--out", str(tmp_path)).startswith(
        "--activation 'tanhh': model.activation.name: unknown activation 'tanhh'; did you mean 'tanh'?"
    )
    assert refused("compare", "--schemes", "xavier", "--activation", "elu:alpha=x", "--out", str(tmp_path)) == (
        "--activation 'elu:alpha=x': model.activation.alpha: expected a number, got 'x' (text)"
    )
    assert not any(tmp_path.iterdir())


ALIASES = ("xavier", "glorot", "he", "kaiming", "lecun")


@pytest.mark.parametrize(
    "args",
    [
        ["run", "CONFIG", "init.scheme=xavir"],
        ["run", "CONFIG", "init.layers=[{index: 0, scheme: xavir}]"],
        ["run", "CONFIG", "init.bias=xavir"],
        ["compare", "--schemes", "xavir", "--no-save"],
    ],
)
def test_a_scheme_typo_gets_a_suggestion_and_the_aliases(write_yaml, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    config = str(write_yaml("seed: 1\n"))
    line = refused(*[config if arg == "CONFIG" else arg for arg in args])
    assert "unknown scheme 'xavir'; did you mean 'xavier'? valid: " in line
    valid = line.split("valid: ")[1].split(", ")
    assert all(alias in valid for alias in ALIASES)


@pytest.mark.parametrize("args", [["model.activation=swissh"], ["model.activation.name=swissh"]])
def test_an_activation_typo_reads_like_a_scheme_typo(write_yaml, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    line = refused("run", str(write_yaml("seed: 1\n")), *args)
    assert "unknown activation 'swissh'; did you mean 'swish'? valid: elu, gelu, identity, " in line


@pytest.mark.parametrize("name", ["{x}", "{key}", "{message}", "{{x}}", "{path}"])
def test_user_text_in_a_message_is_shown_as_typed(write_yaml, name: str) -> None:  # type: ignore[no-untyped-def]
    line = refused("run", str(write_yaml("seed: 1\n")), f"model.activation={name!r}", "--no-save")
    assert line.startswith(f"override \"model.activation={name!r}\": model.activation: unknown activation {name!r};")
    path = write_yaml(f"model:\n  activation: {name!r}\n")
    line = refused("run", str(path), "--no-save")
    assert line.startswith(f"{path}:2: model.activation: unknown activation {name!r};")


@pytest.mark.parametrize(("field", "kind"), [("init.scheme", "scheme"), ("model.activation.name", "activation"),
                                             ("init.bias.scheme", "scheme"), ("data.distribution", "distribution")])
def test_a_choice_given_as_a_mapping_says_what_a_choice_is(write_yaml, field: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    tag = field.rpartition(".")[2]
    line = refused("run", str(write_yaml("seed: 1\n")), f"{field}={{name: xavier}}", "--no-save")
    assert line == (f"override '{field}={{name: xavier}}': {field}: "
                    f"a {kind} is a name, or a mapping with a {tag!r} key; got {{'name': 'xavier'}}")


BAD_FILES = [
    "model: 3\n",
    "model: [1, 2]\n",
    "init: []\n",
    "init: {layers: 3}\n",
    "init: {layers: [3]}\n",
    "init: {bias: 3}\n",
    "init: {bias: {}}\n",
    "model: {activation: 3}\n",
    "model: {activation: {negative_slope: 0.2}}\n",
    "data: 3\n",
    "data: {distribution: normall}\n",
    "data: {distribution: uniform, mean: 1}\n",
    "data_parallel: 3\ndevice: cuda\n",
    "data_parallel: {device_ids: 3}\ndevice: cuda\n",
    "data_parallel: {device_ids: []}\ndevice: cuda\n",
    "data_parallel: {device_ids: [a]}\ndevice: cuda\n",
    "data_parallel: {}\ndevice: cuda\n",
    "verdict: []\n",
    "name: [a]\n",
    "name: 1e2\n",
    "seed: [1]\n",
    "seed: null\n",
    "dtype: 3\n",
    "init: {scheme: xavier, gain: [1]}\n",
    "init: {scheme: xavier, gain: {a: 1}}\n",
    "init: {scheme: kaiming, mode: 3}\n",
    "model: {bias: maybe}\n",
]


@pytest.mark.parametrize("text", BAD_FILES)
def test_no_message_leaks_pydantic_internals(write_yaml, text: str) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml(text)
    code, out, err = invoke("run", str(path), "--no-save")
    assert code == 2 and out == "" and "Traceback" not in err
    (line,) = err.strip().splitlines()  # one problem, one line
    assert line.startswith(f"error: {path}:"), line
    said = line.removeprefix(f"error: {path}:")
    assert not any(phrase in said for phrase in INTERNALS), line


BAD_ARGS = [
    ["run", "CONFIG", "model.depth=[1]"],
    ["run", "CONFIG", "model.depth="],
    ["run", "CONFIG", "model.activation={}"],
    ["run", "CONFIG", "model.activation.name=leaky_relu", "model.activation.negative_slope=x"],
    ["run", "CONFIG", "data_parallel.device_ids=abc", "device=cuda"],
    ["run", "CONFIG", "init.layers=3"],
    ["run", "CONFIG", "init.scheme=xavier", "init.gain=[1]"],
    ["run", "CONFIG", "init.scheme=xavier", "init.gain=true"],
    ["run", "CONFIG", "--devices", "a,b"],
    ["run", "CONFIG", "--devices", ""],
    ["gain", "elu", "--param", "alpha=[1]"],
    ["gain", "elu", "--param", "alpha=x"],
    ["gain", "gelu", "--param", "approximate=3"],
    ["compare", "--schemes", "xavier:gain=[1]"],
    ["compare", "--schemes", "xavier:gain={a: 1}"],
    ["compare", "--schemes", "normal:std=x"],
    ["compare", "--schemes", "xavier", "--activations", "leaky_relu:negative_slope=[1]"],
    ["compare", "--schemes", "xavier", "--activation", "tanh:alpha=1"],
    ["compare", "--schemes", "xavier", "--devices", "a,b"],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=" ".join)
def test_no_command_line_message_leaks_pydantic_internals(write_yaml, tmp_path: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    config = str(write_yaml("seed: 1\n"))
    out = ["--out", str(tmp_path / "out")] if args[0] != "gain" else []
    line = refused(*[config if arg == "CONFIG" else arg for arg in args], *out)
    assert not any(phrase in line for phrase in INTERNALS), line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- overrides, typed and as text


def test_typed_overrides_are_named_by_their_source(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("model: {depth: 4}\n")
    config = load_config(path, ["model.width=8", Override(("model", "depth"), 7, "--depth 7")])
    assert (config.model.depth, config.model.width) == (7, 8)
    with pytest.raises(ConfigError) as info:
        load_config(path, [Override(("model", "depth"), 0, "--depth 0")])
    assert info.value.lines == ["--depth 0: model.depth: input should be greater than or equal to 1 (got 0)"]


@pytest.mark.parametrize(
    ("overrides", "blamed"),
    [
        (["init.layers=[{index: 0, scheme: zeros}]", "init.layers.0.scheme=constant"], 1),
        (["init.layers=[{index: 0, scheme: zeros}]", "init.layers.0.scheme=constant",
          "init.layers=[{index: 0, scheme: constant}]"], 2),
        (["init.scheme=constant", "init.bias=zeros"], 0),
    ],
)
def test_a_missing_argument_names_the_override_that_chose_the_scheme(write_yaml, overrides: list[str],
                                                                      blamed: int) -> None:  # type: ignore[no-untyped-def]
    line = refused("run", str(write_yaml("seed: 1\n")), *overrides, "--no-save")
    assert line.startswith(f"override {overrides[blamed]!r}: ") and line.endswith(".val: field required")


def test_switching_a_tag_drops_the_arguments_the_new_choice_does_not_take(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("data: {mean: 0.5, std: 2}\ninit:\n  layers:\n    - {index: 0, scheme: constant, val: 1}\n")
    config = load_config(path, ["data.distribution=uniform", "init.layers.0.scheme=xavier"])
    assert config.data.model_dump() == {"batch_size": 16, "distribution": "uniform", "low": -1.0, "high": 1.0}
    assert config.init.layers[0].weight.label() == "xavier_uniform"


def test_the_written_config_reloads_to_an_equal_config(write_yaml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = ("name: '1e2'\nseed: 7\nmodel: {depth: 5, width: 8, activation: {name: leaky_relu, negative_slope: 0.2}}\n"
            "init:\n  scheme: kaiming\n  a: 1e-3\n  layers: [{index: -1, scheme: constant, val: .5}]\n"
            "data: {distribution: uniform, low: -2, high: 1e-1}\n")
    config = load_config(write_yaml(text))
    written = tmp_path / "config.yaml"
    written.write_text(to_yaml(config))
    assert load_config(written) == config


def test_the_readme_names_every_alias() -> None:
    from initlab import activations, schemes
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [alias for alias in [*schemes.ALIASES, *activations.ALIASES] if f"`{alias}`" not in readme] == []


@pytest.mark.parametrize("override", ['verdict.orders="1"', "verdict.settle=true", "verdict.trend_t=1_000"])
def test_verdict_thresholds_take_numbers_only(tmp_path: Path, override: str) -> None:
    line = refused("run", str(CONFIGS / "tanh-xavier.yaml"), *TINY, override, "--out", str(tmp_path / "out"))
    assert line.startswith(f"override '{override}': verdict.") and "expected a number" in line
