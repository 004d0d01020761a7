"""Residual and normalised blocks (issue 14): the hand-built network, probes, theory, verdicts, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import initlab
from initlab.cli import app
from initlab.config import load_config
from initlab.model import build
from initlab.regimes import POLYNOMIAL_POWER, Trace, classify
from tests.conftest import CONFIGS, make_config

BLOCKS = [(block, norm) for block in ("plain", "residual") for norm in ("none", "layernorm", "batchnorm")]


def _norm(kind: str, width: int) -> nn.Module | None:
    if kind == "layernorm":
        return nn.LayerNorm(width, dtype=torch.float64)
    if kind == "batchnorm":
        return nn.BatchNorm1d(width, dtype=torch.float64)
    return None


def hand_built(block: str, norm: str, alpha: float, seed: int, depth: int, width: int, batch: int
               ) -> dict[str, list[float]]:
    """The network from torch.nn pieces under torch.manual_seed, with bias and float64: per-layer stds
    of the Linear's output, the norm's, the branch's and the block's, and the gradient of every block
    output for an upstream N(0, 1) drawn right after the input."""
    torch.manual_seed(seed)
    linears = [nn.Linear(width, width, dtype=torch.float64) for _ in range(depth)]
    norms = [_norm(norm, width) for _ in range(depth)]  # draw nothing
    with torch.no_grad():
        for linear in linears:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="tanh")
            nn.init.normal_(linear.bias, std=0.1)
    x = torch.randn(batch, width, dtype=torch.float64)
    g = torch.randn(batch, width, dtype=torch.float64)
    out: dict[str, list[float]] = {"pre": [], "normed": [], "branch": [], "post": []}
    outputs = []
    for linear, n in zip(linears, norms, strict=True):
        if block == "residual":
            h = n(x) if n is not None else x
            if n is not None:
                out["normed"].append(h.std().item())
            pre = linear(h)
            branch = torch.tanh(pre)
            out["branch"].append(branch.std().item())
            x = x + alpha * branch
        else:
            pre = linear(x)
            h = n(pre) if n is not None else pre
            if n is not None:
                out["normed"].append(h.std().item())
            x = torch.tanh(h)
        out["pre"].append(pre.std().item())
        out["post"].append(x.std().item())
        x.retain_grad()
        outputs.append(x)
    x.backward(g)
    out["grad"] = [o.grad.std().item() for o in outputs]  # type: ignore[union-attr]
    return out


def _config(block: str, norm: str, depth: int = 5, width: int = 24, batch: int = 8, **model: object):  # type: ignore[no-untyped-def]
    scale = {"residual_scale": 0.7} if block == "residual" else {}
    return make_config(
        model={"depth": depth, "width": width, "activation": "tanh", "bias": True, "block": block, "norm": norm,
               **scale, **model},
        init={"scheme": "kaiming_normal", "nonlinearity": "tanh", "bias": {"scheme": "normal", "std": 0.1}},
        data={"batch_size": batch}, dtype="float64", backward=True,
    )


@pytest.mark.parametrize(("block", "norm"), BLOCKS)
def test_every_block_equals_the_hand_built_network(block: str, norm: str) -> None:
    result = initlab.run(_config(block, norm))
    expected = hand_built(block, norm, 0.7, 3, 5, 24, 8)
    table = result.layers
    assert table["pre_std"].tolist() == pytest.approx(expected["pre"], rel=1e-12)
    assert table["std"].tolist() == pytest.approx(expected["post"], rel=1e-12)
    assert table["grad_std"].tolist() == pytest.approx(expected["grad"], rel=1e-10)
    assert ("norm_std" in table.columns) == (norm != "none")
    assert ("branch_std" in table.columns) == (block == "residual")
    if norm != "none":
        assert table["norm_std"].tolist() == pytest.approx(expected["normed"], rel=1e-12)
    if block == "residual":
        assert table["branch_std"].tolist() == pytest.approx(expected["branch"], rel=1e-12)
        assert np.isfinite(table["skip_ratio"]).all()


def test_state_dict_keys_are_plain() -> None:
    generator = torch.Generator().manual_seed(0)
    model = build(_config("residual", "batchnorm", depth=2), generator, torch.float64)
    assert list(model.state_dict()) == [
        f"blocks.{i}.{key}" for i in range(2) for key in (
            "linear.weight", "linear.bias", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
            "norm.num_batches_tracked")
    ]
    plain = build(_config("plain", "none", depth=2), torch.Generator().manual_seed(0), torch.float64)
    assert list(plain.state_dict()) == ["blocks.0.linear.weight", "blocks.0.linear.bias",
                                        "blocks.1.linear.weight", "blocks.1.linear.bias"]


def test_skip_ratio_is_rms_of_the_input_over_rms_of_the_scaled_branch() -> None:
    config = make_config(model={"depth": 3, "width": 16, "activation": "linear", "block": "residual",
                                "residual_scale": 0.5}, init={"scheme": "normal", "std": 0.25}, dtype="float64")
    torch.manual_seed(config.seed)
    linears = [nn.Linear(16, 16, bias=False, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        for linear in linears:
            nn.init.normal_(linear.weight, std=0.25)
        x = torch.randn(8, 16, dtype=torch.float64)
        ratios = []
        for linear in linears:
            branch = 0.5 * linear(x)
            ratios.append((x.pow(2).mean().sqrt() / branch.pow(2).mean().sqrt()).item())
            x = x + branch
    assert initlab.run(config).layers["skip_ratio"].tolist() == pytest.approx(ratios, rel=1e-10)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(("override", "message"), [
    ("model.residual_scale=0.5", "model.residual_scale: scales a residual block's branch: give it with block: "
                                 "residual"),
    ("model.residual_scale=-1", "model.residual_scale: expected a positive number or auto"),
    ("model.block=dense", "model.block"),
    ("model.norm=groupnorm", "model.norm"),
])
def test_nonsense_is_one_clear_line(override: str, message: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(CONFIGS / "relu-kaiming.yaml"), override, "--out", str(tmp_path)],
                           terminal_width=200)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


@pytest.mark.parametrize("model", [{"block": "residual"}, {"norm": "layernorm"}])
def test_the_jacobian_is_refused_for_other_blocks(model: dict[str, str]) -> None:
    with pytest.raises(Exception, match="the Jacobian covers plain blocks without a norm"):
        make_config(model={"width": 4, **model}, jacobian={"samples": 2})


def test_batchnorm_needs_two_inputs() -> None:
    with pytest.raises(Exception, match="batchnorm normalises over the batch"):
        make_config(model={"norm": "batchnorm", "width": 4}, data={"batch_size": 1})


def test_defaults_add_no_keys_and_auto_is_one_over_sqrt_depth() -> None:
    assert set(make_config().model_dump()["model"]) == {"depth", "width", "activation", "bias"}
    config = make_config(model={"depth": 16, "block": "residual", "residual_scale": "auto"})
    assert config.model.alpha == 0.25
    assert make_config(model={"block": "residual"}).model.alpha == 1.0
    assert config.model_dump()["model"]["residual_scale"] == "auto"


# ---------------------------------------------------------------- theory


@pytest.mark.parametrize(("activation", "scheme", "alpha"), [
    ("linear", {"scheme": "normal", "std": 1 / 32}, 1.0),
    ("tanh", {"scheme": "xavier_normal", "gain": "auto"}, 0.5),
])
def test_residual_theory_matches_monte_carlo_at_large_width(activation: str, scheme: dict[str, object],
                                                            alpha: float) -> None:
    config = make_config(model={"depth": 12, "width": 1024, "activation": activation, "block": "residual",
                                "residual_scale": alpha}, init=scheme, data={"batch_size": 64}, backward=False)
    table = initlab.run(config).layers
    # 64 x 1024 values per layer: a std's sampling error is ~0.5 %; the width's correction ~1/n per block.
    assert table["std"].tolist() == pytest.approx(table["theory_std"].tolist(), rel=0.05)
    assert table["pre_std"].tolist() == pytest.approx(table["theory_pre_std"].tolist(), rel=0.05)


def test_residual_theory_is_the_independent_recursion() -> None:
    """Linear at σw² = 1: p multiplies by exactly 1 + α² per block, whatever the quadrature says."""
    config = make_config(model={"depth": 7, "width": 64, "activation": "linear", "block": "residual",
                                "residual_scale": 0.3}, init={"scheme": "normal", "std": 0.125}, backward=False)
    table = initlab.run(config).layers
    expected = [math.sqrt(1.09 ** (i + 1)) for i in range(7)]
    assert table["theory_std"].tolist() == pytest.approx(expected, rel=1e-9)


def test_residual_theory_line_names_no_fixed_point(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "resnet-linear-scaled.yaml"), "model.depth=4",
                                      "--no-save"], terminal_width=400)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the line as one, however it wrapped
    assert "theory: per-block columns (mean field, wide-network limit); residual blocks, α = 0.5:" in text
    assert "q* = n/a" not in text


@pytest.mark.parametrize(("block", "norm", "activation"), [
    ("residual", "none", "relu"), ("residual", "layernorm", "tanh"), ("plain", "batchnorm", "tanh"),
])
def test_other_blocks_say_no_theory(block: str, norm: str, activation: str) -> None:
    config = make_config(model={"depth": 4, "width": 16, "activation": activation, "block": block, "norm": norm})
    result = initlab.run(config)
    assert result.theory is not None and not result.theory.applicable
    assert result.theory.reason is not None and result.theory.reason.startswith("no theory for this block")
    assert result.layers["theory_std"].isna().all() and result.verdict.theory_agrees is None


# ---------------------------------------------------------------- verdicts


def test_polynomial_growth_of_a_residual_stream_is_stable() -> None:
    root = [math.sqrt(i + 1) for i in range(100)]
    linear = [float(i + 1) for i in range(100)]
    geometric = [1.03 ** (i + 1) for i in range(100)]
    thresholds = make_config().verdict
    assert classify(Trace(root, [0.0] * 100, 1.0, residual=True), thresholds).regime == "stable"
    assert classify(Trace(linear, [0.0] * 100, 1.0, residual=True), thresholds).regime == "stable"
    assert POLYNOMIAL_POWER == 1.0
    assert classify(Trace([v ** 1.5 for v in linear], [0.0] * 100, 1.0, residual=True), thresholds).regime == \
        "explosion"
    assert classify(Trace(geometric, [0.0] * 100, 1.0, residual=True), thresholds).regime == "explosion"
    assert classify(Trace(root, [0.0] * 100, 1.0), thresholds).regime == "explosion"  # plain: unchanged


CLASSIC = {
    "resnet-linear": "explosion", "resnet-linear-scaled": "stable", "resnet-relu-kaiming": "explosion",
    "resnet-relu-kaiming-scaled": "explosion", "resnet-prenorm-layernorm": "stable", "plain-batchnorm": "stable",
}


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_shipped_configs(name: str) -> None:
    result = initlab.run(load_config(CONFIGS / f"{name}.yaml", ["backward=false"]))
    assert result.verdict.regime == CLASSIC[name], result.verdict.reason
    if name.startswith("resnet-linear"):  # the theory's numbers: x(1 + α²) per block in the second moment
        alpha = 1.0 if name == "resnet-linear" else 0.1
        ratio = result.verdict.ratio
        assert ratio is not None and ratio == pytest.approx((1 + alpha**2) ** 50, rel=0.1)
        assert result.verdict.theory_agrees


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
@pytest.mark.parametrize(("depth", "width"), [(40, 64), (150, 256)])
def test_classic_outcomes_over_seeds_depths_widths(seed: int, depth: int, width: int) -> None:
    def run(name: str, *more: str):  # type: ignore[no-untyped-def]
        scaled = [f"init.std={width ** -0.5}"] if name.startswith("resnet-linear") else []  # N(0, 1/n)
        return initlab.run(load_config(CONFIGS / f"{name}.yaml", [
            f"seed={seed}", f"model.depth={depth}", f"model.width={width}", "backward=false", *scaled, *more]))

    scaled = run("resnet-linear-scaled").verdict
    assert scaled.regime == "stable" and scaled.ratio == pytest.approx(math.sqrt((1 + 1 / depth) ** depth), rel=0.1)
    assert run("resnet-linear").verdict.regime == "explosion"
    assert run("resnet-relu-kaiming").verdict.regime == "explosion"
    assert run("resnet-prenorm-layernorm").verdict.regime == "stable"
    assert run("plain-batchnorm").verdict.regime == "stable"


def test_compare_grid_takes_residual_scale(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    result = runner.invoke(app, [
        "compare", "--config", str(CONFIGS / "resnet-linear.yaml"), "--schemes", "normal:std=0.125",
        "--depth", "8", "--width", "64", "--grid", "model.residual_scale=0.1,1,auto", "--out", str(tmp_path),
    ], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "residual_scale" in result.output
