"""Saved weights: ``run --save-model`` writes the network's state_dict, ``init.from`` studies a saved one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from initlab.cli import app
from initlab.config import load_config
from initlab.errors import InitlabError
from initlab.runner import run
from tests.conftest import CONFIGS

runner = CliRunner()
SMALL = ["model.depth=5", "model.width=8", "data.batch_size=6"]
TANH = str(CONFIGS / "tanh-xavier.yaml")


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def saved_run(tmp_path: Path, *overrides: str) -> Path:
    """The results folder of ``run tanh-xavier --save-model`` at a small size."""
    code, _, err = invoke("run", TANH, *SMALL, *overrides, "--save-model", "--out", str(tmp_path / "saved"))
    assert code == 0, err
    (folder,) = (tmp_path / "saved" / "tanh-xavier").iterdir()
    return folder


def measured(folder: Path) -> str:
    """layers.csv without the theory columns (loaded weights have no mean-field prediction)."""
    table = pd.read_csv(folder / "layers.csv", dtype=str, keep_default_na=False)
    kept: str = table[[c for c in table.columns if not c.startswith("theory_")]].to_csv(index=False)
    return kept


def saved_run_of(config: Any, root: Path) -> Path:
    """The results folder ``initlab run`` writes for ``config``."""
    from initlab.results import save_run

    return save_run(run(config), root, [])


class _Touch:
    """A pickle that creates ``path`` when unpickled without weights_only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


# ---------------------------------------------------------------- --save-model


def test_save_model_writes_the_state_dict_a_plain_module_list_loads(tmp_path: Path) -> None:
    folder = saved_run(tmp_path, "model.bias=true", "init.bias.scheme=normal")
    state = torch.load(folder / "model.pt", weights_only=True)
    assert list(state) == [f"blocks.{i}.linear.{p}" for i in range(5) for p in ("weight", "bias")]
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state.values())
    # the README's plain network: a ModuleList of Linear, the "blocks." and ".linear" taken out of the keys
    plain = nn.ModuleList([nn.Linear(8, 8) for _ in range(5)])
    plain.load_state_dict({k.removeprefix("blocks.").replace(".linear", ""): v for k, v in state.items()})
    # the same numbers as the study: its weights' std, recomputed from the file by an independent route
    layers = pd.read_csv(folder / "layers.csv")
    for i, linear in enumerate(plain):
        assert linear.weight.double().std().item() == pytest.approx(layers["weight_std"][i], rel=1e-12)
    meta = json.loads((folder / "meta.json").read_text())
    import hashlib
    assert meta["saved_models"] == {"model.pt": hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()}


def test_save_model_with_several_seeds_writes_one_file_per_seed(tmp_path: Path) -> None:
    code, _, err = invoke("run", TANH, *SMALL, "--seeds", "2", "--save-model", "--out", str(tmp_path))
    assert code == 0, err
    (folder,) = (tmp_path / "tanh-xavier").iterdir()
    first, second = (torch.load(folder / f"model-s{s}.pt", weights_only=True) for s in (1, 2))
    assert not torch.equal(first["blocks.0.linear.weight"], second["blocks.0.linear.weight"])


def test_save_model_needs_a_results_folder(tmp_path: Path) -> None:
    code, out, err = invoke("run", TANH, *SMALL, "--save-model", "--no-save")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--no-save" in err


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_then_load_gives_the_same_numbers(tmp_path: Path, dtype: str) -> None:
    folder = saved_run(tmp_path, "init.scheme=normal", "init.std=0.4", f"dtype={dtype}")
    assert torch.load(folder / "model.pt", weights_only=True)["blocks.0.linear.weight"].dtype == getattr(torch, dtype)
    code, out, err = invoke("run", TANH, *SMALL, "init.scheme=normal", "init.std=0.4", f"dtype={dtype}",
                            f"init.from={folder / 'model.pt'}", "--out", str(tmp_path / "loaded"))
    assert code == 0, err
    (loaded,) = (tmp_path / "loaded" / "tanh-xavier").iterdir()
    assert measured(loaded) == measured(folder)  # every measured column, byte for byte
    assert "theory: does not apply: the weights are loaded from a file" in out.replace("\n", " ")
    meta = json.loads((loaded / "meta.json").read_text())
    summary = json.loads((loaded / "summary.json").read_text())
    saved = json.loads((folder / "meta.json").read_text())["saved_models"]["model.pt"]
    assert meta["init_from"]["sha256"] == summary["init_from"]["sha256"] == saved
    assert meta["init_from"]["path"] == str(folder / "model.pt")


