"""The backward signal: gradient columns equal a plain autograd script, merge across replicas, survive
an overflowing forward pass, and their verdicts and predictions hold."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import initlab
from initlab.config import load_config
from initlab.model import build, draw_input, probe_targets
from initlab.probes import Accumulator, ForwardProbe, GradientProbe
from initlab.statistics import statistics_for
from tests.conftest import CONFIGS, make_config

Init = Callable[[nn.Linear], object]
CASES: dict[str, tuple[Init, Callable[[torch.Tensor], torch.Tensor]]] = {
    "tanh-xavier": (lambda lin: nn.init.xavier_uniform_(lin.weight, gain=5 / 3), torch.tanh),
    "relu-kaiming": (lambda lin: nn.init.kaiming_normal_(lin.weight, nonlinearity="relu"), torch.relu),
    "relu-xavier": (lambda lin: nn.init.xavier_uniform_(lin.weight), torch.relu),
    "tanh-normal-scaled": (lambda lin: nn.init.normal_(lin.weight, std=1 / 16), torch.tanh),
    "linear-normal-scaled": (lambda lin: nn.init.normal_(lin.weight, std=1 / 16), lambda x: x),
    "linear-normal": (lambda lin: nn.init.normal_(lin.weight), lambda x: x),
}


def plain_autograd(seed: int, init: Init, act: Callable[[torch.Tensor], torch.Tensor], upstream: str,
                   depth: int = 100, width: int = 256, batch: int = 16) -> dict[str, list[torch.Tensor]]:
    """The issue's contract, written the way a tutorial would: seed, ModuleList, init, x, g, retain_grad."""
    torch.manual_seed(seed)
    layers = nn.ModuleList([nn.Linear(width, width, bias=False) for _ in range(depth)])
    with torch.no_grad():
        for layer in layers:
            init(layer)
    x = torch.randn(batch, width)
    g = torch.randn(batch, width) if upstream == "normal" else None
    pre, post, h = [], [], x
    for layer in layers:
        a = layer(h)
        a.retain_grad()
        h = act(a)
        if h is not a:
            h.retain_grad()
        pre.append(a)
        post.append(h)
    y = h
    y.backward(g if g is not None else y.detach() if upstream == "output" else torch.ones_like(y))
    return {"grad": [t.grad for t in post], "pre_grad": [t.grad for t in pre],  # type: ignore[misc]
            "weight_grad": [layer.weight.grad for layer in layers], "weight": [layer.weight for layer in layers]}


def _std(t: torch.Tensor) -> float:
    return t.double().std().item()


