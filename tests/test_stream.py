"""``memory: stream``: a study run block by block gives the in-memory run's numbers, exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import initlab
from initlab import devices, stream
from initlab.cli import app
from initlab.config import Config, load_config, to_yaml
from initlab.errors import InitlabError
from initlab.runner import Result
from tests.conftest import CONFIGS, make_config

SMALL: dict[str, dict[str, Any]] = {  # each exercises a different draw or measuring path
    "default-scheme": {"model": {"depth": 7, "width": 32, "activation": "tanh"}},
    "wide-bias": {"model": {"depth": 5, "width": 300, "activation": "relu", "bias": True},
                  "init": {"scheme": "kaiming_normal"}, "data": {"batch_size": 16}},
    "deep-narrow-stacked": {"model": {"depth": 120, "width": 16, "activation": "tanh"},
                            "init": {"scheme": "xavier_normal"}, "data": {"batch_size": 4}},
    "default-bias-only": {"model": {"depth": 6, "width": 64, "activation": "relu", "bias": True},
                          "init": {"scheme": "orthogonal", "bias": {"scheme": "default"}},
                          "backward": {"upstream": "output"}},
    "layer-override": {"model": {"depth": 9, "width": 40, "activation": "tanh"},
                       "init": {"scheme": "xavier_uniform", "layers": [{"index": 3, "scheme": "default"}]},
                       "backward": {"upstream": "ones"}},
    "float64": {"model": {"depth": 4, "width": 256}, "dtype": "float64"},
    "bfloat16": {"model": {"depth": 4, "width": 100}, "dtype": "bfloat16"},
    "overflow": {"model": {"depth": 40, "width": 256, "activation": "linear"},
                 "init": {"scheme": "normal", "std": 1.0}, "data": {"batch_size": 16}},
    "weight-grad-stacks": {"model": {"depth": 45, "width": 200, "activation": "tanh"},  # 7 gradients a stack
                           "init": {"scheme": "xavier_normal"}, "data": {"batch_size": 2}},
    "residual": {"model": {"depth": 8, "width": 48, "activation": "relu", "block": "residual"},
                 "init": {"scheme": "kaiming_normal"}},
    "residual-layernorm": {"model": {"depth": 8, "width": 48, "activation": "tanh", "block": "residual",
                                     "norm": "layernorm", "residual_scale": "auto", "bias": True}},
    "batchnorm": {"model": {"depth": 8, "width": 300, "activation": "relu", "norm": "batchnorm"},
                  "init": {"scheme": "normal", "std": 1.0}, "data": {"batch_size": 16}},
    "forward-only": {"model": {"depth": 5, "width": 64}, "backward": False},
    "uniform-data": {"model": {"depth": 5, "width": 64, "activation": "tanh"},
                     "data": {"distribution": "uniform", "low": -2, "high": 1, "batch_size": 8}},
}


def assert_same(full: Result, streamed: Result) -> None:
    for name in ("layers", "records", "histogram"):
        pd.testing.assert_frame_equal(getattr(full, name), getattr(streamed, name), check_exact=True)
    assert (full.verdict, full.backward) == (streamed.verdict, streamed.backward)
    assert (full.meta["memory"], streamed.meta["memory"]) == ("full", "stream")


@pytest.mark.parametrize("case", sorted(SMALL))
def test_streamed_run_equals_the_in_memory_run(case: str) -> None:
    config = make_config(**SMALL[case])
    assert_same(initlab.run(config.model_copy(update={"memory": "full"})),
                initlab.run(config.model_copy(update={"memory": "stream"})))


@pytest.mark.parametrize("name", ["linear-normal", "tanh-xavier", "relu-kaiming"])
def test_classic_configs_stream_to_the_same_numbers(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert_same(initlab.run(config.model_copy(update={"memory": "full"})),
                initlab.run(config.model_copy(update={"memory": "stream"})))


def test_results_folders_are_byte_identical(tmp_path: Path) -> None:
    runner = CliRunner()
    for memory in ("full", "stream"):
        result = runner.invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), f"memory={memory}", "model.depth=12",
                                     "--out", str(tmp_path / memory)])
        assert result.exit_code == 0, result.output
    (full,), (streamed,) = (list((tmp_path / m).glob("*/*")) for m in ("full", "stream"))
    names = sorted(p.name for p in full.iterdir() if p.suffix == ".csv") + ["summary.json"]
    assert "layers.csv" in names and names == sorted(p.name for p in streamed.iterdir() if p.suffix == ".csv") + [
        "summary.json"]
    for name in names:
        assert (full / name).read_bytes() == (streamed / name).read_bytes(), name


def test_blocks_are_drawn_from_saved_states_not_held() -> None:
    """The replay holds generator states, no weights; each block drawn again equals the in-memory model's."""
    config = make_config(**SMALL["layer-override"])
    setting = stream._Setting(config, torch.Generator().manual_seed(config.seed), torch.float32,
                              torch.device("cpu"), torch.float32)
    accumulator = initlab.probes.Accumulator(initlab.runner.site_statistics(config))
    replay = stream.advance(setting, accumulator)
    assert all(state.dtype == torch.uint8 for state in replay.scheme)
    assert [s is not None for s in replay.construction] == [i == 3 for i in range(9)]
    model = initlab.model.build(config, torch.Generator().manual_seed(config.seed), torch.float32)
    for i, linear in enumerate(model.linears()):
        assert torch.equal(stream._linear(setting, replay, i).weight, linear.weight)
        assert stream._linear(setting, replay, i) is setting.linear  # one block's memory, drawn into in turn


