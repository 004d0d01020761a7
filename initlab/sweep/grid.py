"""Grid axes of a sweep: any config field swept by its dotted path (``--grid init.gain=0.8:2.4:0.1``).

An :class:`Axis` is a config path (the same paths as ``initlab run``'s overrides) and its values,
each a typed value as the config's YAML reads it (:func:`initlab.config.parse_value`). A range
``start:stop:step`` is counted in decimal arithmetic, so ``0.8:2.4:0.1`` gives 0.8, 0.9, ..., 2.4
as they are written (never 0.30000000000000004), stop included when a whole number of steps
reaches it within rounding. A cell's config is the base config's dump with the axes' values set
through :func:`initlab.config.patched`, validated as a config file is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from initlab.config import ConfigPath, Override, parse_path, parse_value
from initlab.errors import InitlabError
from initlab.limits import MAX_RUNS
from initlab.sweep.specs import no_repeats

#: Fields another option of compare sweeps: a grid axis over them is refused, naming the option.
OWNED: dict[ConfigPath, str] = {("model", "depth"): "--depths", ("model", "width"): "--widths", ("seed",): "--seeds",
         ("model", "activation"): "--activations", ("model", "activation", "name"): "--activations",
         ("init", "scheme"): "--schemes", ("init",): "--schemes"}

#: How close to a whole number of steps ``stop`` must be to be included (in steps).
_ROUNDING = Decimal("1e-9")


@dataclass(frozen=True)
class Axis:
    """One swept config field: its path and its values, in the order given."""

    path: ConfigPath
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        """The dotted path, which names the axis's column in the tables (``init.gain``)."""
        return ".".join(str(part) for part in self.path)

    def override(self, value: Any) -> Override:
        """``value`` of this axis as a typed override; errors name ``--grid``."""
        return Override(self.path, value, f"--grid {self.name}={shown_value(value)}", shown_value(value))

    @property
    def numeric(self) -> bool:
        """Whether every value is a number (not a boolean): the axis can be drawn as a coordinate."""
        return all(_is_number(v) for v in self.values)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.name, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Axis:
        return cls(parse_path(str(data["path"]), "plan.json grid"), tuple(data["values"]))


def shown_value(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def parse_grid(text: str, option: str = "--grid", max_values: int = MAX_RUNS) -> Axis:
    """``PATH=VALUES``: a comma list (``16,256``, ``tanh,relu``) or a range ``start:stop:step`` (of at most
    ``max_values``: the sweep's ``--max-runs``). Numbers are ints only where all of them are whole
    (``0,0.1`` is 0.0 and 0.1), so a value reads the same in every table and figure."""
    source = f"{option} {text!r}"
    dotted, sep, values = text.partition("=")
    if not sep or not dotted.strip() or not values.strip():
        raise InitlabError(f"{source}: expected PATH=VALUES, e.g. init.gain=0.8:2.4:0.1 or data.batch_size=16,256")
    path = parse_path(dotted.strip(), source)
    if path in OWNED:
        raise InitlabError(f"{source}: {'.'.join(map(str, path))} is swept by {OWNED[path]}; use that option")
    if any(bracket in values for bracket in "[]{}"):
        raise InitlabError(f"{source}: each value is one number, word or boolean, not a list or mapping")
    parts = [part.strip() for part in values.split(",")]
    if len(parts) == 1 and parts[0].count(":") == 2:
        return Axis(path, _range(parts[0], source, max_values))
    if any(not part for part in parts):
        raise InitlabError(f"{source}: empty value (a stray comma?)")
    parsed = [parse_value(part) for part in parts]
    if all(_is_number(v) for v in parsed) and any(isinstance(v, float) for v in parsed):
        parsed = [float(v) for v in parsed]
    no_repeats(parsed, source)
    return Axis(path, tuple(parsed))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range(text: str, source: str, max_values: int) -> tuple[int | float, ...]:
    """``start:stop:step`` counted exactly in decimal: ints where all three are whole, else floats."""
    try:
        start, stop, step = (Decimal(part.strip()) for part in text.split(":"))
    except InvalidOperation:
        raise InitlabError(f"{source}: a range is start:stop:step of numbers, e.g. 0.8:2.4:0.1") from None
    if not all(d.is_finite() for d in (start, stop, step)):
        raise InitlabError(f"{source}: a range's start, stop and step are finite numbers")
    if step <= 0 or stop < start:
        raise InitlabError(f"{source}: a range needs step > 0 and start <= stop, e.g. 0.8:2.4:0.1")
    steps = int((stop - start) / step + _ROUNDING)
    if steps + 1 > max_values:
        count = f"{steps + 1:,}" if steps < 10**12 else f"about {float(steps + 1):.3g}"  # never 300 digits
        raise InitlabError(f"{source}: {count} values, more than --max-runs {max_values:,}")
    whole = all(isinstance(d.as_tuple().exponent, int) and int(d.as_tuple().exponent) >= 0 for d in (start, step))
    values = [start + k * step for k in range(steps + 1)]
    return tuple(int(v) if whole else float(v) for v in values)


def check_axes(axes: Sequence[Axis]) -> None:
    """Refuse two axes over one field, or over a field and a field inside it."""
    for i, axis in enumerate(axes):
        for other in axes[:i]:
            shorter = min(len(axis.path), len(other.path))
            if axis.path[:shorter] == other.path[:shorter]:
                raise InitlabError(f"--grid {axis.name} and --grid {other.name}: one field swept twice; give one")
