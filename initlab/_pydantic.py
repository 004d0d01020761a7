"""The frozen, strict pydantic base every config model derives from, and choice errors."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


def suggest(given: str, valid: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(given, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _escape(message: str) -> str:
    """Pydantic formats custom messages with str.format; keep user text literal."""
    return message.replace("{", "{{").replace("}", "}}")


def unknown_choice(kind: str, given: object, valid: Iterable[str], key: str) -> PydanticCustomError:
    """A validation error for a name that is not registered, listing the valid ones.

    ``key`` is the mapping key that holds the name, so reports can point at its line.
    """
    names = sorted(valid)
    message = f"unknown {kind} {given!r}{suggest(str(given), names) or ';'} valid: {', '.join(names)}"
    return PydanticCustomError("unknown_choice", _escape(message), {"given": str(given), "key": key})


def tagged_choice(
    kind: str, tag: str, base: type[BaseModel], registry: Mapping[str, type[BaseModel]], aliases: Mapping[str, str]
) -> Callable[[Any], Any]:
    """A before-validator for a registry of models tagged by ``tag``.

    It accepts a bare name or a mapping, resolves aliases, and rejects an unknown name
    with the valid ones listed (before pydantic's own, terser, union error).
    """

    def normalise(value: Any) -> Any:
        if isinstance(value, base):
            return value
        if isinstance(value, str):
            value = {tag: value}
        if isinstance(value, dict) and tag in value:
            name = aliases.get(str(value[tag]), value[tag])
            if name not in registry:
                raise unknown_choice(kind, value[tag], registry, tag)
            value = {**value, tag: name}
        return value

    return normalise


@functools.cache
def _adapter(target: Any) -> TypeAdapter[Any]:
    return TypeAdapter(target)


def validate_as(target: Any, value: Any) -> Any:
    """Validate ``value`` against an annotated type (a tagged registry), adapter built once."""
    return _adapter(target).validate_python(value)


def _unknown_key(key: str, allowed: set[str], value: Any) -> InitErrorDetails:
    hint = suggest(str(key), allowed) or ";"
    message = f"unknown key {key!r}{hint} allowed: {', '.join(sorted(allowed))}"
    return InitErrorDetails(
        type=PydanticCustomError("unknown_key", _escape(message), {"key": key}), loc=(key,), input=value
    )


def _as_details(error: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError(error["type"], _escape(error["msg"]), error.get("ctx")),
        loc=error["loc"],
        input=error.get("input"),
    )


class Frozen(BaseModel):
    """Immutable; every unknown key is an error that suggests the closest valid one.

    Unknown keys are reported together with the other errors of the same model, so a
    typo does not hide a wrong value next to it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)

    @classmethod
    def _accepted_keys(cls, data: dict[str, Any]) -> set[str]:
        """Keys this model takes from a mapping (subclasses with flat arguments widen it)."""
        return set(cls.model_fields)

    @classmethod
    def _reshape(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Turn the user's mapping into the model's fields (identity by default)."""
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _check_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        allowed = cls._accepted_keys(data)
        errors = [_unknown_key(k, allowed, v) for k, v in data.items() if k not in allowed]
        known = {k: v for k, v in data.items() if k in allowed}
        try:
            result = handler(cls._reshape(known))
        except ValidationError as err:
            if not errors:
                raise
            errors += [_as_details(e) for e in err.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return result
