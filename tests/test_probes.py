from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from initlab.activations import parse_activation
from initlab.probes import Accumulator, ForwardProbe
from initlab.statistics import MOMENTS, STATISTICS, merge_moments, statistics_for


def probe_all(module: nn.Module, x: torch.Tensor, activation: str = "linear") -> dict[tuple[int, str, str], object]:
    stats = {"post": statistics_for("post", parse_activation(activation))}
    with torch.no_grad(), ForwardProbe([(0, "post", module)], stats) as probe:
        module(x)
    return {(r["layer"], r["site"], r["stat"]): r["value"] for r in probe.records()}


def test_hooks_are_removed_after_the_block_even_on_error() -> None:
    layer = nn.Linear(4, 4)
    stats = {"post": [MOMENTS]}
    inside = torch.randn(2, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), ForwardProbe([(0, "post", layer)], stats) as probe:
        expected = layer(inside).double().std().item()
    assert not layer._forward_hooks
    layer(100 * inside)  # outside the block: not recorded
    values = {r["stat"]: r["value"] for r in probe.records()}
    assert values["std"] == pytest.approx(expected, rel=1e-12)
    def fail_inside() -> None:
        with ForwardProbe([(0, "post", layer)], stats):
            assert len(layer._forward_hooks) == 1
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert not layer._forward_hooks


def test_records_are_tidy_and_match_direct_computation() -> None:
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    values = probe_all(nn.Tanh(), x, "tanh")
    y = torch.tanh(x).double()
    assert values[(0, "post", "std")] == pytest.approx(y.std().item(), rel=1e-12)
    assert values[(0, "post", "mean")] == pytest.approx(y.mean().item(), abs=1e-15)
    assert values[(0, "post", "absmax")] == pytest.approx(y.abs().max().item(), rel=1e-12)
    assert values[(0, "post", "nonfinite")] == 0
    assert values[(0, "post", "saturated")] == pytest.approx((y.abs() >= 0.97).double().mean().item())
    assert (0, "post", "dead") not in values  # dead units mean nothing for tanh


def test_dead_units_and_zero_fraction_for_relu() -> None:
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    x[:, :3] = -x[:, :3].abs()  # three units never fire
    values = probe_all(nn.ReLU(), x, "relu")
    y = torch.relu(x)
    assert values[(0, "post", "dead")] == pytest.approx(3 / 8)
    assert values[(0, "post", "zero")] == pytest.approx((y == 0).double().mean().item())
    assert (0, "post", "saturated") not in values


def test_finite_outputs_near_float32_limit_give_a_finite_exact_std() -> None:
    big = torch.finfo(torch.float32).max / 2
    x = (torch.randn(16, 256, generator=torch.Generator().manual_seed(2)).clamp(-1.9, 1.9) * big).float()
    assert torch.isfinite(x).all() and not math.isfinite(x.std().item())  # float32 overflows...
    values = probe_all(nn.Identity(), x)
    expected = np.std(x.numpy().astype(np.float64), ddof=1)
    assert values[(0, "post", "std")] == pytest.approx(expected, rel=1e-12)  # ...float64 does not
    assert values[(0, "post", "nonfinite")] == 0


def test_non_finite_values_are_counted_and_give_null_statistics() -> None:
    x = torch.ones(4, 4)
    x[0, 0], x[1, 1] = math.inf, math.nan
    values = probe_all(nn.Identity(), x)
    assert values[(0, "post", "nonfinite")] == 2
    assert values[(0, "post", "std")] is None and values[(0, "post", "mean")] is None
    assert values[(0, "post", "absmax")] is None


