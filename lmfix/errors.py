"""The one exception type for mistakes a user can make.

The CLI catches :class:`LmfixError` and prints its message alone (no traceback) with a
non-zero exit; anything else is a bug in lmfix and keeps its traceback.
"""


class LmfixError(Exception):
    """A problem with the user's input or environment, explained in one message."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (:mod:`lmfix.signals`): the CLI prints the message (what stopped, how
    to continue) and exits with the shell's conventional status, 128 + the signal number
    (130, 143). A KeyboardInterrupt, as Python's own Ctrl-C is, so no ``except Exception``
    (a library's error handling, a fallback) can mistake it for a failure and carry on."""

    def __init__(self, message: str, signal_name: str = "SIGINT"):
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_status(self) -> int:
        import signal
        return 128 + signal.Signals[self.signal_name].value


def first_line(e: BaseException) -> str:
    """An exception's first message line (library messages can run to many lines)."""
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__