@pytest.mark.parametrize("upstream", ["normal", "output", "ones"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_columns_equal_the_plain_autograd_script(name: str, upstream: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml", [f"backward.upstream={upstream}"])
    init, act = CASES[name]
    script = plain_autograd(config.seed, init, act, upstream)
    layers = initlab.run(config).layers
    for column, tensors in [("grad", script["grad"]), ("pre_grad", script["pre_grad"]),
                            ("weight_grad", script["weight_grad"])]:
        bad = [int((~torch.isfinite(t)).sum()) for t in tensors]
        assert layers[f"{column}_nonfinite"].tolist() == bad
        finite = [i for i, n in enumerate(bad) if n == 0]
        assert layers[f"{column}_std"].iloc[finite].tolist() == pytest.approx(
            [_std(tensors[i]) for i in finite], rel=1e-12, abs=1e-300)
        assert layers[f"{column}_std"].iloc[[i for i, n in enumerate(bad) if n]].isna().all()  # null, not a number
    finite = layers["grad_nonfinite"] == 0
    grads = [t for t, ok in zip(script["grad"], finite, strict=True) if ok]
    assert layers.loc[finite, "grad_mean"].tolist() == pytest.approx([t.double().mean().item() for t in grads],
                                                                      rel=1e-9, abs=1e-300)
    assert layers.loc[finite, "grad_absmax"].tolist() == [t.abs().max().item() for t in grads]
    assert layers.loc[finite, "grad_rms"].tolist() == pytest.approx(
        [t.double().square().mean().sqrt().item() for t in grads], rel=1e-12)
    ratio = np.array([_std(w) / _std(v) for w, v in zip(script["weight_grad"], script["weight"], strict=True)])
    shown = layers["grad_ratio"].notna().to_numpy()
    assert (shown == np.isfinite(ratio)).all()
    assert layers.loc[shown, "grad_ratio"].tolist() == pytest.approx(ratio[shown].tolist(), rel=1e-12)


def test_the_last_blocks_gradient_is_the_upstream_one() -> None:
    layers = initlab.run(load_config(CONFIGS / "relu-kaiming.yaml", ["backward.upstream=ones"])).layers
    last = layers.iloc[-1]
    assert (last["grad_std"], last["grad_mean"], last["grad_rms"], last["grad_absmax"]) == (0.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("name", ["tanh-xavier", "linear-normal", "relu-xavier"])
def test_forward_numbers_do_not_change_with_the_backward_pass(name: str) -> None:
    on = initlab.run(load_config(CONFIGS / f"{name}.yaml"))
    off = initlab.run(load_config(CONFIGS / f"{name}.yaml", ["backward=false"]))
    assert off.backward is None and off.summary["backward"] is None
    assert not [c for c in off.layers.columns if "grad" in c]
    forward = list(off.layers.columns)
    assert on.layers[forward].equals(off.layers[forward])  # exactly: the same kernels on the same values
    assert on.verdict == off.verdict


@pytest.mark.parametrize(("batch", "replicas"), [(10, 3), (7, 2), (16, 4)])
def test_replica_gradients_in_threads_merge_to_the_single_device_statistics(batch: int, replicas: int) -> None:
    """What nn.DataParallel does: replicas carry the hooks, run their slice of the batch in their own
    thread, and the backward pass reaches each replica's outputs (in the autograd engine's threads)."""
    config = make_config(model={"depth": 5, "width": 24, "activation": "tanh"}, data={"batch_size": batch})
    generator = torch.Generator().manual_seed(config.seed)
    model = build(config, generator, torch.float32)
    x = draw_input(config, generator, torch.float32)
    g = torch.randn(x.shape, generator=generator)
    sites = {s: statistics_for(s, config.model.activation) for s in ("pre", "post", "pre_grad", "grad")}

    def records(split: bool) -> list[dict[str, object]]:
        targets = probe_targets(model)
        with ForwardProbe(targets, sites) as probe, GradientProbe(targets, probe.accumulator):
            if not split:
                model(x).backward(g)
                return probe.records()
            copies = [copy.deepcopy(model) for _ in range(replicas)]  # replicate(): hooks come along

            def replica(job: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
                module, rows, grad = job  # forward and backward in the replica's own thread, as on a GPU
                module(rows).backward(grad)

            with ThreadPoolExecutor(replicas) as pool:
                list(pool.map(replica, zip(copies, x.chunk(replicas), g.chunk(replicas), strict=True)))
            return probe.records()

    single, merged = records(False), records(True)
    assert {r["site"] for r in single} == {"pre", "post", "pre_grad", "grad"}
    assert [(r["layer"], r["site"], r["stat"]) for r in merged] == [(r["layer"], r["site"], r["stat"]) for r in single]
    for a, b in zip(single, merged, strict=True):
        assert b["value"] == pytest.approx(a["value"], rel=1e-6, abs=1e-12), (a, b)


def test_gradient_probe_removes_its_tensor_hooks_on_exit_even_on_error() -> None:
    config = make_config(model={"depth": 3, "width": 8, "activation": "tanh"})
    model = build(config, torch.Generator().manual_seed(0), torch.float32)
    x = torch.randn(4, 8)
    accumulator = Accumulator({s: statistics_for(s, config.model.activation) for s in ("pre_grad", "grad")})
    outputs = []

    def fail_inside() -> None:
        with GradientProbe(probe_targets(model), accumulator):
            outputs.append(model(x))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    outputs[0].sum().backward()  # after the block: no hook may fire
    assert accumulator.records() == []
    assert all(not m._forward_hooks for m in model.modules())


def _strict_json(path: Path) -> dict[str, object]:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in {path.name}")

    return json.loads(path.read_text(), parse_constant=refuse)  # type: ignore[no-any-return]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_an_overflowing_forward_pass_gives_non_finite_gradients_reported_as_null(
        tmp_path: Path, activation: str) -> None:
    from typer.testing import CliRunner

    from initlab.cli import app

    args = ["run", str(CONFIGS / "linear-normal.yaml"), f"model.activation={activation}", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "backward: EXPLOSION (non-finite)" in result.output
    folder = next(p for p in tmp_path.rglob("summary.json")).parent
    summary = _strict_json(folder / "summary.json")
    backward = summary["backward"]
    assert isinstance(backward, dict) and backward["regime"] == "explosion" and backward["nonfinite"] is True
    header, *rows = (folder / "layers.csv").read_text().splitlines()
    column = header.split(",").index("grad_std")
    assert any(row.split(",")[column] == "" for row in rows)  # empty cells, never "nan"
    assert "nan" not in (folder / "layers.csv").read_text().lower()


# ---------------------------------------------------------------- verdicts and theory


#: Backward outcomes of the classic configs, seed 1 and four more: (regime, decades layer 0 vs upstream).
CLASSIC_BACKWARD = {
    "relu-xavier": ("vanishing", (-16.0, -14.0)),
    "linear-normal": ("explosion", None),
    "linear-normal-scaled": ("stable", (-0.4, 0.4)),
    "relu-kaiming": ("stable", (-0.6, 0.6)),
    "tanh-xavier": ("explosion", (3.5, 5.0)),
    "tanh-normal-scaled": ("vanishing", (-1.2, -0.6)),
}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", sorted(CLASSIC_BACKWARD))
def test_backward_verdicts_of_the_classic_configs(name: str, seed: int) -> None:
    result = initlab.run(load_config(CONFIGS / f"{name}.yaml", [f"seed={seed}"]))
    regime, decades = CLASSIC_BACKWARD[name]
    backward = result.backward
    assert backward is not None and backward.regime == regime, backward
    assert backward.theory_agrees is True
    if decades is None:
        assert backward.nonfinite and backward.first_nonfinite_layer is not None
        return
    rms = result.layers["grad_rms"]
    assert decades[0] < math.log10(rms.iloc[0] / rms.iloc[-1]) < decades[1]
    assert backward.last_finite_layer == 0 and backward.ratio == pytest.approx(rms.iloc[0] / rms.iloc[-1])


def test_tanh_xavier_is_stable_forward_and_explodes_backward_as_the_issue_says() -> None:
    result = initlab.run(load_config(CONFIGS / "tanh-xavier.yaml"))
    assert result.verdict.regime == "stable" and result.backward is not None
    assert result.backward.regime == "explosion"
    assert result.layers["grad_std"].iloc[0] == pytest.approx(1.78e4, rel=0.01)  # the plain script: 1.78e4
    assert result.summary["theory"]["chi1"] == pytest.approx(1.21, abs=0.005)
    assert result.backward.growth_per_layer == pytest.approx(1.104, abs=0.01)


@pytest.mark.parametrize(("activation", "scheme"), [
    ("tanh", {"scheme": "normal", "std": math.sqrt(1.5 / 512)}),  # chaotic: chi1 > 1
    ("tanh", {"scheme": "normal", "std": math.sqrt(0.8 / 512)}),  # ordered
    ("relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"}),  # critical
    ("gelu", {"scheme": "xavier_normal"}),
])
def test_theory_grad_std_agrees_with_monte_carlo(activation: str, scheme: dict[str, object]) -> None:
    """The predicted gradient (chi_l per layer, Schoenholz et al. 2017) against the median over seeds of a
    wide network; the log error allowed grows with depth/width (finite-width fluctuations)."""
    runs = [initlab.run(make_config(seed=s, model={"depth": 12, "width": 512, "activation": activation},
                                    init=scheme, data={"batch_size": 32})) for s in range(6)]
    measured = np.median(np.stack([r.layers["grad_std"].to_numpy() for r in runs]), axis=0)
    predicted = runs[0].layers["theory_grad_std"].to_numpy()
    assert np.isfinite(predicted).all()
    assert np.abs(np.log(measured[:-1] / predicted[:-1])).max() < 0.08


def test_no_prediction_for_upstream_gradients_that_depend_on_the_weights() -> None:
    for name, upstream in [("relu-kaiming", "output"), ("tanh-xavier", "output"), ("relu-kaiming", "ones")]:
        result = initlab.run(load_config(CONFIGS / f"{name}.yaml", [f"backward.upstream={upstream}"]))
        assert result.layers["theory_grad_std"].isna().all() and result.layers["theory_grad_rms"].isna().all()
        assert result.backward is not None and result.backward.theory_agrees is None
        assert f"upstream: {upstream}" in result.backward.notes[-1]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "linear"])
def test_ones_upstream_is_predicted_where_the_derivative_is_even(activation: str) -> None:
    """A constant upstream gradient is independent of the weights; with an even phi' the first mask times it
    has mean 0, so the backward map holds: the median over seeds follows the predicted rms (std 0 at the top)."""
    runs = [initlab.run(make_config(seed=s, model={"depth": 12, "width": 512, "activation": activation},
                                    init={"scheme": "normal", "std": math.sqrt(1.3 / 512)}, data={"batch_size": 32},
                                    backward={"upstream": "ones"})) for s in range(6)]
    measured = np.median(np.stack([r.layers["grad_rms"].to_numpy() for r in runs]), axis=0)
    layers = runs[0].layers
    assert (layers["theory_grad_std"].iloc[-1], layers["theory_grad_rms"].iloc[-1]) == (0.0, 1.0)
    assert np.abs(np.log(measured / layers["theory_grad_rms"].to_numpy())).max() < 0.1


# ---------------------------------------------------------------- turning it on and off


def _refused(*args: str) -> str:
    from typer.testing import CliRunner

    from initlab.cli import app

    result = CliRunner().invoke(app, ["run", *args, "--no-save"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(("text", "message"), [
    ("backward:\n  # upstream: ones\n", "backward: empty: write true (on, every default), false (off) or its keys"),
    ("backward: maybe\n", "backward: expected true, false or a mapping of its keys"),
    ("jacobian: 3\n", "jacobian: expected true, false or a mapping of its keys"),
    ("backward: {upstream: zeros}\n", "backward.upstream"),
])
def test_a_section_is_on_off_or_a_mapping(write_yaml, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    line = _refused(str(write_yaml("model: {depth: 3, width: 8}\n" + text)))
    assert line.startswith("error: ") and ".yaml:2: " in line and message in line


def test_setting_a_key_of_a_section_that_is_off_turns_it_on(write_yaml) -> None:  # type: ignore[no-untyped-def]
    path = write_yaml("model: {depth: 3, width: 8}\nbackward: false\n")
    assert load_config(path).backward is None
    assert load_config(path, ["backward.upstream=ones"]).backward.upstream == "ones"  # type: ignore[union-attr]
    assert load_config(path, ["backward=true"]).backward.upstream == "normal"  # type: ignore[union-attr]


def test_no_backward_after_an_override_that_configures_it_is_refused() -> None:
    line = _refused(str(CONFIGS / "tanh-xavier.yaml"), "backward.upstream=ones", "--no-backward")
    assert line == ("error: --no-backward: turns off backward, which backward.upstream (an earlier override) "
                    "configures; give only one of them")


def test_depth_one_has_no_backward_layer_to_judge() -> None:
    result = initlab.run(load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=1"]))
    assert result.backward is not None and result.backward.regime == "stable"
    assert result.backward.reason == "no layer to judge: the only gradient is the reference"