def test_loaded_weights_replace_the_drawn_ones_and_the_input_stays(tmp_path: Path) -> None:
    """Weights from a hand-made ModuleList (its key form) are the ones studied; the input is the drawn study's."""
    torch.manual_seed(7)
    plain = nn.ModuleList([nn.Linear(8, 8, bias=False) for _ in range(5)])
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    config = load_config(TANH, [*SMALL, f"init.from={tmp_path / 'plain.pt'}"])
    result = run(config)
    drawn = run(load_config(TANH, SMALL))
    assert result.meta["input_std"] == drawn.meta["input_std"]
    x = torch.Generator().manual_seed(1)  # the plain script: the drawn study's stream, then its input
    from initlab.model import build, draw_input
    build(load_config(TANH, SMALL), x, torch.float32)
    h = draw_input(config, x, torch.float32)
    with torch.no_grad():
        for linear in plain:
            h = torch.tanh(linear(h))
            # the study's std is float64 over the block output; recompute it here the same way
    assert result.layers["std"].iloc[-1] == pytest.approx(h.double().std().item(), rel=1e-6)
    assert result.layers["weight_std"].tolist() == pytest.approx([lin.weight.double().std().item() for lin in plain],
                                                                 rel=1e-12)
    assert result.theory is not None and not result.theory.applicable


@pytest.mark.parametrize("form", ["initlab", "linear", "blocks", "dataparallel"])
def test_every_documented_key_form_is_accepted(tmp_path: Path, form: str) -> None:
    torch.manual_seed(0)
    weights = [torch.randn(8, 8) for _ in range(5)]
    names = {"initlab": "blocks.{}.linear.weight", "linear": "{}.weight", "blocks": "{}.linear.weight",
             "dataparallel": "module.blocks.{}.linear.weight"}[form]
    torch.save({names.format(i): w for i, w in enumerate(weights)}, tmp_path / "w.pt")
    result = run(load_config(TANH, [*SMALL, f"init.from={tmp_path / 'w.pt'}"]))
    assert result.layers["weight_std"].tolist() == pytest.approx([w.double().std().item() for w in weights],
                                                                 rel=1e-12)


def test_a_relative_path_in_a_yaml_is_the_yaml_folder_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    torch.save({f"{i}.weight": torch.eye(8) for i in range(5)}, tmp_path / "sub" / "w.pt")
    yaml = tmp_path / "sub" / "study.yaml"
    yaml.write_text("model: {depth: 5, width: 8}\ninit: {from: w.pt}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(yaml).init.from_ == str(tmp_path / "sub" / "w.pt")
    # on the command line: relative to the current folder
    assert load_config(yaml, ["init.from=sub/w.pt"]).init.from_ == str(tmp_path / "sub" / "w.pt")


# ---------------------------------------------------------------- bad checkpoints


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = {f"blocks.{i}.linear.weight": torch.randn(8, 8) for i in range(5)}
    cases: dict[str, tuple[Any, str]] = {
        "tensor": (torch.zeros(8, 8), "holds a tensor of shape [8, 8], not a state_dict"),
        "list": ([torch.zeros(8, 8)], "holds a list, not a state_dict"),
        "empty": ({}, "an empty state_dict"),
        "training": ({**good, "epoch": 3}, "'epoch' holds a int, not a tensor"),
        "module": (nn.Linear(8, 8), "refused: it needs torch.nn.modules.linear.Linear"),
        "missing": (dict(list(good.items())[:4]), "missing 1 (blocks.4.linear.weight)"),
        "extra": ({**good, "5.weight": torch.randn(8, 8)}, "unexpected 1 (5.weight)"),
        "bias": ({**good, "blocks.0.linear.bias": torch.zeros(8)}, "the file has biases: set model.bias: true"),
        "twice": ({**good, "0.weight": torch.randn(8, 8)}, "blocks.0.linear.weight is given twice"),
        "shape": ({**good, "blocks.2.linear.weight": torch.randn(8, 9)},
                  "blocks.2.linear.weight: shape [8, 9] in the file, [8, 8] in the config's network"),
        "dtype": ({k: v.double() for k, v in good.items()},
                  "blocks.0.linear.weight: float64 in the file, the study's dtype is float32"),
    }
    out = {}
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / f"{name}.pt")
        out[name] = (tmp_path / f"{name}.pt", message)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    out["garbage"] = (tmp_path / "garbage.pt", "not a state_dict saved by torch.save")
    (tmp_path / "zero.pt").write_bytes(b"")
    out["zero"] = (tmp_path / "zero.pt", "not a readable torch.save file")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "shape.pt").read_bytes()[:200])
    out["truncated"] = (tmp_path / "truncated.pt", "not a readable torch.save file")
    with open(tmp_path / "pickle.pt", "wb") as f:
        pickle.dump({"blocks.0.linear.weight": [1.0]}, f)
    out["pickle"] = (tmp_path / "pickle.pt", "not a state_dict saved by torch.save")
    return out


