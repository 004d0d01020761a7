"""Measure the verdict on a grid of schemes x activations x depths x widths x seeds.

Runs every study in-process with :func:`initlab.runner.run`, caches the per-layer traces
(``--cache``, a pickle; re-used unless ``--fresh``), re-judges them with the current
:func:`initlab.regimes.classify`, and prints the cells whose verdict disagrees with the
expectation that mean-field theory and common sense give (see ``expect``), the per-seed
flips, and the counts.

    .venv/bin/python scripts/verdict_grid.py                # the 420-cell grid, 5 seeds
    .venv/bin/python scripts/verdict_grid.py --tricky       # the issue's cases, 20 seeds
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import pickle
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from initlab import compare
from initlab.config import Config, VerdictConfig
from initlab.gain import gaussian_moments
from initlab.regimes import Trace, Verdict, classify
from initlab.runner import run, trace_of

SCHEMES = ("default,normal:std=1,normal:std=0.0625,xavier,xavier:gain=auto,kaiming,orthogonal,orthogonal:gain=auto,"
           "lecun,trunc_normal:std=0.0625")
ACTIVATIONS = "linear,tanh,sigmoid,relu,selu,gelu,silu"
#: (schemes, activations, depths, widths): the cases the issue lists, for 20 seeds.
TRICKY = [
    ("kaiming", "selu", [100, 500], [32]),
    ("xavier:gain=auto", "gelu", [100], [32]),
    ("xavier,normal:std=0.0625", "tanh", [10, 100, 500], [32, 256]),
    ("kaiming", "relu", [100, 500], [32, 256]),
    ("xavier:gain=auto,orthogonal:gain=auto", "selu", [100], [256]),
]


def collect(schemes: str, activations: str, depths: list[int], widths: list[int], seeds: int) -> list[dict[str, Any]]:
    """Run every study of the sweep and keep what the verdict reads."""
    base = compare.base_config(None)
    plan = compare.plan_sweep(base, compare.parse_schemes(schemes), compare.parse_activations(activations),
                              depths, widths, seeds)
    rows = []
    for cell in plan.runs:
        if cell.config is None:
            continue
        result = run(cell.config)
        rows.append({"cell": cell.position, "seed": cell.seed, "config": cell.config,
                     "layers": result.layers, "input_std": result.meta["input_std"]})
    return rows


def load(path: Path, fresh: bool, tricky: bool, seeds: int) -> list[dict[str, Any]]:
    if path.exists() and not fresh:
        rows: list[dict[str, Any]] = pickle.loads(path.read_bytes())
        return rows
    tick = time.perf_counter()
    rows = []
    if tricky:
        for schemes, acts, depths, widths in TRICKY:
            rows += collect(schemes, acts, depths, widths, seeds)
    else:
        rows = collect(SCHEMES, ACTIVATIONS, [10, 100, 500], [32, 256], seeds)
    print(f"ran {len(rows)} studies in {time.perf_counter() - tick:.0f} s")
    path.write_bytes(pickle.dumps(rows))
    return rows


# ---------------------------------------------------------------- expectations


#: |pre-activation| beyond which tanh/sigmoid outputs are within 0.03 of their bounds (the probe's margin).
_EDGE = {"tanh": math.atanh(0.97), "sigmoid": math.log(0.985 / 0.015)}
_RELU_LIKE = {"relu", "leaky_relu"}


def theory_trace(config: Config, layers: Any, input_std: float) -> tuple[list[float | None], list[float], list[float]]:
    """Mean-field post std, non-finite marks and expected saturation per layer, from the measured sigma_w^2.

    q_0 = sigma_w^2 E[x^2], q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] (Poole et al. 2016); the
    weights of every scheme here are zero-mean, so sigma_w^2 = weight_std^2 * fan_in.
    """
    act, width = config.model.activation, config.model.width
    sw2 = layers["weight_std"].to_numpy() ** 2 * width
    q, std, bad, sat = sw2[0] * input_std**2, [], [], []
    for layer in range(len(sw2)):
        if not q < 1e70:  # float32 overflows around std 1e38
            std.append(None), bad.append(1.0), sat.append(1.0)
            continue
        mean, second = gaussian_moments(act, q)
        std.append(math.sqrt(max(second - mean * mean, 0.0)))
        bad.append(0.0)
        edge = _EDGE.get(act.name)
        sat.append(math.erfc(edge / math.sqrt(2 * q)) if edge and q > 0 else 0.0)
        q = sw2[min(layer + 1, len(sw2) - 1)] * second
    return std, bad, sat


def expected(rows: list[dict[str, Any]], thresholds: VerdictConfig) -> tuple[str, str]:
    """The regime theory and common sense give for a cell: the verdict of its noise-free mean-field trace,
    with Hanin & Rolnick's finite-width drift (-5 L/(4 n) in log-std) added for ReLU nets."""
    row = rows[0]
    config, input_std = row["config"], float(np.median([r["input_std"] for r in rows]))
    std, bad, sat = theory_trace(config, row["layers"], input_std)
    depth, width = config.model.depth, config.model.width
    note = ""
    if config.model.activation.name in _RELU_LIKE:
        drift = [math.exp(-5 * (i + 1) / (4 * width)) for i in range(depth)]
        std = [None if s is None else s * d for s, d in zip(std, drift, strict=True)]
        note = f"HR drift x{drift[-1]:.2g}"
    verdict = classify(Trace(std, bad, input_std, saturated=sat), thresholds)
    regime = verdict.regime
    if depth / width >= thresholds.finite_width and abs(verdict.decades or 0) < thresholds.settled_orders:
        regime = "either"  # finite width drives it: only consistency across seeds is asked
    return regime, f"theory x{verdict.ratio if verdict.ratio is not None else float('nan'):.3g} {note}"


