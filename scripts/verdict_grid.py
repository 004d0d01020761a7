"""Measure the verdict on a grid of schemes x activations x depths x widths x seeds.

Runs the grid with :func:`initlab.sweep.run_sweep` into a compare results folder (the cache:
``--folder``; an interrupted run resumes, a finished one is only re-judged), then re-judges
every seed and every cell's median trace with the current rules and with those of
``--before`` (a git revision's ``initlab/regimes.py``), and compares both with an
**independent** expectation: the mean-field theory's predicted end-to-end change D (decades,
the last block's predicted std over the input's; plus Hanin & Rolnick's log-std drift for
ReLU nets), judged with fixed thresholds and no tail or trend test:

- the prediction overflows, or D >= +1: explosion; D <= -1: vanishing;
- |D| <= log10(1.5): stable (saturated where the predicted saturated fraction over the last
  half is at least 0.5);
- 0.18 < |D| < 1: the ambiguous band, where either the regime or stable is defensible: not
  scored, counted;
- theory not applicable: not scored.

Counts are split by depth/width < 1 (where the theory's expectation should hold) and >= 1
(where finite width, not the init, drives the outcome and the theory omits it).

    .venv/bin/python scripts/verdict_grid.py --seeds 5          # the grid, 4 depths x 2 widths
    .venv/bin/python scripts/verdict_grid.py --list             # also every cell, not only the flagged ones
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch

from initlab import sweep
from initlab.config import VerdictConfig
from initlab.regimes import classify
from initlab.runner import trace_of

SCHEMES = ("default,normal:std=1,normal:std=0.0625,xavier,xavier:gain=auto,kaiming,orthogonal,orthogonal:gain=auto,"
           "lecun,trunc_normal:std=0.0625")
ACTIVATIONS = "linear,tanh,sigmoid,relu,selu,gelu,silu"
DEPTHS, WIDTHS = [3, 10, 100, 500], [32, 256]
#: |pre-activation| beyond which tanh/sigmoid outputs are within 0.03 of their bounds (the probe's margin).
_EDGE = {"tanh": math.atanh(0.97), "sigmoid": math.log(0.985 / 0.015)}
AMBIGUOUS = math.log10(1.5)


def run_grid(root: Path, seeds: int) -> tuple[sweep.Plan, dict[str, sweep.Outcome]]:
    """Run the grid into a compare results folder under ``root``, resuming the one there if any;
    return the plan and every finished outcome (cells are saved one by one, no aggregates)."""
    from initlab.model import ConstructionDraws

    found = sorted(root.glob("*/*/plan.json"))
    if found:
        folder, plan = sweep.SweepFolder.open(found[-1].parent, sys.argv)
    else:
        base = sweep.base_config(None)
        plan = sweep.plan_sweep(base, sweep.parse_schemes(SCHEMES), sweep.parse_activations(ACTIVATIONS),
                                  DEPTHS, WIDTHS, seeds)
        folder = sweep.SweepFolder.create(root, plan, sys.argv)
    done, draws = folder.finished(), ConstructionDraws()
    todo = [cell for cell in plan.runs if cell.cell not in done]
    with folder.lock():
        for n, cell in enumerate(todo, 1):
            outcome = sweep.run_cell(cell, draws)
            if outcome.error is None:
                folder.save(outcome)
            if n % 100 == 0:
                print(f"{n}/{len(todo)} runs", flush=True)
    return plan, folder.load(plan)


def old_module(revision: str) -> ModuleType:
    """``initlab/regimes.py`` as it was at ``revision``, importable beside the current one."""
    text = subprocess.run(["git", "show", f"{revision}:initlab/regimes.py"], capture_output=True, text=True,
                          check=True).stdout
    path = Path(f"/tmp/regimes_{revision}.py")
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"regimes_{revision}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def expected(layers: Any, summary: dict[str, Any]) -> tuple[str, float | None]:
    """The independent expectation and the predicted end-to-end decades D (see the module docstring)."""
    theory = summary["theory"]
    if not theory["applicable"]:
        return "n/a", None
    predicted = layers["theory_std"].to_numpy(dtype=float)
    if not np.isfinite(predicted[-1]):
        return "explosion", math.inf
    if not predicted[-1] > 0:  # the prediction underflows
        return "vanishing", -math.inf
    # Hanin & Rolnick's drift (nats over the depth -> decades) is for Gaussian weights: orthogonal
    # ones preserve the norm of a linear net exactly, so it gets none (ReLU's mask still drifts).
    exact = str(summary.get("scheme") or "").startswith("orthogonal") and summary.get("activation") == "linear"
    drift = 0.0 if exact else (theory.get("log_std_drift") or 0.0) / math.log(10)
    decades = math.log10(predicted[-1] / summary["input_std"]) + drift
    if abs(decades) >= 1:
        return ("explosion" if decades > 0 else "vanishing"), decades
    if abs(decades) > AMBIGUOUS:
        return "ambiguous", decades
    edge = _EDGE.get(str(summary.get("activation") or ""))
    pre = layers["theory_pre_std"].to_numpy(dtype=float)[len(predicted) // 2:]
    if edge is not None and np.mean([math.erfc(edge / (math.sqrt(2) * p)) for p in pre]) >= 0.5:
        return "saturated", decades
    return "stable", decades


def judge_cell(key: tuple[Any, ...], tables: list[Any], summaries: list[dict[str, Any]], old: ModuleType,
               th: VerdictConfig) -> dict[str, Any]:
    """Per-seed and median-trace regimes, now and before, for one cell's seeds (their layers.csv
    tables and summaries), and the cell's expectation."""
    width = key[3]
    traces = [trace_of(t, s["input_std"], width) for t, s in zip(tables, summaries, strict=True)]
    ids = dict(zip(sweep.CELL_KEYS, key, strict=True))
    tidy = pd.concat([t.assign(**ids, seed=n) for n, t in enumerate(tables)], ignore_index=True)
    median = sweep.median_traces(tidy)
    verdict = sweep.median_verdict(median, summaries, width, th)
    old_th = VerdictConfig(settle=0.05)
    return {
        "seeds": [classify(t, th, s["theory"]).regime for t, s in zip(traces, summaries, strict=True)],
        "old_seeds": [old.classify(t, old_th).regime for t in traces],
        "median": verdict.regime, "reason": verdict.reason,
        "old_median": old.classify(sweep.cell_trace(median, summaries, width), old_th).regime,
        "ratios": [s["ratio"] for s in summaries if s.get("ratio") is not None],
        "want": expected(tables[0], {**summaries[0], "scheme": key[0], "activation": key[1]}),
    }


