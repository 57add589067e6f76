"""The one-line error text every entry point prints: one helper for the node, tools and training.

Kept free of ROS and torch so that any module can import it.
"""
from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The error's own message on one line (its type name when it has none).

    A torch DataLoader worker re-raises its error with the whole worker traceback as message;
    then the original message is the last line, after the exception's qualified name.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and any(ln.startswith("Original Traceback") for ln in lines):
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        return lines[-1].removeprefix(prefix)
    return lines[0]