# ---------------------------------------------------------------- the report


def old_classify() -> Any:
    """The verdict before this change (git HEAD's regimes.py), for the before/after counts."""
    text = subprocess.run(["git", "show", "dfd8b0b:initlab/regimes.py"], capture_output=True, text=True,
                          check=True).stdout
    path = Path("/tmp/old_regimes.py")
    path.write_text(text.replace("from initlab.config import VerdictConfig", "VerdictConfig = object"))
    spec = importlib.util.spec_from_file_location("old_regimes", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_regimes"] = module
    spec.loader.exec_module(module)
    old = SimpleNamespace(explode_ratio=2.0, vanish_ratio=0.5, trend_t=4.0)
    return lambda std, nonfinite: module.classify(std, nonfinite, old).regime


def median_trace(rows: list[dict[str, Any]]) -> Trace:
    """The compare cell's median trace: per-layer median over seeds, a non-finite layer as +inf."""
    stds = []
    for r in rows:
        layers = r["layers"]
        bad = (layers["nonfinite"] > 0) | (layers["pre_nonfinite"] > 0) | layers["std"].isna()
        stds.append(np.where(bad, np.inf, layers["std"].to_numpy()))
    median = np.median(np.array(stds), axis=0)
    finite = np.isfinite(median)
    column = lambda name: (np.median([r["layers"][name].to_numpy() for r in rows], axis=0).tolist()  # noqa: E731
                           if name in rows[0]["layers"] else [])
    return Trace([float(s) if f else None for s, f in zip(median, finite, strict=True)],
                 (~finite).astype(float).tolist(), float(np.median([r["input_std"] for r in rows])),
                 saturated=column("saturated"), dead=column("dead"), width=rows[0]["config"].model.width)


def report(rows: list[dict[str, Any]], thresholds: VerdictConfig, verbose: bool) -> None:
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    before = old_classify()
    counts: Counter[str] = Counter()
    for key, group in cells.items():
        want, why = expected(group, thresholds)
        seeds = [classify(trace_of(r["layers"], r["input_std"], r["config"].model.width), thresholds) for r in group]
        median: Verdict = classify(median_trace(group), thresholds)
        old_seeds = [before([None if math.isnan(s) else s for s in r["layers"]["std"]], r["layers"]["nonfinite"])
                     for r in group]
        mine = Counter(v.regime for v in seeds)
        old = Counter(old_seeds)
        counts["cells"] += 1
        wrong = want != "either" and median.regime != want
        counts["median disagrees"] += wrong
        counts["finite-width cells"] += want == "either"
        counts["old majority disagrees"] += want != "either" and old.most_common(1)[0][0] != want
        trace = median_trace(group)
        old_median = before(list(trace.std), list(trace.nonfinite))
        counts["old median disagrees"] += want != "either" and old_median != want
        counts["seeds"] += len(group)
        counts["seed verdicts off"] += 0 if want == "either" else sum(v.regime != want for v in seeds)
        counts["old seed verdicts off"] += 0 if want == "either" else sum(r != want for r in old_seeds)
        counts["seed flips"] += len(mine) > 1
        counts["old seed flips"] += len(old) > 1
        flag = wrong or len(mine) > 1
        if flag or verbose:
            ratios = [v.ratio for v in seeds if v.ratio is not None]
            spread = f"{min(ratios):.2g}..{max(ratios):.2g}" if ratios else "-"
            print(f"{'!!' if wrong else '~ ' if flag else '  '} {key[0]:<28} {key[1]:<8} "
                  f"d{key[2]:<4} w{key[3]:<4} expect {want:<9} median {median.regime:<9} "
                  f"seeds {dict(mine)} old {dict(old)} ratio {spread} {why} | {median.reason}")
    print(dict(counts))


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tricky", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print every cell, not only the disagreements")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds or (20 if args.tricky else 5)
    cache = args.cache or Path(f"/tmp/verdict_grid_{'tricky' if args.tricky else 'grid'}_{seeds}.pkl")
    rows = load(cache, args.fresh, args.tricky, seeds)
    report(rows, VerdictConfig(), args.verbose)


if __name__ == "__main__":
    main()
