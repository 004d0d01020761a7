"""Bounds of numeric inputs, so that an out-of-range number is refused up front rather than
crashing deep inside torch. Nothing here imports torch: the CLI uses these in its option
declarations, which ``initlab --help`` builds.
"""

from __future__ import annotations

#: ``torch.Generator.manual_seed`` takes an unsigned 64-bit integer; 2**64 overflows inside torch.
MAX_SEED = 2**64 - 1
#: ``initlab compare`` refuses sweeps of more cell runs than this unless ``--max-runs`` raises it:
#: planning alone holds a resolved config per run (about 50 kB each).
MAX_RUNS = 100_000
#: ``initlab run --seeds`` holds every seed's results in memory (about 100 kB each at the classic size).
MAX_STUDY_SEEDS = 10_000


def check_seeds(first: int, count: int, what: str) -> None:
    """Refuse seeds ``first .. first + count - 1`` that torch cannot take."""
    from initlab.errors import InitlabError

    last = first + count - 1
    if first < 0 or last > MAX_SEED:
        span = f"{first}" if count == 1 else f"{first}..{last}"
        raise InitlabError(f"{what} {span}: outside 0..{MAX_SEED} (2**64-1, what torch.manual_seed takes)")
