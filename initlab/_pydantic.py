"""The frozen, strict pydantic base every config model derives from, and choice errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def suggest(given: str, valid: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(given, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_choice(kind: str, given: object, valid: Iterable[str]) -> PydanticCustomError:
    """A validation error for a name that is not registered, listing the valid ones."""
    names = sorted(valid)
    message = f"unknown {kind} {given!r}{suggest(str(given), names) or ';'} valid: {', '.join(names)}"
    return PydanticCustomError("unknown_choice", _escape(message), {"given": str(given)})


def _escape(message: str) -> str:
    """Pydantic formats custom messages with str.format; keep user text literal."""
    return message.replace("{", "{{").replace("}", "}}")


class Frozen(BaseModel):
    """Immutable, rejects unknown keys with a suggestion of the closest valid one."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = set(cls.model_fields)
            for key in data:
                if key not in allowed:
                    hint = suggest(str(key), allowed) or ";"
                    message = f"unknown key {key!r}{hint} allowed: {', '.join(sorted(allowed))}"
                    # `key` in the context lets error reports point at the key's own line.
                    raise PydanticCustomError("unknown_key", _escape(message), {"key": key})
        return data
