from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from initlab.cli import app
from tests.conftest import CONFIGS

runner = CliRunner()
SMALL = ["model.depth=12", "model.width=32"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def test_run_prints_table_and_verdict_and_writes_results(tmp_path: Path) -> None:
    code, out, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), *SMALL, "--out", str(tmp_path))
    assert code == 0, err
    assert "per-layer statistics" in out and "forward: STABLE" in out and "backward: " in out
    (folder,) = (tmp_path / "tanh-xavier").iterdir()
    assert f"results: {folder}" in out
    assert "depth: 12" in (folder / "config.yaml").read_text()


def test_every_k_shows_first_last_and_every_kth_layer(tmp_path: Path) -> None:
    code, out, _ = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), *SMALL, "--every", "5", "--no-save")
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines() if re.match(r"^\s*\d+\s+\d", line)]
    pieces = len(rows) // 4  # the forward and gradient columns may take more than one table
    assert pieces >= 1 and rows == ["0", "5", "10", "11"] * pieces


def test_json_is_the_only_output(tmp_path: Path) -> None:
    code, out, _ = invoke("run", str(CONFIGS / "linear-normal.yaml"), "--json", "--out", str(tmp_path))
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["regime"] == "explosion" and doc["summary"]["nonfinite"] is True
    assert len(doc["layers"]) == 100 and doc["layers"][-1]["std"] is None
    assert Path(doc["results_dir"]).is_dir()


def test_explosion_exits_zero(tmp_path: Path) -> None:
    code, out, _ = invoke("run", str(CONFIGS / "linear-normal.yaml"), "--out", str(tmp_path))
    assert code == 0 and "EXPLOSION (non-finite)" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.yaml"], "error: missing.yaml: no such config file"),
        ([str(CONFIGS / "tanh-xavier.yaml"), "model.depth=0"], "override 'model.depth=0': model.depth:"),
        ([str(CONFIGS / "tanh-xavier.yaml"), "init.scheme=nope"], "unknown scheme 'nope'"),
        ([str(CONFIGS / "tanh-xavier.yaml"), "device=cuda:7"], "device 'cuda:7'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, args: list[str], expected: str) -> None:
    if "device=cuda:7" in args and __import__("torch").cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code, out, err = invoke("run", *args, "--out", str(tmp_path))
    assert code == 2
    assert out == ""
    assert err.strip().startswith("error: ") and expected in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_debug_shows_the_traceback() -> None:
    result = runner.invoke(app, ["run", "missing.yaml", "--debug"])
    assert result.exit_code != 0 and result.exception is not None
    assert "no such config file" in str(result.exception)


def test_help_does_not_import_torch_pandas_or_matplotlib() -> None:
    code = (
        "import sys\n"
        "from initlab.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Commands" in done.stdout and "run" in done.stdout and "compare" in done.stdout


#: Modules the quick commands must not import: config loading (pydantic models of the whole
#: config, YAML) and the study's data and plotting stacks. Each costs start-up time.
_NOT_FOR_QUICK_COMMANDS = ("initlab.config", "initlab.schemes", "initlab.yamlfile", "initlab.regimes", "yaml",
                           "pandas", "matplotlib")


@pytest.mark.parametrize(
    ("args", "absent"),
    [
        (["gain", "tanh", "--samples", "1000"], _NOT_FOR_QUICK_COMMANDS),
        (["gain", "leaky_relu", "--param", "negative_slope=0.2", "--samples", "1000", "--json"],  # --param: YAML
         ("initlab.config", "initlab.schemes", "initlab.regimes", "pandas", "matplotlib")),
        (["theory", "tanh", "--sw2", "1.5"], ("torch", *_NOT_FOR_QUICK_COMMANDS)),
        (["theory", "relu", "--critical", "--json"], ("torch", *_NOT_FOR_QUICK_COMMANDS)),
    ],
)
def test_quick_commands_import_only_what_they_need(args: list[str], absent: tuple[str, ...]) -> None:
    code = (
        "import sys\n"
        "from initlab.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as err:\n    assert not err.code, err.code\n"
        f"print(sorted(name for name in {absent!r} if name in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]", f"imported: {done.stderr.strip().splitlines()[-1]}"


def test_gain_shows_every_definition_side_by_side() -> None:
    code, out, err = invoke("gain", "tanh", "--samples", "20000")
    assert code == 0, err
    assert "1.66667" in out  # calculate_gain('tanh') = 5/3
    assert "1.59254" in out  # 1/sqrt(E[tanh(z)^2])
    assert "std ratio" in out and "q*=1.178, stable" in out  # tanh at 5/3 settles above q = 1
    assert "odd" in out  # the one-line explanation


def test_gain_json_matches_torch_and_parameters_are_validated() -> None:
    import torch

    code, out, _ = invoke("gain", "leaky_relu", "--param", "negative_slope=0.2", "--json", "--samples", "1000")
    assert code == 0
    (doc,) = json.loads(out)["gains"]
    assert doc["activation"] == "leaky_relu(negative_slope=0.2)"
    assert doc["torch"] == torch.nn.init.calculate_gain("leaky_relu", 0.2)
    assert doc["second_moment"] == pytest.approx((2 / (1 + 0.2**2)) ** 0.5, rel=1e-9)
    code, out, _ = invoke("gain", "gelu", "--json", "--samples", "1000")
    assert json.loads(out)["gains"][0]["torch"] is None


def test_gain_all_is_sorted_and_fits_80_columns() -> None:
    result = runner.invoke(app, ["gain", "--all", "--samples", "1000"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    from initlab.activations import names

    shown = [line.split()[0] for line in lines if line.split() and line.split()[0] in names()]
    assert shown == names()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tanhh"], "unknown activation 'tanhh'; did you mean 'tanh'? valid: elu, gelu"),
        (["elu", "--param", "alfa=1"], "gain: activation.alfa: unknown key 'alfa'; did you mean 'alpha'?"),
        (["elu", "--param", "alpha"], "--param 'alpha': expected name=value"),
        ([], "give one ACTIVATION or --all"),
        (["--all", "--param", "alpha=1"], "--param applies to one ACTIVATION"),
    ],
)
def test_gain_errors(args: list[str], expected: str) -> None:
    code, out, err = invoke("gain", *args)
    assert code == 2
    assert out == ""
    assert expected in err and "Traceback" not in err


def test_an_unusable_out_is_refused_before_the_study_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    code, out, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), *SMALL, "--out", str(blocker))
    assert code == 2
    assert out == ""
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_compare_where_every_cell_fails_reports_and_exits_1(tmp_path: Path) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier:gain=torch", "--activations", "gelu",
                            "--depth", "4", "--width", "8", "--out", str(tmp_path))
    assert code == 1, err
    assert "FAILED" in out and "no gain for gelu" in out
    assert "Traceback" not in err


def test_gain_with_parameters_too_extreme_for_a_finite_gain() -> None:
    code, out, err = invoke("gain", "softplus", "--param", "beta=1e-300", "--samples", "1000")
    assert code == 2
    assert out == ""
    assert "no finite gain" in err and "Traceback" not in err and "Warning" not in err