def _with_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(devices, "available_bytes", lambda device: free)


def test_auto_streams_what_does_not_fit_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(model={"depth": 50, "width": 128}, data={"batch_size": 4})
    place = devices.Placement(torch.device("cpu"))
    whole, streamed = devices.estimate(config, place).total, devices.estimate(config, place, streamed=True).total
    assert streamed < whole / 4  # one block's weights and the kept inputs, against all 50 blocks' weights
    _with_free(monkeypatch, (whole + streamed) // 2)
    assert devices.check_memory(config, place) == "stream"
    assert initlab.run(config).meta["memory"] == "stream"
    with pytest.raises(InitlabError, match=r"needs about .* on cpu \(parameters"):
        devices.check_memory(config.model_copy(update={"memory": "full"}), place)
    _with_free(monkeypatch, streamed - 1)
    with pytest.raises(InitlabError, match="streamed block by block"):
        devices.check_memory(config, place)
    _with_free(monkeypatch, whole)
    assert devices.check_memory(config, place) == "full"


def test_streamed_estimate_does_not_grow_with_depth_beyond_states_and_kept_inputs() -> None:
    place = devices.Placement(torch.device("cpu"))
    shallow, deep = (devices.estimate(make_config(model={"depth": d, "width": 1024}, backward=False), place,
                                      streamed=True) for d in (10, 10_000))
    per_block = (deep.total - shallow.total) / (10_000 - 10)
    assert per_block < 2 * (devices.STATES_PER_BLOCK * 5056 + 2 * (1024 + 16) * 8)  # states + probe partials
    assert deep.parameters <= 2 * 1024 * 1024 * 4 + 10_000 * 2 * 5056  # two copies of one block, the states


def test_the_cli_refuses_what_cannot_fit_even_streamed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _with_free(monkeypatch, 1 << 20)
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "streamed block by block" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ({"jacobian": {"samples": 2}}, "the Jacobian needs the whole model"),
])
def test_stream_refuses_what_needs_the_whole_model(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(memory="stream", **extra)


def test_memory_auto_is_left_out_of_the_dump() -> None:
    assert "memory" not in to_yaml(make_config())
    assert "memory: stream" in to_yaml(make_config(memory="stream"))
    assert Config.model_validate(make_config(memory="stream").model_dump(mode="json")).memory == "stream"


@pytest.mark.parametrize("case", ["weight-grad-stacks", "default-bias-only", "overflow"])
def test_statistics_are_fed_in_the_in_memory_order(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small tensors are measured in stacks whose size changes a sum's last bits: the same adds, in the same
    order, make the same stacks (the numbers alone rarely show it: float64 sums of float32 values are mostly
    exact)."""
    added: list[tuple[int, str, int]] = []
    add = initlab.probes.Accumulator.add

    def spy(self: initlab.probes.Accumulator, key: tuple[int, str], tensor: torch.Tensor) -> None:
        added.append((*key, tensor.numel()))
        add(self, key, tensor)

    monkeypatch.setattr(initlab.probes.Accumulator, "add", spy)
    config = make_config(**SMALL[case])
    order = []
    for memory in ("full", "stream"):
        initlab.run(config.model_copy(update={"memory": memory}))
        order.append([a for a in added if a[2] < initlab.probes.BATCH_BELOW])  # larger ones: measured alone
        added.clear()
    assert order[0] == order[1] and len(order[0]) > config.model.depth


def test_save_model_needs_the_whole_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), "memory=stream", "model.depth=4",
                                      "--save-model", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "--save-model needs the whole model in memory" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_loaded_weights_are_never_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = CliRunner().invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), "model.depth=4", "--save-model",
                                     "--out", str(tmp_path)])
    assert saved.exit_code == 0, saved.output
    (weights,) = tmp_path.glob("*/*/model.pt")
    with pytest.raises(InitlabError, match=r"init\.from loads the whole model"):
        load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=4", f"init.from={weights}", "memory=stream"])
    config = load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=4", f"init.from={weights}"])
    place = devices.Placement(torch.device("cpu"))
    _with_free(monkeypatch, devices.estimate(config, place).total - 1)  # would stream, were the weights drawn
    with pytest.raises(InitlabError, match=r"needs about .* on cpu \(parameters"):
        devices.check_memory(config, place)
