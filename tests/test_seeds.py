"""``initlab run --seeds N``: the median trace and band over seeds, its verdict, and agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import initlab
from initlab.cli import app
from initlab.config import load_config
from initlab.regimes import Trace, classify
from initlab.seeds import run_seeds
from tests.conftest import CONFIGS


def single_runs(name: str, overrides: list[str], seeds: int) -> list[initlab.Result]:
    config = load_config(CONFIGS / f"{name}.yaml", overrides)
    return [initlab.run(load_config(CONFIGS / f"{name}.yaml", [*overrides, f"seed={config.seed + i}"]))
            for i in range(seeds)]


@pytest.mark.parametrize(("name", "overrides"), [("relu-kaiming", ["model.depth=15", "model.width=32"]),
                                                 ("linear-normal", ["model.depth=40", "model.width=32"])])
def test_median_band_and_verdict_equal_those_of_single_seed_runs(name: str, overrides: list[str]) -> None:
    study = run_seeds(load_config(CONFIGS / f"{name}.yaml", overrides), 4)
    runs = single_runs(name, overrides, 4)
    stds = np.stack([r.layers["std"].to_numpy() for r in runs])  # (seeds, layers), NaN where non-finite
    as_inf = np.where(np.isnan(stds), np.inf, stds)
    assert study.traces["median"].tolist() == np.median(as_inf, axis=0).tolist()
    finite_rows = ~np.isnan(stds).all(axis=0)
    assert study.traces["low"][finite_rows].tolist() == np.nanmin(stds[:, finite_rows], axis=0).tolist()
    assert study.traces["high"][finite_rows].tolist() == np.nanmax(stds[:, finite_rows], axis=0).tolist()
    median = np.median(as_inf, axis=0)
    # The median trace judged against the seeds' median input std, as a compare cell is.
    trace = Trace(std=[m if np.isfinite(m) else None for m in median], nonfinite=(~np.isfinite(median)).astype(int),
                  input_std=float(np.median([r.summary["input_std"] for r in runs])), width=32)
    verdict = classify(trace, runs[0].config.verdict)
    assert (study.verdict.regime, study.verdict.ratio) == (verdict.regime, verdict.ratio)
    assert study.agree == sum(r.verdict.regime == verdict.regime for r in runs)
    # Every seed's table, tidy, with its seed: the same numbers as the single runs.
    for run in runs:
        mine = study.layers[study.layers["seed"] == run.config.seed].drop(columns="seed").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, run.layers)


def test_cli_seeds_table_json_and_folder(tmp_path: Path) -> None:
    args = ["run", str(CONFIGS / "relu-kaiming.yaml"), "model.depth=15", "model.width=32", "--seeds", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    study = run_seeds(load_config(CONFIGS / "relu-kaiming.yaml", ["model.depth=15", "model.width=32"]), 3)
    out = result.stdout
    assert "per-layer std and gradient rms over 3 seeds (1-3)" in out and "median std" in out
    words = set(out.split())
    assert {f"{v:.3g}" for v in study.traces["median"]} <= words and {f"{v:.3g}" for v in study.traces["high"]} <= words
    assert f"{study.agree} of 3 seeds' own verdicts agree" in out
    (folder,) = (tmp_path / "relu-kaiming").iterdir()
    layers = pd.read_csv(folder / "layers.csv")
    assert layers.columns[0] == "seed" and sorted(layers["seed"].unique()) == [1, 2, 3] and len(layers) == 45
    assert len(pd.read_csv(folder / "traces.csv")) == 15
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["seeds"] == [1, 2, 3] and summary["agree"] == study.agree
    assert {"std.png", "std.svg", "histogram.png", "histogram.csv"} <= {p.name for p in folder.iterdir()}
    histogram = pd.read_csv(folder / "histogram.csv")
    assert (histogram.groupby("layer")["count"].sum() == 3 * 16 * 32).all()  # every seed's outputs

    doc = json.loads(CliRunner().invoke(app, [*args, "--no-save", "--json"]).stdout)
    assert doc["summary"]["agree"] == study.agree and len(doc["layers"]) == 45 and len(doc["traces"]) == 15
    assert doc["traces"][0]["median"] == study.traces["median"].iloc[0]


def test_one_seed_keeps_the_single_run_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), "model.depth=5", "--seeds", "1",
                                      "--out", str(tmp_path)], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and "per-layer statistics" in result.stdout
    (folder,) = (tmp_path / "tanh-xavier").iterdir()
    assert pd.read_csv(folder / "layers.csv").columns[0] == "layer"


@pytest.mark.parametrize(("args", "expected"), [
    (["--seeds", "100000000"], "--seeds 100000000: between 1 and 10,000 for run"),
    (["seed=18446744073709551615", "--seeds", "2"], "seed/--seeds 18446744073709551615..18446744073709551616: outside"),
])
def test_seeds_beyond_what_run_can_hold_or_torch_can_take_are_refused_at_once(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip().removeprefix('error: ')}"]
    assert expected in result.stderr
    assert not any(tmp_path.iterdir())
