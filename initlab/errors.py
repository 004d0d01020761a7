"""Errors initlab reports to users as one line, without a traceback."""

from __future__ import annotations


class InitlabError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits 2."""


class ConfigError(InitlabError):
    """An invalid config file or override; each element of ``lines`` is one located problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
