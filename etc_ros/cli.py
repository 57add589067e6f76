"""One command-line style for the tools: parser, error prefix and exit codes.

Every tool prints a failure as one line `<tool>: error: <message>` on stderr, never a traceback,
and exits with EXIT_USAGE (2) for a bad command line or bad input (missing or unreadable file,
bad parameter), EXIT_FAILURE (1) when the run itself failed (a child died, nothing could be
measured) and EXIT_INTERRUPTED (130) on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from etc_ros.errors import one_line

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: `<tool>: error: <message>`, exit 2.

    `tool` is the short name used as the error prefix; `prog` (shown by --help) defaults to
    `python -m etc_ros.<tool>`.
    """

    def __init__(self, tool: str, **kwargs: object) -> None:
        kwargs.setdefault("prog", f"python -m etc_ros.{tool}")
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.tool = tool

    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block."""
        self.exit(EXIT_USAGE, f"{self.tool}: error: {message}\n")


def fail(tool: str, problem: BaseException | str, code: int = EXIT_FAILURE) -> int:
    """Print `<tool>: error: <one line>` on stderr and return `code` for main() to return."""
    text = problem if isinstance(problem, str) else one_line(problem)
    print(f"{tool}: error: {' '.join(text.split())}", file=sys.stderr)
    return code
