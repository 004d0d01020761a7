"""What ``initlab compare`` is given on its command line, parsed into typed values: scheme and
activation specs (``name[:key=value,...],...``) and lists of integers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from initlab.activations import Activation
from initlab.config import Override, parse_cli_choice, parse_value
from initlab.errors import InitlabError
from initlab.schemes import Scheme
from initlab.schemes import names as scheme_names


def split_specs(text: str, option: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Split ``name:key=value,key=value,name2`` into ``[(name, [(key, value_text), ...]), ...]``.

    Commas separate both specs and a spec's arguments, so a fragment with ``=`` and no
    ``:`` continues the previous spec: ``normal:std=1,mean=0.5,xavier`` is two specs.
    """
    specs: list[tuple[str, list[tuple[str, str]]]] = []
    for fragment in (part.strip() for part in text.split(",")):
        if not fragment:
            raise InitlabError(f"{option} {text!r}: empty name (a stray comma?)")
        name, colon, rest = fragment.partition(":")
        if not colon and "=" in fragment:  # an argument of the spec before it
            if not specs:
                raise InitlabError(f"{option} {text!r}: {fragment!r} needs a name first, e.g. normal:std=1")
            specs[-1][1].append(_key_value(fragment, option, text))
            continue
        if not name.strip():
            raise InitlabError(f"{option} {text!r}: {fragment!r} has no name before ':'")
        specs.append((name.strip(), [_key_value(rest, option, text)] if colon else []))
    return specs


def _key_value(fragment: str, option: str, text: str) -> tuple[str, str]:
    key, sep, value = fragment.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise InitlabError(f"{option} {text!r}: expected key=value after ':', got {fragment!r}")
    return key.strip(), value.strip()


def _spec_dicts(text: str, option: str, tag: str) -> list[dict[str, Any]]:
    out = []
    for name, args in split_specs(text, option):
        keys = [key for key, _ in args]
        duplicate = next((key for key in keys if keys.count(key) > 1), None)
        if duplicate is not None:
            raise InitlabError(f"{option} {text!r}: {duplicate!r} given twice for {name!r}")
        out.append({tag: name, **{key: parse_value(value) for key, value in args}})
    return out


def parse_schemes(text: str, option: str = "--schemes") -> list[Scheme]:
    """Weight schemes from ``name[:key=value,...],...`` (config names, aliases and arguments)."""
    return [parse_cli_choice("scheme", spec, option) for spec in _spec_dicts(text, option, "scheme")]


def parse_activations(text: str, option: str = "--activations") -> list[Activation]:
    """Activations from ``name[:key=value,...],...``, e.g. ``tanh,leaky_relu:negative_slope=0.2``."""
    return [parse_cli_choice("activation", spec, option) for spec in _spec_dicts(text, option, "name")]


def activation_overrides(text: str, option: str = "--activation") -> list[Override]:
    """Config overrides that set ``model.activation`` to one spec (arguments kept as written)."""
    specs = split_specs(text, option)
    if len(specs) != 1:
        raise InitlabError(f"{option} {text!r}: expected one activation")
    name, args = specs[0]
    source = f"{option} {text!r}"
    return [Override(("model", "activation", "name"), name, source, name)] + [
        Override(("model", "activation", key), parse_value(value), source, value) for key, value in args
    ]


_T = TypeVar("_T")


def base_or_axis(flag: _T | None, axis: str | None, name: str) -> _T | None:
    """A base flag, refused next to the axis that replaces it (--depth with --depths)."""
    if flag is not None and axis is not None:
        raise InitlabError(f"--{name} and --{name}s: give one (--{name}s sweeps, --{name} sets the base network)")
    return flag


def required_schemes(schemes: str | None) -> str:
    if schemes is None:
        raise InitlabError(f"--schemes is required, e.g. --schemes xavier,kaiming; valid: {', '.join(scheme_names())}")
    return schemes


def parse_ints(text: str, option: str, minimum: int | None = 1) -> list[int]:
    """Comma-separated integers (each ``>= minimum`` unless it is None), without repeats."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        bound = f" >= {minimum}" if minimum is not None else ""
        raise InitlabError(f"{option} {text!r}: expected comma-separated integers{bound}, e.g. 10,50,100") from None
    low = next((v for v in values if minimum is not None and v < minimum), None)
    if low is not None:
        raise InitlabError(f"{option} {text!r}: {low} is below {minimum}")
    no_repeats(values, option)
    return values


def no_repeats(values: Iterable[Any], option: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise InitlabError(f"{option}: {value} given twice")
        seen.add(value)
