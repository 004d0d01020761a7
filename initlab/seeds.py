"""A study over several seeds: every seed's result, the median traces and their verdicts.

``initlab run --seeds N`` and a cell of ``initlab compare`` read a network the same way: the
per-layer median over seeds (:func:`initlab.sweep.median_traces`) and the verdict of that
median trace, forward and backward, with how many seeds' own verdicts agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from initlab import jacobian
from initlab.config import Config
from initlab.errors import InitlabError
from initlab.limits import MAX_STUDY_SEEDS, check_seeds
from initlab.regimes import Verdict
from initlab.runner import Result, run


@dataclass(frozen=True)
class SeedStudy:
    """One study over seeds S..S+N-1: every seed's result, the median trace, its verdict.

    The median traces and bands are :func:`initlab.sweep.median_traces` (a non-finite value
    counts as +inf, so the median goes non-finite where at least half of the seeds do) and
    the verdicts are those of the median traces, as for a cell of ``initlab compare``: the
    forward one of the block-output std, the backward one of the gradient's rms (from the
    last block down), where the backward pass is on.
    """

    runs: tuple[Result, ...]  # one per seed, in seed order
    layers: pd.DataFrame  # tidy: seed, then every seed's layers.csv columns
    # per layer: median, low, high (min/max of the finite stds), seeds, theory_std; with a backward pass also
    # grad_median, grad_low, grad_high (of grad_rms) and theory_grad_rms
    traces: pd.DataFrame
    verdict: Verdict  # of the median trace
    agree: int  # seeds whose own verdict is the median trace's
    backward: Verdict | None = None  # of the median gradient trace; None without a backward pass
    backward_agree: int | None = None  # seeds whose own backward verdict is that one

    @property
    def config(self) -> Config:
        """The first seed's config."""
        return self.runs[0].config

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    @property
    def summary(self) -> dict[str, Any]:
        """The median trace's verdict and figures, the seeds and how many agree (summary.json)."""
        if len(self.runs) == 1:
            return self.runs[0].summary
        backward = None
        if self.backward is not None:
            backward = {**self.backward.as_dict(), "agree": self.backward_agree,
                        "seed_regimes": [r.backward.regime if r.backward else None for r in self.runs]}
        out = {"name": self.config.name, "seeds": self.seeds, **self.verdict.as_dict(), "agree": self.agree,
               "seed_regimes": [r.verdict.regime for r in self.runs], "backward": backward}
        if self.jacobian is not None:  # the prediction is an average over networks: over every seed's inputs
            out["jacobian"] = {**self.jacobian.summary(), **(self.runs[0].jacobian_theory or {})}
        return out

    @property
    def jacobian(self) -> jacobian.Spectrum | None:
        """Every seed's Jacobian spectra together (K rows per seed, in seed order)."""
        spectra = [r.jacobian for r in self.runs if r.jacobian is not None]
        if not spectra:
            return None
        return jacobian.Spectrum(np.concatenate([s.singular_values for s in spectra]),
                                 np.concatenate([s.resolution for s in spectra]))

    @property
    def histogram(self) -> pd.DataFrame | None:
        """Every seed's histogram counts added up (the bins are fixed, so they add exactly)."""
        if any(r.histogram is None for r in self.runs):
            return None
        tables = [r.histogram for r in self.runs if r.histogram is not None]
        counts = pd.concat(tables).groupby(["layer", "site", "bin_low", "bin_high"], sort=False, dropna=False)
        total: pd.DataFrame = counts["count"].sum().reset_index()
        ordered: pd.DataFrame = total.sort_values(["layer", "bin_low"], na_position="last", ignore_index=True)
        return ordered


def run_seeds(config: Config, seeds: int, progress: Callable[[int, int], None] | None = None,
              keep_weights: bool = False) -> SeedStudy:
    """Run ``config`` with seeds ``config.seed`` .. ``config.seed + seeds - 1``; nothing is printed or written.
    ``keep_weights``: every seed's result holds its network's state_dict (``--save-model``)."""
    from initlab.sweep import CELL_KEYS, median_traces, median_verdict

    if not 1 <= seeds <= MAX_STUDY_SEEDS:  # every seed's tables stay in memory until the median
        raise InitlabError(f"--seeds {seeds}: between 1 and {MAX_STUDY_SEEDS:,} for run (compare --seeds writes "
                           "each seed to disk as it goes)")
    check_seeds(config.seed, seeds, "seed/--seeds")  # before any runs: the seed is the only field that changes
    runs = []
    for i in range(seeds):
        runs.append(run(config.model_copy(update={"seed": config.seed + i}), keep_weights=keep_weights))
        if progress is not None:
            progress(i + 1, seeds)
    layers = pd.concat([r.layers.assign(seed=r.config.seed) for r in runs], ignore_index=True)
    layers = layers[["seed", *runs[0].layers.columns]]
    cell = dict(zip(CELL_KEYS, cell_key(config), strict=True))
    traces = median_traces(layers.assign(**cell)).drop(columns=CELL_KEYS)
    summaries = [r.summary for r in runs]
    verdict = median_verdict(traces, summaries, config.model.width, config.verdict)
    agree = sum(r.verdict.regime == verdict.regime for r in runs)
    if config.backward is None:
        return SeedStudy(tuple(runs), layers, traces, verdict, agree)
    backward = median_verdict(traces, summaries, config.model.width, config.verdict, "backward",
                              backward_of=config)
    backward_agree = sum(r.backward is not None and r.backward.regime == backward.regime for r in runs)
    return SeedStudy(tuple(runs), layers, traces, verdict, agree, backward, backward_agree)


def cell_key(config: Config) -> tuple[str, str, int, int]:
    """The study as a cell of a comparison: (scheme, activation, depth, width); the scheme is the config's name."""
    return (config.name, config.model.activation.label(), config.model.depth, config.model.width)
