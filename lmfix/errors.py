"""The one exception type for mistakes a user can make.

The CLI catches :class:`LmfixError` and prints its message alone (no traceback) with a
non-zero exit; anything else is a bug in lmfix and keeps its traceback.
"""


class LmfixError(Exception):
    """A problem with the user's input or environment, explained in one message."""


def first_line(e: BaseException) -> str:
    """An exception's first message line (library messages can run to many lines)."""
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__
