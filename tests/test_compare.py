"""`initlab compare`: planning, equality with `run`, seed aggregation, resume, plots and the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import initlab
import initlab.runner
from initlab import plots, sweep
from initlab.cli import app
from initlab.config import Config, load_config
from initlab.errors import ConfigError, InitlabError
from initlab.results import csv_text
from tests.conftest import CONFIGS

runner = CliRunner()
SMALL = ["--depth", "12", "--width", "32"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["compare", *args], env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def small_plan(schemes: str = "xavier,kaiming", activations: str = "tanh,relu", seeds: int = 1) -> sweep.Plan:
    base = sweep.base_config(None, depth=12, width=32)
    return sweep.plan_sweep(base, sweep.parse_schemes(schemes), sweep.parse_activations(activations),
                              seeds=seeds)


def only_folder(root: Path) -> Path:
    (folder,) = (root / "compare").iterdir()
    return folder


# ---------------------------------------------------------------- specs


def test_a_key_value_without_colon_belongs_to_the_scheme_before_it() -> None:
    specs = sweep.split_specs("normal:std=1,mean=0.5,xavier", "--schemes")
    assert specs == [("normal", [("std", "1"), ("mean", "0.5")]), ("xavier", [])]
    normal, xavier = sweep.parse_schemes("normal:std=1,mean=0.5,xavier:gain=auto")
    assert normal.model_dump() == {"scheme": "normal", "mean": 0.5, "std": 1.0}
    assert xavier.label() == "xavier_uniform(gain=auto)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("xavier,,kaiming", "empty name"),
        ("std=1,xavier", "needs a name first"),
        ("normal:std", "expected key=value"),
        ("normal:std=1,std=2", "'std' given twice"),
        ("xavier,xavier_uniform", "xavier_uniform given twice"),
    ],
)
def test_malformed_specs_are_errors(text: str, expected: str) -> None:
    with pytest.raises(InitlabError, match=expected):
        sweep.plan_sweep(Config(), sweep.parse_schemes(text))


def test_unknown_scheme_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        sweep.parse_schemes("xavier,kaimnig")
    (line,) = caught.value.lines
    assert line.startswith("--schemes: scheme: unknown scheme 'kaimnig'")
    assert "did you mean 'kaiming'? valid: constant, default, glorot, glorot_normal, glorot_uniform, he," in line


# ---------------------------------------------------------------- plan


def test_plan_has_one_resolved_config_per_cell_and_seed(tmp_path: Path) -> None:
    yaml_file = tmp_path / "base.yaml"
    yaml_file.write_text(
        "name: base\nseed: 5\nmodel: {depth: 8, width: 16, activation: tanh, bias: true}\n"
        "init: {scheme: normal, std: 0.1, layers: [{index: 0, scheme: constant, val: 0.5}], bias: ones}\n"
    )
    base = sweep.base_config(yaml_file, depth=6, batch_size=4)
    plan = sweep.plan_sweep(base, sweep.parse_schemes("xavier:gain=auto,lecun"),
                              sweep.parse_activations("tanh,leaky_relu:negative_slope=0.2"), seeds=3)
    assert plan.name == "base"
    assert plan.axes == {"schemes": ["xavier_uniform(gain=auto)", "lecun_normal"],
                         "activations": ["tanh", "leaky_relu(negative_slope=0.2)"],
                         "depths": [6], "widths": [16], "seeds": [5, 6, 7]}
    assert len(plan.runs) == 2 * 2 * 3 and len(plan.positions()) == 4
    first = plan.runs[0].config
    assert first is not None
    assert (first.model.depth, first.model.width, first.data.batch_size, first.model.bias) == (6, 16, 4, True)
    assert first.init.weight.label() == "xavier_uniform(gain=auto)"
    assert first.init.layers[0].weight.scheme == "constant" and first.init.bias.scheme == "ones"  # kept
    assert [run.seed for run in plan.runs[:3]] == [5, 6, 7]
    assert len({run.cell for run in plan.runs}) == len(plan.runs)
    assert all(run.config is not None and run.cell == sweep.config_hash(run.config) for run in plan.runs)


def test_without_config_the_base_is_the_classic_study_named_compare() -> None:
    base = sweep.base_config(None)
    assert (base.name, base.model.depth, base.model.width, base.data.batch_size, base.model.bias) == (
        "compare", 100, 256, 16, False)
    assert sweep.base_config(None, activation="leaky_relu:negative_slope=0.3").model.activation.label() == (
        "leaky_relu(negative_slope=0.3)")


def test_a_combination_that_does_not_validate_is_a_failed_cell_not_an_error() -> None:
    plan = small_plan("xavier:gain=torch", "tanh,gelu")
    tanh, gelu = plan.runs
    assert tanh.config is not None and tanh.error is None
    assert gelu.config is None and gelu.error is not None and "init.gain" in gelu.error


# ---------------------------------------------------------------- results


def test_matrix_shape_and_verdicts_and_tidy_table() -> None:
    result = sweep.run_sweep(small_plan("xavier,kaiming,xavier:gain=auto", "tanh,relu,linear", seeds=2))
    summary = result.summary
    assert len(summary) == 3 * 3
    assert summary[["scheme", "activation"]].values.tolist() == [
        [s, a] for s in ("xavier_uniform", "kaiming_normal", "xavier_uniform(gain=auto)")
        for a in ("tanh", "relu", "linear")
    ]
    assert set(summary["status"]) == {"done"} and set(summary["regime"]) <= {"stable", "vanishing", "explosion"}
    assert (summary["agree"] <= 2).all()
    assert len(result.layers) == 9 * 2 * 12  # cells x seeds x depth
    assert list(result.layers.columns[:7]) == [*sweep.ID_COLUMNS, "layer"]
    assert result.layers.groupby(["cell"]).size().eq(12).all()
    assert result.failed == [] and result.missing == 0


def test_each_cell_equals_initlab_run_on_its_resolved_config(tmp_path: Path) -> None:
    plan = small_plan("xavier,normal:std=0.3", "tanh,relu", seeds=2)
    folder = sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files)
    result = sweep.run_sweep(plan, folder)
    for run in plan.runs:
        assert run.config is not None
        expected = initlab.run(run.config).layers
        got = result.layers[result.layers["cell"] == run.cell].reset_index(drop=True)
        pd.testing.assert_series_equal(got["std"], expected["std"], check_exact=True)
        pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=True, check_dtype=False)
        # the stored config reproduces the same bytes through `initlab run`'s own path
        cell = folder.path / "cells" / run.cell
        reloaded = initlab.run(load_config(cell / "config.yaml"))
        assert csv_text(reloaded.layers) == (cell / "layers.csv").read_text()


def test_one_seed_cell_verdict_is_the_runs_verdict() -> None:
    plan = small_plan("normal,default,kaiming", "linear,relu")
    result = sweep.run_sweep(plan)
    for run, (_, row) in zip(plan.runs, result.summary.iterrows(), strict=True):
        assert run.config is not None
        verdict = initlab.run(run.config).verdict
        assert row["regime"] == verdict.regime and row["agree"] == 1
        for figure in ("growth_per_layer", "ratio", "trend_t", "first_nonfinite_layer", "reason"):
            assert none_if_missing(row[figure]) == getattr(verdict, figure), figure


def none_if_missing(value: Any) -> Any:
    return None if value is None or value is pd.NA or (isinstance(value, float) and value != value) else value


def test_classic_outcomes_at_full_size() -> None:
    base = sweep.base_config(None)
    plan = sweep.plan_sweep(base, sweep.parse_schemes("xavier,kaiming,xavier:gain=auto"),
                              sweep.parse_activations("tanh,relu"))
    summary = sweep.run_sweep(plan).summary.set_index(["scheme", "activation"])["regime"]
    assert summary["xavier_uniform", "tanh"] == "vanishing"
    assert summary["xavier_uniform", "relu"] == "vanishing"
    assert summary["kaiming_normal", "relu"] == "stable"
    assert summary["xavier_uniform(gain=auto)", "tanh"] == "stable"


# ---------------------------------------------------------------- seeds


def fake_outcome(run: sweep.CellRun, stds: list[float | None], regime: str) -> sweep.Outcome:
    """A cell run with a made-up std trace (None = non-finite outputs) and verdict."""
    table = pd.DataFrame({
        "layer": range(len(stds)),
        "std": [float("nan") if s is None else s for s in stds],
        "nonfinite": [0 if s is not None else 7 for s in stds],
    })
    return sweep.Outcome(run, csv_text(table), {"regime": regime})


def test_cell_verdict_is_the_median_traces_and_counts_agreeing_seeds() -> None:
    plan = small_plan("xavier", "tanh,linear", seeds=3)
    down = [1.0 * 0.8**i for i in range(12)]
    flat = [1.0 + 0.01 * (-1) ** i for i in range(12)]
    blowup: list[float | None] = [10.0**i for i in range(4)] + [None] * 8
    traces: dict[int, list[float | None]] = {0: [*down], 1: [*down], 2: [*flat], 3: blowup, 4: blowup, 5: [*flat]}
    regimes = {0: "vanishing", 1: "vanishing", 2: "stable", 3: "explosion", 4: "explosion", 5: "stable"}
    outcomes = {run.cell: fake_outcome(run, traces[i], regimes[i]) for i, run in enumerate(plan.runs)}
    result = sweep.aggregate(plan, outcomes)
    tanh, linear = result.summary.to_dict("records")
    assert (tanh["regime"], tanh["agree"], tanh["seeds"]) == ("vanishing", 2, 3)
    # two of three seeds overflow from layer 4: the median trace does too
    assert (linear["regime"], linear["agree"], linear["first_nonfinite_layer"]) == ("explosion", 2, 4)
    median = result.traces[result.traces["activation"] == "linear"]["median"].tolist()
    assert median[:4] == [10.0**i for i in range(4)] and all(m == float("inf") for m in median[4:])
    # the band covers the finite seeds only
    band = result.traces[result.traces["activation"] == "linear"]
    assert band["high"].iloc[5] == pytest.approx(flat[5]) and band["low"].iloc[1] == pytest.approx(flat[1])


# ---------------------------------------------------------------- resume


def count_runs(monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> list[Config]:
    """Record every config `initlab.runner.run` is called with; optionally Ctrl-C after some."""
    calls: list[Config] = []
    real = initlab.runner.run

    def counting(config: Config, draws: Any = None) -> initlab.runner.Result:
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(config)
        return real(config, draws)

    monkeypatch.setattr(initlab.runner, "run", counting)
    return calls


def stop_after(cells: int) -> Callable[[int, int, Any], None]:
    def progress(done: int, total: int, cell: Any) -> None:
        if done == cells:
            raise KeyboardInterrupt

    return progress


def test_resume_after_an_interruption_runs_only_the_missing_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = small_plan("xavier,kaiming,normal:std=0.2", "tanh,relu", seeds=2)
    folder = sweep.SweepFolder.create(tmp_path / "a", plan, ["initlab", "compare"], plots.std_plot_files)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(plan, folder, stop_after(2))
    assert len(folder.finished()) == 2
    meta = json.loads((folder.path / "meta.json").read_text())
    assert meta["interrupted"] is True and (meta["finished"], meta["missing"]) == (2, 10)
    assert len(pd.read_csv(folder.path / "layers.csv")) == 2 * 12  # what finished is aggregated
    finished = folder.finished()

    calls = count_runs(monkeypatch)
    code, out, err = invoke("--resume", str(folder.path))
    assert code == 0, err
    assert len(calls) == len(plan.runs) - 2
    assert {sweep.config_hash(c) for c in calls} == {run.cell for run in plan.runs} - finished
    assert f"results: {folder.path}" in out

    whole = sweep.SweepFolder.create(tmp_path / "b", plan, [], plots.std_plot_files)
    sweep.run_sweep(plan, whole)
    for name in ("layers.csv", "summary.csv", "traces.csv"):  # the backward columns too
        assert (folder.path / name).read_bytes() == (whole.path / name).read_bytes()


def test_ctrl_c_in_the_cli_keeps_finished_cells_and_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count_runs(monkeypatch, stop_after=3)
    code, out, err = invoke("--schemes", "xavier,kaiming", "--activations", "tanh,relu", *SMALL,
                            "--out", str(tmp_path))
    assert code == 130 and out == ""
    folder = only_folder(tmp_path)
    assert len(list((folder / "cells").iterdir())) == 3
    assert f"resume with: initlab compare --resume {folder}" in err
    assert {"layers.csv", "summary.csv", "meta.json", "std.png", "std.svg", "plan.json"} <= {
        p.name for p in folder.iterdir()}


# ---------------------------------------------------------------- files and CLI


def test_results_folder_layout_and_plots_are_valid_images(tmp_path: Path) -> None:
    import matplotlib.image

    code, _, err = invoke("--schemes", "xavier,normal", "--activations", "tanh,linear", "--seeds", "2",
                          "--depths", "6,12", "--width", "16", "--out", str(tmp_path))
    assert code == 0, err
    folder = only_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "cells", "grad.png", "grad.svg", "layers.csv", "meta.json", "plan.json", "std.png", "std.svg", "summary.csv",
        "traces.csv"]
    assert len(list((folder / "cells").iterdir())) == 2 * 2 * 2 * 2
    cell = next((folder / "cells").iterdir())
    assert sorted(p.name for p in cell.iterdir()) == ["config.yaml", "layers.csv", "summary.json"]
    layers = pd.read_csv(folder / "layers.csv")
    assert len(layers) == 2 * 2 * 2 * (6 + 12)
    assert len(pd.read_csv(folder / "summary.csv")) == 8
    for figure in ("std", "grad"):
        png = (folder / f"{figure}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(folder / f"{figure}.png").ndim == 3
        root = ET.parse(folder / f"{figure}.svg").getroot()
        assert root.tag.endswith("svg")
    traces = pd.read_csv(folder / "traces.csv")
    assert len(traces) == 2 * 2 * (6 + 12)
    assert {"median", "low", "high", "grad_median", "grad_low", "grad_high", "theory_grad_rms"} <= set(traces)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["axes"]["depths"] == [6, 12] and meta["axes"]["seeds"] == [0, 1]
    assert {"initlab", "torch", "python", "argv", "git_commit", "failed", "interrupted"} <= set(meta)


def test_cli_prints_the_matrix_and_the_std_table(tmp_path: Path) -> None:
    code, out, err = invoke("--schemes", "xavier,kaiming", "--activations", "tanh,relu", *SMALL, "--seeds", "3",
                            "--layers", "0,5,-1", "--no-save")
    assert code == 0, err
    assert "regime matrix: depth 12, width 32, 3 seeds" in out
    assert "fwd VANISHING" in out and "fwd STABLE" in out and "seeds agree: fwd 3/3" in out and "/layer" in out
    assert "std by layer" in out and "gradient rms by layer" in out  # the forward table, then the backward one
    rows = [line.split()[0] for line in out.splitlines() if line.strip()[:2].strip().isdigit()]
    assert rows == ["0", "5", "11"] * 2
    assert "results:" not in out


def test_a_failing_cell_is_reported_exit_1_and_the_others_are_written(tmp_path: Path) -> None:
    code, out, err = invoke("--schemes", "xavier,xavier:gain=torch", "--activations", "tanh,gelu", *SMALL,
                            "--out", str(tmp_path))
    assert code == 1 and err == ""
    assert "FAILED" in out and "failed: xavier_uniform(gain=torch) with gelu: init.gain" in out
    folder = only_folder(tmp_path)
    assert len(list((folder / "cells").iterdir())) == 3
    summary = pd.read_csv(folder / "summary.csv")
    failed = summary[summary["status"] == "failed"]
    assert failed[["scheme", "activation"]].values.tolist() == [["xavier_uniform(gain=torch)", "gelu"]]
    assert "calculate_gain defines no gain for gelu" in failed["error"].iloc[0]
    meta = json.loads((folder / "meta.json").read_text())
    assert [f["activation"] for f in meta["failed"]] == ["gelu"]


def test_json_is_the_only_output(tmp_path: Path) -> None:
    code, out, err = invoke("--schemes", "xavier,kaiming", "--activations", "tanh,relu", *SMALL, "--json",
                            "--out", str(tmp_path))
    assert code == 0, err
    doc = json.loads(out)
    assert [row["regime"] for row in doc["summary"]] == ["vanishing", "vanishing", "stable", "stable"]
    assert len(doc["layers"]) == 4 * 12 and len(doc["cells"]) == 4
    assert Path(doc["results_dir"]).is_dir()
    assert "NaN" not in out and "Infinity" not in out


def test_same_sweep_gives_byte_identical_csvs(tmp_path: Path) -> None:
    args = ["--schemes", "normal,xavier", "--activations", "linear,relu", "--depth", "40", "--width", "16",
            "--seeds", "2"]
    for out in ("a", "b"):
        code, _, err = invoke(*args, "--out", str(tmp_path / out))
        assert code == 0, err
    first, second = only_folder(tmp_path / "a"), only_folder(tmp_path / "b")
    for name in ("layers.csv", "summary.csv", "std.svg"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert ",," in (first / "layers.csv").read_text()  # normal on linear overflows: empty cells, no NaN
    assert "nan" not in (first / "layers.csv").read_text().lower()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--schemes", "xavier,kaimnig"], "unknown scheme 'kaimnig'; did you mean 'kaiming'? valid: constant, default"),
        (["--schemes", "xavier", "--activations", "tanh,rleu"], "unknown activation 'rleu'"),
        (["--schemes", "normal:std"], "expected key=value"),
        (["--schemes", "xavier", "--depths", "10,x"], "--depths '10,x': expected comma-separated integers"),
        (["--schemes", "xavier", "--depths", "10,0"], "--depths '10,0': 0 is below 1"),
        (["--schemes", "xavier", "--depth", "5", "--depths", "10"], "--depth and --depths: give one"),
        (["--schemes", "xavier", "--layers", "500"], "--layers: no layer of [500] exists at depth 100"),
        (["--activations", "tanh"], "--schemes is required"),
        (["--schemes", "xavier", "--config", "missing.yaml"], "missing.yaml: no such config file"),
        (["--schemes", "xavier", "--activation", "tanhh"],
         "--activation 'tanhh': model.activation.name: unknown activation 'tanhh'"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_nothing_written(tmp_path: Path, args: list[str], expected: str) -> None:
    code, out, err = invoke(*args, "--out", str(tmp_path))
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_resume_errors(tmp_path: Path) -> None:
    run_folder = tmp_path / "run"
    done = runner.invoke(app, ["run", str(CONFIGS / "tanh-xavier.yaml"), "model.depth=3", "--out", str(run_folder)])
    assert done.exit_code == 0
    (study,) = (run_folder / "tanh-xavier").iterdir()
    code, out, err = invoke("--resume", str(study))
    assert code == 2 and out == "" and "not a compare results folder (no plan.json)" in err
    code, _, err = invoke("--resume", str(tmp_path / "nowhere"))
    assert code == 2 and "no such folder" in err
    code, _, err = invoke("--resume", str(study), "--schemes", "xavier")
    assert code == 2 and "--resume takes the sweep from its folder; drop --schemes" in err


def test_help_documents_the_spec_syntax() -> None:
    result = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "normal:std=1,mean=0.5,xavier is two schemes" in " ".join(result.stdout.split())


def test_progress_goes_through_the_callback_and_nothing_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[int, int]] = []
    sweep.run_sweep(small_plan("xavier", "tanh,relu"), progress=lambda done, total, cell: seen.append((done, total)))
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert capsys.readouterr() == ("", "")


def test_shared_construction_draws_change_no_number() -> None:
    """A sweep draws nn.Linear's discarded construction-time init once per seed; every cell
    still equals a lone `initlab run` (default-scheme cells keep their construction draws)."""
    from initlab.model import ConstructionDraws

    draws = ConstructionDraws()
    for scheme in ("xavier", "default", "kaiming", "xavier"):
        config = load_config(None, ["model.depth=6", "model.width=16", "model.bias=true", f"init.scheme={scheme}"])
        shared, alone = initlab.run(config, draws), initlab.run(config)
        assert shared.layers.equals(alone.layers), scheme
