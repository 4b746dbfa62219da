"""The one error a tape can raise: it names the file, the line and the problem."""

from __future__ import annotations

from pathlib import Path


class TapeError(ValueError):
    """A tape that does not follow the tape format (``shared/tape-format.md``, version 1)."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")
