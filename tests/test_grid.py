"""`initlab compare --grid`: parsing, validation before any run, ids, equality with `run`, resume, figures,
and the ``model.bias_std`` field that makes σb one sweepable field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from initlab import grid_plot, plots, sweep, theory
from initlab.cli import app
from initlab.config import Config, load_config, to_yaml
from initlab.errors import ConfigError, InitlabError
from initlab.sweep.grid import Axis, parse_grid
from tests.conftest import CONFIGS

runner = CliRunner()
SMALL = ["--depth", "8", "--width", "16", "--batch-size", "8"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- parsing


def test_a_range_counts_in_decimal_and_includes_stop() -> None:
    axis = parse_grid("init.gain=0.8:2.4:0.1")
    assert axis.path == ("init", "gain") and axis.name == "init.gain"
    assert len(axis.values) == 17
    # the values a person writes, where stepping in binary floating point drifts (0.9000000000000001)
    assert [repr(v) for v in axis.values] == [f"{k / 10}" for k in range(8, 25)]
    assert [0.8 + k * 0.1 for k in range(17)] != list(axis.values)


@pytest.mark.parametrize(("text", "values"), [
    ("data.batch_size=16,256", (16, 256)),  # integers stay integers
    ("data.batch_size=8:32:8", (8, 16, 24, 32)),
    ("model.bias_std=0,0.1,0.3", (0.0, 0.1, 0.3)),  # a list with a decimal is all floats, as a range is
    ("data.batch_size=16,256.5", (16.0, 256.5)),
    ("model.bias=true,false", (True, False)),
    ("init.gain=0:1:0.3", (0.0, 0.3, 0.6, 0.9)),  # stop not reached by a whole number of steps
    ("init.gain=1:1:0.5", (1.0,)),
    ("init.layers.0.val=1,2", (1, 2)),
])
def test_lists_and_ranges(text: str, values: tuple[object, ...]) -> None:
    axis = parse_grid(text)
    assert axis.values == values
    assert [type(v) for v in axis.values] == [type(v) for v in values]


@pytest.mark.parametrize(("text", "expected"), [
    ("init.gain", "expected PATH=VALUES"),
    ("=1,2", "expected PATH=VALUES"),
    ("init.gain=", "expected PATH=VALUES"),
    ("init.gain=1,,2", "empty value"),
    ("init.gain=1,1", "1 given twice"),
    ("init.gain=a:b:c", "a range is start:stop:step of numbers"),
    ("init.gain=2:1:0.1", "step > 0 and start <= stop"),
    ("init.gain=1:2:0", "step > 0"),
    ("init.gain=1:inf:1", "finite"),
    ("init.gain=0:1e9:1", "more than"),
    ("init..gain=1", "empty part"),
    ("init.gain=[1,2]", "not a list"),
    ("model.depth=1,2", "swept by --depths"),
    ("seed=1,2", "swept by --seeds"),
    ("init.scheme=xavier", "swept by --schemes"),
    ("model.activation=tanh", "swept by --activations"),
])
def test_bad_grid_text_is_one_error(text: str, expected: str) -> None:
    with pytest.raises(InitlabError, match=expected.replace("[", r"\[")):
        parse_grid(text)


def test_an_axis_round_trips_through_its_dict() -> None:
    axis = parse_grid("init.layers.0.val=0.5,1")
    assert Axis.from_dict(json.loads(json.dumps(axis.as_dict()))) == axis


# ---------------------------------------------------------------- validation before anything runs


@pytest.mark.parametrize(("args", "expected"), [
    (["--grid", "init.gainn=1,2"], "error: --grid init.gainn=1: init.gainn: unknown key 'gainn'; did you mean 'gain'?"),
    (["--grid", "init.gain=1,ten"], "error: --grid init.gain=ten: init.gain:"),
    (["--grid", "data.batch_size=8,0"], "error: --grid data.batch_size=0: data.batch_size: input should be greater"),
    (["--grid", "init.gain=1,2", "--grid", "init.gain=3"], "one field swept twice"),
    (["--grid", "model.depth=4,8"], "model.depth is swept by --depths"),
    (["--grid", "model.width=4,8"], "model.width is swept by --widths"),
    (["--grid", "init.gain=0.5:1.5:0.1", "--seeds", "10"], "110 cell runs (1 scheme x 10 seeds x 11 init.gain "
                                                            "values), more than --max-runs 100"),
])
def test_bad_grid_is_exit_2_one_line_nothing_written(tmp_path: Path, args: list[str], expected: str) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", *SMALL, *args, "--max-runs", "100",
                            "--out", str(tmp_path))
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and expected in err, err
    assert not any(tmp_path.iterdir())


def test_a_value_invalid_in_one_scheme_is_refused_before_any_run(tmp_path: Path) -> None:
    # xavier has a gain; normal has none: a gain axis cannot apply to the normal cells
    code, _, err = invoke("compare", "--schemes", "xavier,normal:std=0.3", *SMALL, "--grid", "init.gain=1,2",
                          "--out", str(tmp_path))
    assert code == 2 and "--grid init.gain=1: init.gain: 'gain' does not apply to scheme 'normal'; valid: " in err, err
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- plan, ids and equality with run


def grid_plan(*grid: str, seeds: int = 1, schemes: str = "xavier", activations: str = "tanh") -> sweep.Plan:
    return sweep.plan_from_options(None, schemes=schemes, activations=activations, depth=8, width=16,
                                   batch_size=8, seeds=seeds, grid=grid)


def test_the_product_and_its_id_columns(tmp_path: Path) -> None:
    plan = grid_plan("init.gain=1,1.5", "model.bias_std=0,0.2", seeds=2, schemes="xavier,xavier_normal")
    assert len(plan.runs) == 2 * 2 * 2 * 2 and len(plan.positions()) == 8
    assert plan.cell_keys == [*sweep.CELL_KEYS, "init.gain", "model.bias_std"]
    assert len({run.cell for run in plan.runs}) == len(plan.runs)
    result = sweep.run_sweep(plan, sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files))
    assert list(result.layers.columns[:9]) == [*sweep.ID_COLUMNS, "init.gain", "model.bias_std", "layer"]
    assert list(result.summary.columns[:7]) == [*sweep.CELL_KEYS, "init.gain", "model.bias_std", "status"]
    assert list(result.traces.columns[:7]) == [*sweep.CELL_KEYS, "init.gain", "model.bias_std", "layer"]
    for run in plan.runs:
        if run.config is not None:
            assert run.config.init.weight.gain == run.grid["init.gain"]  # type: ignore[union-attr]
            assert run.config.init.bias.std == run.grid["model.bias_std"]  # type: ignore[union-attr]


def test_a_grid_cell_equals_initlab_run_with_the_override_byte_for_byte(tmp_path: Path) -> None:
    code, _, err = invoke("compare", "--config", str(CONFIGS / "tanh-xavier.yaml"), "--schemes", "xavier",
                          "--depth", "6", "--width", "16", "--grid", "init.gain=0.9,1.3",
                          "--grid", "model.bias_std=0,0.25", "--out", str(tmp_path / "c"))
    assert code == 0, err
    (folder,) = (tmp_path / "c").glob("*/*")
    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) == 4
    plan = json.loads((folder / "plan.json").read_text())
    cell = next(r for r in plan["runs"] if r["init.gain"] == 1.3 and r["model.bias_std"] == 0.25)
    code, _, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), "init.scheme=xavier_uniform",
                          "model.depth=6", "model.width=16", "init.gain=1.3", "model.bias_std=0.25",
                          "--out", str(tmp_path / "r"))
    assert code == 0, err
    (run_folder,) = (p for p in (tmp_path / "r").glob("*/*") if p.is_dir())
    assert (run_folder / "layers.csv").read_bytes() == (folder / "cells" / cell["cell"] / "layers.csv").read_bytes()


def test_resume_of_a_grid_sweep_gives_the_same_tables(tmp_path: Path) -> None:
    plan = grid_plan("init.gain=0.8,1.6", "data.batch_size=8,16", seeds=2)
    first = sweep.SweepFolder.create(tmp_path / "a", plan, ["initlab", "compare"], plots.std_plot_files)

    def stop_after_three(done: int, total: int, cell: object) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(plan, first, stop_after_three)
    assert len(first.finished()) == 3
    code, _, err = invoke("compare", "--resume", str(first.path))
    assert code == 0, err
    reread = sweep.Plan.from_json((first.path / "plan.json").read_text(), "plan.json")
    assert reread.grid == plan.grid and reread.runs == plan.runs
    whole = sweep.SweepFolder.create(tmp_path / "b", plan, [], plots.std_plot_files)
    sweep.run_sweep(plan, whole)
    for name in ("layers.csv", "summary.csv", "traces.csv"):
        assert (first.path / name).read_bytes() == (whole.path / name).read_bytes()
    assert pd.read_csv(first.path / "summary.csv")["data.batch_size"].tolist() == [8, 16, 8, 16]
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["grid"] == [{"path": "init.gain", "values": [0.8, 1.6]}, {"path": "data.batch_size", "values": [8, 16]}]


def test_an_old_plan_without_grid_still_loads() -> None:
    plan = sweep.plan_sweep(sweep.base_config(None, depth=4, width=8), sweep.parse_schemes("xavier"))
    stored = json.loads(plan.to_json())
    assert "grid" not in stored and all("init.gain" not in run for run in stored["runs"])
    assert sweep.Plan.from_json(json.dumps(stored), "old").grid == ()


# ---------------------------------------------------------------- report and figures


def test_the_matrix_has_a_row_per_grid_value() -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", "--activations", "tanh,relu", *SMALL,
                            "--grid", "init.gain=0.5,2", "--no-save", "--no-backward")
    assert code == 0, err
    matrix = out.split("std by layer")[0]
    rows = [line.split() for line in matrix.splitlines() if line.strip().startswith("xavier_uniform")]
    assert [row[1] for row in rows] == ["0.5", "2.0"]  # as summary.csv writes them
    assert "init.gain" in out.splitlines()[2]


def test_two_numeric_axes_draw_a_heatmap_with_the_critical_line(tmp_path: Path) -> None:
    plan = grid_plan("init.gain=0.8:1.6:0.4", "model.bias_std=0,0.3")
    result = sweep.run_sweep(plan, sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files))
    folder = next(tmp_path.glob("*/*"))
    assert (folder / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "heatmap.svg").is_file()
    assert all((folder / name).is_file() for name in ("std.png", "std.svg", "grad.png", "grad.svg"))
    line = grid_plot.critical_line(result, result.summary, *plan.grid)
    assert line is not None and not line.asymptotic
    gains, stds = line.x, line.y
    # on the line, sigma_w^2 = gain^2 is the critical one for sigma_b^2 = std^2, computed here by theory directly
    finite = np.isfinite(gains)
    assert finite.sum() > 5
    for gain, std in zip(gains[finite], stds[finite], strict=True):
        expected = theory.critical_sigma_w2(plan.runs[0].config.model.activation, std**2)  # type: ignore[union-attr]
        assert expected is not None and gain**2 == pytest.approx(expected, rel=2e-2)
    figure = grid_plot.heatmap_figure(result, *plan.grid)
    assert any(len(line.get_xdata()) > 5 for line in figure.axes[0].get_lines())  # drawn on the panel


def test_no_critical_line_where_theory_does_not_apply(tmp_path: Path) -> None:
    plan = grid_plan("init.gain=0.8,1.6", "data.batch_size=8,16")  # sigma_b^2 does not move
    result = sweep.run_sweep(plan)
    assert grid_plot.critical_line(result, result.summary, *plan.grid) is None
    figure = grid_plot.heatmap_figure(result, *plan.grid)
    assert not any(len(line.get_xdata()) for line in figure.axes[0].get_lines())


def test_one_numeric_axis_draws_the_figures_against_it(tmp_path: Path) -> None:
    plan = grid_plan("init.gain=0.5,1,2", schemes="xavier")
    sweep.run_sweep(plan, sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files))
    folder = next(tmp_path.glob("*/*"))
    assert (folder / "axis.png").read_bytes()[:4] == b"\x89PNG" and (folder / "axis.svg").is_file()
    assert not (folder / "heatmap.png").exists()


# ---------------------------------------------------------------- model.bias_std


def test_bias_std_sets_bias_and_its_normal_scheme() -> None:
    config = load_config(None, ["model.bias_std=0.3"])
    assert config.model.bias is True
    assert config.init.bias.model_dump() == {"scheme": "normal", "mean": 0.0, "std": 0.3}
    assert load_config(None, ["model.bias=true", "init.bias.scheme=normal", "init.bias.std=0.3"]).init.bias \
        == config.init.bias
    assert theory.bias_variance(config) == (pytest.approx(0.09), None)
    assert Config.model_validate(config.model_dump(mode="json")) == config  # its dump reloads to itself


def test_bias_std_leaves_every_existing_config_and_hash_unchanged() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config(path)
        assert "bias_std" not in config.model_dump(mode="json")["model"]
        assert "bias_std" not in to_yaml(config)
    # the classic study's id, computed before model.bias_std existed
    assert sweep.config_hash(load_config(CONFIGS / "linear-normal.yaml")) == EXPECTED_CLASSIC_HASH


def test_bias_std_conflicts_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"give bias_std or init\.bias, not both"):
        load_config(None, ["model.bias_std=0.3", "init.bias.scheme=uniform"])
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.bias_std=-1"])
    assert err.value.lines == ["override 'model.bias_std=-1': model.bias_std: input should be greater than or "
                               "equal to 0 (got -1)"]


EXPECTED_CLASSIC_HASH = "89023c5957fb"  # at 85afe7d, before model.bias_std


def test_a_grid_value_another_field_overrides_is_refused(tmp_path: Path) -> None:
    """model.bias_std sets init.bias: sweeping init.bias.std beside it would label one network twice."""
    config = tmp_path / "bstd.yaml"
    config.write_text("model: {depth: 3, width: 8, activation: tanh, bias_std: 0.1}\n"
                      "init: {scheme: xavier_uniform, gain: 1.0}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--schemes", "xavier",
                                      "--grid", "init.bias.std=0.5,3.0", "--out", str(out), "--no-backward"])
    assert result.exit_code == 2, result.output
    assert "--grid init.bias.std=3.0: has no effect here" in result.output
    assert not out.exists()


# ---------------------------------------------------------------- model.bias_std next to the options it replaces


def test_a_bias_std_axis_next_to_no_bias_is_refused_in_one_line(tmp_path: Path) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", *SMALL, "--no-bias", "--grid", "model.bias_std=0,0.1",
                            "--out", str(tmp_path))
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "--grid model.bias_std" in err and "--no-bias" in err and not any(tmp_path.iterdir())


def test_a_bias_std_axis_over_a_configs_own_init_bias_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "biased.yaml"
    config.write_text("model: {depth: 8, width: 16, bias: true}\ninit: {scheme: xavier_uniform, "
                      "bias: {scheme: normal, std: 0.05}}\ndata: {batch_size: 8}\n")
    code, out, err = invoke("compare", "--config", str(config), "--schemes", "xavier", "--grid",
                            "model.bias_std=0,0.1", "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "--grid model.bias_std" in err and "init.bias" in err and not (tmp_path / "out").exists()


def test_a_bias_std_axis_turns_on_the_bias_a_config_file_leaves_off() -> None:
    # The documented precedence: a config's `bias: false` is the base network's, which the axis replaces.
    plan = sweep.plan_from_options(CONFIGS / "tanh-xavier.yaml", schemes="xavier", depth=4, width=8,
                                   grid=["model.bias_std=0,0.1"])
    assert [(r.config.model.bias, r.config.init.bias.std) for r in plan.runs if r.config] == [  # type: ignore[union-attr]
        (True, 0.0), (True, 0.1)]


# ---------------------------------------------------------------- the critical line on the heatmap's data


def test_relu_heatmap_draws_the_asymptotic_chi1_boundary_at_sigma_w2_2() -> None:
    # ReLU with bias has no edge of chaos with a fixed point; χ₁ = σw²/2 = 1 bounds order from explosion at
    # every σb²: xavier's σw² = gain², so the line stands at gain √2 all the way up.
    plan = grid_plan("init.gain=1:2:0.25", "model.bias_std=0,0.2,0.4", activations="relu")
    result = sweep.run_sweep(plan)
    line = grid_plot.critical_line(result, result.summary, *plan.grid)
    assert line is not None and line.asymptotic
    assert np.isfinite(line.x).all() and line.x == pytest.approx(np.full(len(line.x), 2**0.5), rel=1e-3)
    assert line.y[0] == 0 and line.y[-1] == pytest.approx(0.4) and len(line.y) > 5
    figure = grid_plot.heatmap_figure(result, *plan.grid)
    drawn = [ln for ln in figure.axes[0].get_lines() if len(ln.get_xdata()) > 5]
    assert drawn and np.allclose(drawn[0].get_xdata(), 2**0.5, rtol=1e-3)
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert any("asymptotic" in label for label in labels), labels


def test_the_critical_line_is_drawn_when_sigma_w2_falls_along_its_axis() -> None:
    # kaiming's σw² = 2 / (1 + a²) falls as init.a rises; tanh's edge of chaos runs from σw² = 1 (a = 1) up.
    plan = grid_plan("init.a=0:1:0.25", "model.bias_std=0,0.3", schemes="kaiming")
    result = sweep.run_sweep(plan)
    line = grid_plot.critical_line(result, result.summary, *plan.grid)
    assert line is not None and not line.asymptotic
    finite = np.isfinite(line.x)
    assert finite.sum() > 5
    act = plan.runs[0].config.model.activation  # type: ignore[union-attr]
    for a, std in zip(line.x[finite], line.y[finite], strict=True):
        expected = theory.critical_sigma_w2(act, std**2)
        assert expected is not None and 2 / (1 + a**2) == pytest.approx(expected, rel=2e-2)


# ---------------------------------------------------------------- range lengths and how values are shown


def test_a_range_is_limited_by_the_users_max_runs_not_the_default(tmp_path: Path) -> None:
    # 150,001 gains are more than the default limit but fewer than the one given: the sweep's own count decides
    code, _, err = invoke("compare", "--schemes", "xavier", *SMALL, "--grid", "init.gain=0:1.5:0.00001",
                            "--seeds", "2", "--max-runs", "200000", "--out", str(tmp_path))
    assert code == 2 and "the sweep has 300,002 cell runs" in err and "--max-runs 200,000" in err, err
    code, _, err = invoke("compare", "--schemes", "xavier", *SMALL, "--grid", "init.gain=0:1:0.25",
                            "--max-runs", "3", "--out", str(tmp_path))
    assert code == 2 and "--grid 'init.gain=0:1:0.25': 5 values, more than --max-runs 3" in err, err


def test_a_huge_range_is_refused_in_a_short_whole_line(tmp_path: Path) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", *SMALL, "--grid", "init.gain=0:1e300:1",
                            "--out", str(tmp_path))
    assert code == 2 and out == "" and not any(tmp_path.iterdir())
    assert err == "error: --grid 'init.gain=0:1e300:1': about 1e+300 values, more than --max-runs 100,000\n", err


def test_a_grid_value_reads_the_same_on_the_terminal_and_in_the_tables(tmp_path: Path) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", *SMALL, "--grid", "model.bias_std=0,0.1",
                            "--out", str(tmp_path))
    assert code == 0, err
    shown = [line.split()[1] for line in out.splitlines() if line.strip().startswith("xavier_uniform")][:2]
    folder = next(tmp_path.glob("*/*"))
    summary = pd.read_csv(folder / "summary.csv", dtype=str)
    assert shown == list(summary["model.bias_std"]) == ["0.0", "0.1"], (shown, summary["model.bias_std"])


def initlab_imports(module: str) -> set[str]:
    """The initlab modules ``module`` imports anywhere (inside functions too), outside ``if TYPE_CHECKING``."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []  # annotations only: no import at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("initlab"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("initlab")}
    return found


