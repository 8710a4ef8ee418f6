"""What can go wrong reading template.yaml or emulating it (one-line messages)."""

from __future__ import annotations


class TemplateError(ValueError):
    """template.yaml says something this loader cannot answer, or says it wrongly."""


class UnresolvedReference(TemplateError, KeyError):
    """An intrinsic names something the caller gave no value for (or that does not exist)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class LocalConfigError(TemplateError):
    """The template asks for something the local stack cannot emulate."""