@pytest.mark.parametrize("sizes", [[7], [5, 2], [3, 3, 1], [1, 1, 1, 1, 1, 2]])
def test_partials_of_uneven_slices_merge_exactly(sizes: list[int]) -> None:
    """What DataParallel replicas produce: partials of batch slices merge to the whole."""
    x = torch.randn(sum(sizes), 33, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3 + 1
    stats = {"post": statistics_for("post", parse_activation("relu"))}
    whole, parts = Accumulator(stats), Accumulator(stats)
    whole.add((0, "post"), torch.relu(x))
    for chunk in torch.relu(x).split(sizes):
        parts.add((0, "post"), chunk)
    for a, b in zip(whole.records(), parts.records(), strict=True):
        assert a["stat"] == b["stat"]
        assert b["value"] == pytest.approx(a["value"], rel=1e-12, abs=1e-15)


def test_chan_merge_formula() -> None:
    rng = np.random.default_rng(4)
    chunks = [rng.normal(2, 3, n) for n in (10, 1, 30)]
    parts = np.array([[len(c), c.mean(), ((c - c.mean()) ** 2).sum(), 0] for c in chunks])
    ((n, mean, m2, bad),) = merge_moments(parts[None])  # one key, three parts
    full = np.concatenate(chunks)
    assert (n, bad) == (41, 0)
    assert mean == pytest.approx(full.mean(), rel=1e-14)
    assert m2 == pytest.approx(((full - full.mean()) ** 2).sum(), rel=1e-12)


def test_registry_lookup_by_name_skips_meaningless_statistics() -> None:
    assert set(STATISTICS) >= {"moments", "saturated", "zeros"}
    tanh, relu = parse_activation("tanh"), parse_activation("relu")
    assert [s.name for s in statistics_for("post", tanh)] == ["moments", "saturated"]
    assert [s.name for s in statistics_for("post", relu)] == ["moments", "zeros"]
    assert [s.name for s in statistics_for("pre", relu)] == ["moments"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_weight_moments_agree_with_float64_and_are_exact_for_constants(dtype: torch.dtype) -> None:
    from initlab.statistics import WEIGHT_MOMENTS

    stats = {"weight": [WEIGHT_MOMENTS]}
    w = (torch.randn(64, 48, generator=torch.Generator().manual_seed(6)) * 0.3 + 0.1).to(dtype)
    bad = w.clone()
    bad[3, 4] = math.inf
    accumulator = Accumulator(stats)
    for i, tensor in enumerate([w, torch.full((64, 48), 0.37, dtype=dtype), bad]):
        accumulator.add((i, "weight"), tensor)
    values = {(r["layer"], r["stat"]): r["value"] for r in accumulator.records()}
    reference = w.double()
    assert values[(0, "std")] == pytest.approx(reference.std().item(), rel=1e-12)
    assert values[(0, "mean")] == pytest.approx(reference.mean().item(), rel=1e-12)
    assert values[(1, "std")] == 0.0  # a constant has no spread, not rounding noise
    assert (values[(2, "std")], values[(2, "nonfinite")]) == (None, 1)


@pytest.mark.parametrize("offset", [0.0, 1e3])  # 1e3 stds from 0: the two-pass fallback
@pytest.mark.parametrize("rows", [1, 3])
def test_moments_summed_slice_by_slice_equal_float64(monkeypatch: pytest.MonkeyPatch, rows: int, offset: float) -> None:
    """Float64 sums are taken over cache-sized slices (here 64 elements, uneven last slice): the
    moments and max |x| still equal numpy's float64 ones, for one tensor and for a stack of several."""
    from initlab import statistics

    monkeypatch.setattr(statistics, "_SLICE", 64)
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(rows, 7, 53, generator=generator) + offset
    x[0, 6, 52] = -offset - 9.0  # the largest magnitude, negative, in the last slice
    values = MOMENTS.finalize(MOMENTS.merge(MOMENTS.partial(x).numpy()[:, None, :]))
    reference = x.reshape(rows, -1).double().numpy()
    assert values["mean"] == pytest.approx(reference.mean(axis=1), rel=1e-14)
    assert values["std"] == pytest.approx(reference.std(axis=1, ddof=1), rel=1e-12)
    assert values["absmax"].tolist() == np.abs(reference).max(axis=1).tolist()
    x[-1, 6, 50] = math.nan  # in the last, short slice of the last row
    values = MOMENTS.finalize(MOMENTS.merge(MOMENTS.partial(x).numpy()[:, None, :]))
    assert values["nonfinite"].tolist() == [0] * (rows - 1) + [1]
    assert np.isnan(values["std"][-1]) and np.isnan(values["absmax"][-1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_saturation_counts_are_exact_beyond_the_dtype_integers(dtype: torch.dtype) -> None:
    """float16 holds integers exactly only up to 2048, bfloat16 up to 256: counts stay exact."""
    x = torch.zeros(1, 3001, dtype=dtype)
    x[0, :2999] = 1.0
    x[0, 5] = -1.0
    partial = STATISTICS["saturated"](parse_activation("tanh"))
    assert partial is not None
    assert partial.partial(x).tolist() == [[2999.0, 3001.0]]


def test_the_device_path_computes_what_the_cpu_path_does() -> None:
    """On a GPU the moments take two float64 passes and nothing is read back: the same numbers."""
    from initlab import statistics

    x = torch.randn(3, 40, 7, generator=torch.Generator().manual_seed(9)) * 2 + 5
    x[1, 3, 2] = -math.inf
    flat = x.reshape(3, -1)
    device = torch.cat([statistics._moments_two_pass(flat), statistics._absmax_partial(flat)], dim=1).numpy()
    host = MOMENTS.partial(x).numpy()
    np.testing.assert_allclose(device[[0, 2]], host[[0, 2]], rtol=1e-13)
    assert device[1, [0, 3, 4]].tolist() == host[1, [0, 3, 4]].tolist() == [280, 1, math.inf]