def report(cells: dict[tuple[Any, ...], tuple[list[Any], list[dict[str, Any]]]], old: ModuleType,
           listing: bool) -> None:
    """Print the flagged cells (every cell with ``listing``) and the counts by depth/width."""
    counts: dict[str, Counter[str]] = {"d/w < 1": Counter(), "d/w >= 1": Counter()}
    for key, (tables, summaries) in cells.items():
        cell = judge_cell(key, tables, summaries, old, VerdictConfig())
        want, decades = cell["want"]
        c = counts["d/w < 1" if key[2] / key[3] < 1 else "d/w >= 1"]
        scored = want not in ("n/a", "ambiguous")
        c["cells"] += 1
        c["scored"] += scored
        c["ambiguous band"] += want == "ambiguous"
        c["n/a"] += want == "n/a"
        wrong = scored and cell["median"] != want
        c["median != expected"] += wrong
        c["old median != expected"] += scored and cell["old_median"] != want
        c["seed verdicts != expected"] += sum(r != want for r in cell["seeds"]) if scored else 0
        c["old seed verdicts != expected"] += sum(r != want for r in cell["old_seeds"]) if scored else 0
        c["seed-disagreeing cells"] += len(set(cell["seeds"])) > 1
        c["old seed-disagreeing cells"] += len(set(cell["old_seeds"])) > 1
        flag = wrong or len(set(cell["seeds"])) > 1
        if flag or listing:
            ratios = cell["ratios"]
            spread = f"{min(ratios):.2g}..{max(ratios):.2g}" if ratios else "-"
            d = "-" if decades is None else f"{decades:+.2f}"
            print(f"{'!!' if wrong else '~ ' if flag else '  '} {key[0]:<24} {key[1]:<8} d{key[2]:<4} w{key[3]:<4} "
                  f"expect {want:<9} (D {d}) median {cell['median']:<9} seeds {dict(Counter(cell['seeds']))} "
                  f"before {dict(Counter(cell['old_seeds']))} ratio {spread} | {cell['reason']}")
    for name, c in counts.items():
        print(name, dict(c))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="root of the sweep's results folder (the cache)")
    parser.add_argument("--before", default="025f537", help="git revision whose regimes.py gives the before counts")
    parser.add_argument("--list", action="store_true", help="print every cell, not only the flagged ones")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = args.folder or Path(f"/tmp/verdict_grid/seeds_{args.seeds}")
    plan, outcomes = run_grid(folder, args.seeds)
    print(f"{len(outcomes)} runs")
    cells: dict[tuple[Any, ...], tuple[list[Any], list[dict[str, Any]]]] = {}
    for run in plan.runs:
        if run.cell in outcomes:
            tables, summaries = cells.setdefault(run.position, ([], []))
            tables.append(outcomes[run.cell].layers())
            summaries.append(outcomes[run.cell].summary or {})
    report(cells, old_module(args.before), args.list)


if __name__ == "__main__":
    main()
