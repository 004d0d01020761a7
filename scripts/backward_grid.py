"""Check the backward verdict on a grid of schemes x activations x depths x widths x seeds.

Every run's backward verdict is scored against an **independent** expectation: the
mean-field prediction's end-to-end change D of the gradient (decades, the predicted rms at
block 0 over the upstream's, from the chi_l of :mod:`initlab.gradient_theory`), judged with
fixed thresholds and no tail or trend test:

- the prediction overflows, or D >= +1: explosion; D <= -1: vanishing;
- |D| <= log10(1.5): stable;
- in between: the ambiguous band, counted, not scored;
- no prediction (theory not applicable): not scored.

It also counts the cells whose seeds disagree. Counts are split by depth/width < 1 (where the
infinite-width expectation should hold) and >= 1.

    .venv/bin/python scripts/backward_grid.py --seeds 3
    .venv/bin/python scripts/backward_grid.py --list      # also every scored disagreement
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections import Counter
from typing import Any

import initlab
from initlab.config import Config

SCHEMES: dict[str, dict[str, Any]] = {
    "normal(sw2=1)": {"scheme": "normal", "std": None},  # std set to 1/sqrt(width)
    "normal(sw2=2.25)": {"scheme": "normal", "std": 1.5},  # x 1/sqrt(width)
    "xavier": {"scheme": "xavier_uniform"},
    "xavier(auto)": {"scheme": "xavier_uniform", "gain": "auto"},
    "kaiming": {"scheme": "kaiming_normal"},
    "orthogonal(auto)": {"scheme": "orthogonal", "gain": "auto"},
    "lecun": {"scheme": "lecun_normal"},
}
ACTIVATIONS = ["linear", "tanh", "relu", "gelu", "selu", "sigmoid"]


def scheme_for(name: str, width: int) -> dict[str, Any]:
    scheme = dict(SCHEMES[name])
    if scheme["scheme"] == "normal":
        scheme["std"] = (scheme["std"] or 1.0) / math.sqrt(width)
    return scheme


def expectation(theory: list[float] | None) -> str | None:
    """The regime the predicted gradient's end-to-end change alone implies (None: ambiguous or no theory)."""
    if not theory or any(not math.isfinite(v) for v in theory):
        return "explosion" if theory else None
    change = math.log10(theory[0] / theory[-1]) if theory[0] > 0 else -math.inf
    if change >= 1:
        return "explosion"
    if change <= -1:
        return "vanishing"
    return "stable" if abs(change) <= math.log10(1.5) else "ambiguous"


def run_cell(scheme: str, activation: str, depth: int, width: int, seeds: int) -> dict[str, Any]:
    regimes, expected = [], None
    for seed in range(1, seeds + 1):
        config = Config.model_validate({
            "name": "grid", "seed": seed, "model": {"depth": depth, "width": width, "activation": activation},
            "init": scheme_for(scheme, width), "data": {"batch_size": 16}})
        result = initlab.run(config)
        assert result.backward is not None
        regimes.append(result.backward.regime)
        theory = result.layers["theory_grad_std"].tolist()
        expected = None if all(math.isnan(v) for v in theory) else expectation(theory)
    return {"scheme": scheme, "activation": activation, "depth": depth, "width": width, "regimes": regimes,
            "expected": expected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--depths", default="10,50,100")
    parser.add_argument("--widths", default="64,256")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    cells = [run_cell(s, a, d, w, args.seeds)
             for s, a, d, w in itertools.product(SCHEMES, ACTIVATIONS, depths, widths)]
    report(cells)
    if args.list:
        for c in cells:
            wrong = [r for r in c["regimes"] if c["expected"] not in (None, "ambiguous") and r != c["expected"]]
            if wrong or len(set(c["regimes"])) > 1:
                print(f"  {c['scheme']} {c['activation']} depth {c['depth']} width {c['width']}: "
                      f"seeds {c['regimes']}, expected {c['expected']}")


def report(cells: list[dict[str, Any]]) -> None:
    for label, chosen in [("d/w < 1", [c for c in cells if c["depth"] < c["width"]]),
                          ("d/w >= 1", [c for c in cells if c["depth"] >= c["width"]])]:
        scored = [c for c in chosen if c["expected"] not in (None, "ambiguous")]
        runs = [(r, c["expected"]) for c in scored for r in c["regimes"]]
        split = sum(len(set(c["regimes"])) > 1 for c in chosen)
        print(f"{label}: {len(chosen)} cells, {len(scored)} scored "
              f"({sum(c['expected'] == 'ambiguous' for c in chosen)} ambiguous, "
              f"{sum(c['expected'] is None for c in chosen)} without theory); "
              f"single-seed verdicts != expectation: {sum(r != e for r, e in runs)} of {len(runs)}; "
              f"cells whose seeds disagree: {split}")
        print("   expected -> measured:", dict(Counter((e, r) for r, e in runs)))


if __name__ == "__main__":
    main()
