"""The frozen pydantic base every config model derives from, tagged registries, and how a
wrong name is phrased (one function, for keys, schemes, activations and every other choice)."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic_core import PydanticCustomError

#: The largest magnitude a config float may have. Values reach torch as float32 scalars
#: (a uniform range, a fill value, an activation's parameter) and products of them (a
#: gain times a bound), which overflow near 3.4e38; no study needs more than this.
LIMIT = 1e38

#: A config float: a number, an integer included, never text ('1_000', '0.5') or a boolean.
#: pydantic's lax float would parse text, breaking the one number rule of :mod:`initlab.yamlfile`.
Float = Annotated[float, Field(strict=True)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]


def suggest(given: str, valid: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(given, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(kind: str, given: object, valid: Iterable[str]) -> str:
    """``unknown scheme 'xavir'; did you mean 'xavier'? valid: ...``: how every wrong name reads."""
    names = sorted(set(valid))
    return f"unknown {kind} {given!r}{suggest(str(given), names) or ';'} valid: {', '.join(names)}"


def custom_error(kind: str, message: str, **context: str) -> PydanticCustomError:
    """A validation error whose ``message`` is kept literal, user text and braces included.

    Pydantic replaces ``{name}`` in a message with the context's values, one key after
    another, and never un-escapes ``{{``; so the message travels as the context's last
    value, substituted last, and nothing in it is read as a placeholder.
    """
    return PydanticCustomError(kind, "{message}", {**context, "message": message})


def unknown_choice(kind: str, given: object, valid: Iterable[str], key: str) -> PydanticCustomError:
    """A validation error for a name that is not one of ``valid``.

    ``key`` is the mapping key that holds the name, so reports can point at its line.
    """
    return custom_error("unknown_choice", unknown(kind, given, valid), key=key)


@dataclass(frozen=True, eq=False, repr=False)
class Choice:
    """A registry of models told apart by one key (``scheme``, ``name``, ``distribution``).

    Used as the before-validator of their discriminated union: it accepts a bare name or
    a mapping, resolves aliases, fills in ``default`` when the key is absent, and rejects
    an unknown name listing the valid ones, aliases included.
    """

    kind: str
    tag: str
    registry: Mapping[str, type[BaseModel]]
    aliases: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    def __repr__(self) -> str:  # pydantic titles errors with it
        return f"{self.kind} name"

    def names(self) -> list[str]:
        """Every name a user may write: registered names and aliases."""
        return sorted({*self.registry, *self.aliases})

    def model(self, value: Any) -> type[BaseModel] | None:
        """The model a bare name or a mapping selects, or None when it selects none."""
        if isinstance(value, dict):
            value = value.get(self.tag, self.default)
        return self.registry.get(self.aliases.get(value, value)) if isinstance(value, str) else None

    def __call__(self, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if isinstance(value, str):
            value = {self.tag: value}
        if not isinstance(value, dict):
            raise custom_error("value_error", f"expected a {self.kind} name, or a mapping with a {self.tag!r} key")
        if self.tag not in value and self.default is None:
            message = f"no {self.tag!r}: name the {self.kind}, one of: {', '.join(self.names())}"
            raise custom_error("conflict", message)
        if self.tag in value and not isinstance(value[self.tag], str):
            message = f"a {self.kind} is a name, or a mapping with a {self.tag!r} key; got {value[self.tag]!r}"
            raise custom_error("conflict", message, key=self.tag)
        cls = self.model(value)
        if cls is None:
            raise unknown_choice(self.kind, value[self.tag], self.names(), self.tag)
        return {**value, self.tag: cls.model_fields[self.tag].default}


@functools.cache
def _adapter(target: Any) -> TypeAdapter[Any]:
    return TypeAdapter(target)


def validate_as(target: Any, value: Any) -> Any:
    """Validate ``value`` against an annotated type (a tagged registry), adapter built once."""
    return _adapter(target).validate_python(value)


class Frozen(BaseModel):
    """Immutable; unknown keys are errors (pydantic's ``extra="forbid"``, reported with the
    other errors of the same mapping); floats are finite and within ±:data:`LIMIT`."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, float) and abs(value) > LIMIT:
            raise ValueError(f"must lie within ±{LIMIT:g}: larger values overflow float32 in torch")
        return value
