"""User-facing errors: one clear line, exit code 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad recipe, bad data, missing file or model).

    Args:
        message: what is wrong and how to fix it.
        source: where it is: ``file:line``, a recipe key path such as ``training.learning_rate``,
            or a model reference.
        problems: further ``(source, message)`` pairs when several problems are reported at once.
    """

    def __init__(self, message: str, source: str | None = None,
                 problems: list[tuple[str | None, str]] | None = None):
        self.message = message
        self.source = source
        self.problems = problems or [(source, message)]
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(_line(src, msg) for src, msg in self.problems)

    def lines(self) -> list[str]:
        """Each problem as ``error: <where>: <what>``."""
        return [f"error: {_line(src, msg)}" for src, msg in self.problems]


def _line(source: str | None, message: str) -> str:
    return f"{source}: {message}" if source else message