def test_plots_depends_on_grid_plot_never_the_reverse() -> None:
    assert "initlab.grid_plot" in initlab_imports("initlab.plots")
    assert "initlab.plots" not in initlab_imports("initlab.grid_plot")


def test_grid_sweeps_draw_std_and_grad_with_a_line_per_scheme_and_grid_value() -> None:
    plan = grid_plan("init.gain=0.8,1.6", "model.bias_std=0,0.3", seeds=2, schemes="xavier,xavier_normal")
    result = sweep.run_sweep(plan)
    files = plots.std_plot_files(result)
    assert {"std.png", "std.svg", "grad.png", "grad.svg", "heatmap.png", "heatmap.svg"} <= set(files)
    for figure, column in ((plots.std_figure(result), plots.FORWARD.median),
                           (plots.grad_figure(result), plots.BACKWARD.median)):
        panel = figure.axes[0]
        lines = [line for line in panel.get_lines()  # the measured traces, layer 0..7 (not the predictions)
                 if len(line.get_xdata()) == 8 and line.get_linewidth() != plots.PREDICTED_WIDTH]
        assert len(lines) == 2 * 2 * 2, len(lines)  # scheme x gain x bias std, no trace mixing two cells
        for line, (_, trace) in zip(lines, result.traces.groupby(
                ["scheme", "init.gain", "model.bias_std"], sort=False), strict=True):
            order = -1 if column == plots.BACKWARD.median else 1  # the backward line runs from the last layer down
            assert np.allclose(line.get_ydata(), trace[column].to_numpy()[::order])
        labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
        assert "xavier_uniform, init.gain=0.8, model.bias_std=0.0" in labels, labels
