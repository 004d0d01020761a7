from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

import initlab
from initlab.config import Config
from initlab.results import save_run
from tests.conftest import CONFIGS, make_config


def test_layout_and_contents(tmp_path: Path) -> None:
    result = initlab.run(make_config(model={"depth": 5, "width": 16, "activation": "tanh"}))
    folder = save_run(result, tmp_path, ["initlab", "run", "x.yaml"])
    assert folder.parent == tmp_path / "t"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "layers.csv", "meta.json", "summary.json"]
    assert Config.model_validate(yaml.safe_load((folder / "config.yaml").read_text())) == result.config
    layers = pd.read_csv(folder / "layers.csv")
    assert list(layers.columns[:9]) == [
        "layer", "pre_std", "pre_mean", "pre_absmax", "pre_nonfinite", "std", "mean", "absmax", "nonfinite",
    ]
    assert layers["layer"].tolist() == list(range(5))
    pd.testing.assert_frame_equal(layers, result.layers, check_dtype=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["regime"] == result.verdict.regime
    meta = json.loads((folder / "meta.json").read_text())
    assert {"initlab", "torch", "python", "device", "dtype", "seed", "started", "finished", "argv"} <= set(meta)
    assert meta["argv"] == ["initlab", "run", "x.yaml"]


def test_same_config_gives_byte_identical_csv_and_never_overwrites(tmp_path: Path) -> None:
    config = make_config(model={"depth": 7, "width": 12, "activation": "relu"}, init={"scheme": "kaiming"})
    first = save_run(initlab.run(config), tmp_path, [])
    second = save_run(initlab.run(config), tmp_path, [])
    assert first != second and first.exists() and second.exists()
    assert (first / "layers.csv").read_bytes() == (second / "layers.csv").read_bytes()
    assert not list((tmp_path / "t").glob(".*"))  # no staging folders left behind


def test_non_finite_values_are_nulls_not_nan_tokens(tmp_path: Path) -> None:
    result = initlab.run(initlab.load_config(CONFIGS / "linear-normal.yaml"))
    folder = save_run(result, tmp_path, [])
    text = (folder / "summary.json").read_text() + (folder / "meta.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    csv = (folder / "layers.csv").read_text()
    assert "nan" not in csv.lower() and "inf" not in csv.lower()
    row = csv.splitlines()[1 + result.verdict.first_nonfinite_layer]  # type: ignore[operator]
    assert ",," in row  # missing statistics are empty cells
