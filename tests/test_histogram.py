"""The histogram statistic: fixed power-of-two bins of |x|, exact counts that merge by addition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import initlab
from initlab.config import load_config
from initlab.statistics import HISTOGRAM, HISTOGRAM_BINS, histogram_edges
from tests.conftest import CONFIGS


def expected_bins(values: np.ndarray) -> np.ndarray:
    """Bin of each value by another route: frexp's exponent (|x| = m * 2**e, 0.5 <= m < 1)."""
    magnitude = np.abs(values.astype(np.float64))
    bins = np.empty(values.shape, dtype=np.int64)
    finite = np.isfinite(magnitude)
    _, exponent = np.frexp(np.where(finite, magnitude, 1.0))
    bins[finite] = exponent[finite] + 126  # 2**(e-1) <= |x| < 2**e lies in bin e + 126
    bins[finite & (magnitude < 2.0**-126)] = 0  # zero and float32's subnormals
    bins[finite & (magnitude >= 2.0**128)] = 254  # float64 beyond float32's range: the last finite bin
    bins[~finite] = HISTOGRAM_BINS - 1
    return bins


SPECIAL = [0.0, -0.0, 1e-40, 2.0**-126, 1.0, 1.5, 2.0, -3.0, 0.999999, 1e30, -np.inf, np.inf, np.nan,
           float(np.finfo(np.float32).max)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_counts_equal_frexp_bins(dtype: torch.dtype) -> None:
    values = np.array(SPECIAL + [1e300, 1e-300] * (dtype == torch.float64), dtype=np.float64)
    x = torch.tensor(values, dtype=dtype)
    as_stored = x.double().numpy()  # float16 rounds 1e30 to inf and 1e-40 to 0: bin what it holds
    counts = HISTOGRAM.partial(x.reshape(1, 1, -1))
    expected = np.bincount(expected_bins(as_stored), minlength=HISTOGRAM_BINS)
    assert counts.shape == (1, HISTOGRAM_BINS) and counts.dtype == torch.float64
    assert counts[0].numpy().tolist() == expected.tolist()


def test_edges_are_the_bins_of_frexp() -> None:
    low, high = histogram_edges()
    assert low[0] == 0 and high[0] == 2.0**-126
    inner = np.arange(1, HISTOGRAM_BINS - 1)
    assert expected_bins(low[inner]).tolist() == inner.tolist()  # low edge is in its bin...
    assert expected_bins(np.nextafter(high[inner][:-1], 0)).tolist() == inner[:-1].tolist()  # ...the high one not
    assert np.isnan(low[-1]) and np.isnan(high[-1])


def test_slices_merge_exactly_and_stacks_equal_single_tensors() -> None:
    """DataParallel's replicas see slices of the batch: their counts add up to the whole batch's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 40, generator=generator) * torch.logspace(-30, 30, 40)
    whole = HISTOGRAM.partial(x)  # a stack of three outputs: one row of counts each
    for k in range(3):
        single = HISTOGRAM.partial(x[k : k + 1])
        slices = np.stack([HISTOGRAM.partial(x[k : k + 1, rows]).numpy() for rows in (slice(0, 3), slice(3, 10))],
                          axis=1)
        assert whole[k].tolist() == single[0].tolist() == HISTOGRAM.merge(slices)[0].tolist()


def test_run_histogram_counts_every_output_of_every_layer() -> None:
    config = load_config(CONFIGS / "relu-xavier.yaml", ["model.depth=12"])
    result = initlab.run(config)
    histogram = result.histogram
    assert histogram is not None and list(histogram.columns) == ["layer", "site", "bin_low", "bin_high", "count"]
    assert set(histogram["site"]) == {"post"}
    # The block outputs again, by a plain script with the same seed (tests/test_reference.py's route).
    torch.manual_seed(config.seed)
    layers = nn.ModuleList([nn.Linear(256, 256, bias=False) for _ in range(12)])
    with torch.no_grad():
        for layer in layers:
            nn.init.xavier_uniform_(layer.weight)
        x = torch.randn(16, 256)
        for i, layer in enumerate(layers):
            x = torch.relu(layer(x))
            counts = np.bincount(expected_bins(x.numpy().ravel()), minlength=HISTOGRAM_BINS)
            rows = histogram[histogram["layer"] == i]
            low, _ = histogram_edges()
            bins = [0 if b == 0 else int(np.flatnonzero(low == b)[0]) for b in rows["bin_low"]]
            assert rows["count"].tolist() == counts[bins].tolist()
            assert rows["count"].sum() == 16 * 256  # nothing outside the kept bins
    # The statistic stays out of the per-layer table and the tidy records: layers.csv is unchanged.
    assert not any("hist" in c for c in result.layers.columns)
    assert "histogram" not in set(result.records["stat"])


def test_non_finite_outputs_have_their_own_bin() -> None:
    result = initlab.run(load_config(CONFIGS / "linear-normal.yaml", ["model.depth=40"]))
    histogram = result.histogram
    assert histogram is not None
    last = histogram[histogram["layer"] == 39]
    assert last["bin_low"].isna().iloc[-1] and last["count"].iloc[-1] == 16 * 256
    assert pd.isna(last["bin_high"].iloc[-1]) and last["count"].iloc[:-1].sum() == 0


def _counts_numpy(flat: torch.Tensor) -> torch.Tensor:
    """An independent route to the bin counts: numpy's bit operations on the float32 exponent field."""
    codes = np.right_shift(np.bitwise_and(flat.numpy().view(np.int32), 0x7FFFFFFF), 23)
    return torch.from_numpy(np.concatenate([np.bincount(row, minlength=256) for row in codes]).astype(np.float64))


def test_the_torch_kernels_count_as_numpy_does() -> None:
    from initlab.statistics import _counts

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 300, generator=generator) * torch.logspace(-40, 38, 300)
    x[0, :5] = torch.tensor([0.0, float("inf"), float("nan"), -float("inf"), 1e-45])
    assert _counts(x).tolist() == _counts_numpy(x).tolist()
    assert _counts_numpy(x).reshape(4, -1).sum(dim=1).tolist() == [300.0] * 4
