"""The one exception type for mistakes a user can make.

The CLI catches :class:`LmfixError` and prints its message alone (no traceback) with a
non-zero exit; anything else is a bug in lmfix and keeps its traceback.
"""


class LmfixError(Exception):
    """A problem with the user's input or environment, explained in one message."""