BAD = ["tensor", "list", "empty", "training", "module", "missing", "extra", "bias", "twice", "shape", "dtype",
       "garbage", "zero", "truncated", "pickle"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_checkpoint_is_one_line_exit_2_and_nothing_written(tmp_path: Path, case: str) -> None:
    path, message = _bad_files(tmp_path)[case]
    out_root = tmp_path / "results"
    code, out, err = invoke("run", TANH, *SMALL, f"init.from={path}", "--save-model", "--out", str(out_root))
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: init.from: {path}: ") and message in err, err
    assert not out_root.exists()


def test_a_missing_file_names_the_yaml_line(tmp_path: Path) -> None:
    yaml = tmp_path / "study.yaml"
    yaml.write_text("model:\n  depth: 5\ninit:\n  from: nowhere.pt\n")
    code, out, err = invoke("run", str(yaml), "--out", str(tmp_path / "results"))
    assert code == 2 and out == ""
    assert err == f"error: {yaml}:4: init.from: no such file (got '{tmp_path / 'nowhere.pt'}')\n"
    code, _, err = invoke("run", str(yaml), "init.from=.", "--out", str(tmp_path / "results"))
    assert code == 2 and "init.from: not a file" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_weights_only_is_enforced_a_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save(_Touch(marker), tmp_path / "evil.pt")
    code, out, err = invoke("run", TANH, *SMALL, f"init.from={tmp_path / 'evil.pt'}", "--out", str(tmp_path / "r"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "refused: it needs io.open" in err or "refused: it needs builtins.open" in err
    assert not marker.exists() and not (tmp_path / "r").exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the test's own check: unsafe loading does run it
    assert marker.exists()


def test_the_library_raises_the_same_error(tmp_path: Path) -> None:
    path, _ = _bad_files(tmp_path)["shape"]
    config = load_config(TANH, [*SMALL, f"init.from={path}"])  # the file exists: the config is valid
    with pytest.raises(InitlabError, match=r"blocks\.2\.linear\.weight: shape \[8, 9\] in the file, \[8, 8\]"):
        run(config)


# ---------------------------------------------------------------- compare


def _compare_yaml(tmp_path: Path) -> Path:
    torch.save({f"{i}.weight": torch.randn(8, 8) * 0.4 for i in range(5)}, tmp_path / "w.pt")
    yaml = tmp_path / "base.yaml"
    yaml.write_text("seed: 1\nmodel: {depth: 5, width: 8, activation: tanh}\ndata: {batch_size: 6}\n"
                    "init: {from: w.pt}\n")
    return yaml


def test_compare_takes_init_from_as_a_fixed_base(tmp_path: Path) -> None:
    yaml = _compare_yaml(tmp_path)
    code, out, err = invoke("compare", "--config", str(yaml), "--activations", "tanh,relu", "--seeds", "2",
                            "--out", str(tmp_path / "r"), "--grid", "data.batch_size=6,12")
    assert code == 0, err
    assert "from w.pt" in out
    (folder,) = (tmp_path / "r" / "base").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["init_from"]["path"] == str(tmp_path / "w.pt") and len(meta["init_from"]["sha256"]) == 64
    cells = sorted((folder / "cells").iterdir())
    assert len(cells) == 2 * 2 * 2  # activations x batch sizes x seeds
    for cell in cells[:2]:  # a cell studies the loaded weights: run on its config gives its numbers
        assert json.loads((cell / "summary.json").read_text())["init_from"]["path"] == str(tmp_path / "w.pt")
        (again,) = [saved_run_of(load_config(cell / "config.yaml"), tmp_path / f"again-{cell.name}")]
        assert measured(again) == measured(cell)


@pytest.mark.parametrize(("args", "message"), [
    (["--schemes", "xavier"], "--schemes: the base config loads its weights"),
    (["--depths", "5,6"], "--depths: the base config loads its weights"),
    (["--widths", "8,16"], "--widths: the base config loads its weights"),
    (["--grid", "init.gain=1,2"], "--grid init.gain: the base config loads its weights"),
    (["--grid", "init.bias.std=0.1,0.2"], "--grid init.bias.std: the base config loads its weights"),
    (["--grid", "model.bias=true,false"], "--grid model.bias: the base config loads its weights"),
    (["--grid", "model.bias_std=0.1,0.2"], "--grid model.bias_std: the base config loads its weights"),
    (["--grid", "dtype=float32,float64"], "float32 in the file, the study's dtype is float64"),
    (["--width", "9"], "shape [8, 8] in the file, [9, 9] in the config's network"),
])
def test_compare_refuses_axes_that_change_loaded_weights(tmp_path: Path, args: list[str], message: str) -> None:
    yaml = _compare_yaml(tmp_path)
    code, out, err = invoke("compare", "--config", str(yaml), *args, "--out", str(tmp_path / "r"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "r").exists()


def test_compare_refuses_init_from_as_a_grid_axis(tmp_path: Path) -> None:
    _compare_yaml(tmp_path)
    code, out, err = invoke("compare", "--schemes", "xavier", "--depth", "5", "--width", "8",
                            "--grid", f"init.from={tmp_path / 'w.pt'}", "--out", str(tmp_path / "r"))
    assert code == 2 and out == "" and err == ("error: --grid init.from: saved weights are a fixed base (init.from in "
                                               "the --config YAML), not an axis\n")
    assert not (tmp_path / "r").exists()


def test_a_file_without_biases_for_a_network_with_biases_says_so(tmp_path: Path) -> None:
    torch.save({f"{i}.weight": torch.randn(8, 8) for i in range(5)}, tmp_path / "w.pt")
    code, out, err = invoke("run", TANH, *SMALL, "model.bias=true", f"init.from={tmp_path / 'w.pt'}", "--no-save")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "missing 5 (blocks.0.linear.bias" in err
    assert err.endswith("(the file has no biases: set model.bias: false)\n")
