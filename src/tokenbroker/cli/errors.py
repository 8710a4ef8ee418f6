"""The CLI's exit codes and the one-line errors that carry them (every command uses
these; click prints ``Error: <message>`` on stderr and exits with ``exit_code``).

- 0: success (also when a query matches nothing);
- 1 (:class:`CommandFailed`): the operation failed (not found, conflict, AWS error, a
  period failed verification...);
- 2 (:class:`BadInput`, :class:`ConfigProblem`): the command cannot run as given: a bad
  option value (time, filter, cursor) or configuration (deployment, credentials, region).
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(text.split())


class CommandFailed(click.ClickException):
    """The operation was attempted and failed."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class BadInput(click.ClickException):
    """An option's value is wrong; the message says which and what would be right."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ConfigProblem(click.ClickException):
    """The deployment, credentials or region cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))
