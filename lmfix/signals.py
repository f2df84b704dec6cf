"""SIGINT and SIGTERM, handled one way for every command.

Two modes, one module:

- :func:`install` (the CLI, and every ``lmfix run --jobs`` worker): the first Ctrl-C or SIGTERM
  raises :class:`~lmfix.errors.Interrupted` where the program is, so every atomic writer
  removes its temporary file and the command ends with one line and 130 / 143. Every later
  signal is ignored at the C level (``SIG_IGN``) from then on: the command is already
  stopping, and a handler run again while the interpreter shuts down printed a traceback
  after the one-line message (4 times in 6 under ``evaluate --file`` on a pipe).
- :class:`Flag` (the training loop, and ``lmfix run --jobs``'s parent): while its block runs,
  a signal only records its name, which the loop polls, so it can checkpoint (or stop its
  workers) before it stops; a second one is counted, which the parent uses to kill workers
  that have not stopped.
"""

from __future__ import annotations

import signal
import threading

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _raise_once(signum, frame):
    ignore()
    raise Interrupted(f"interrupted by {_name(signum)}" +
                      (" (Ctrl-C)" if signum == signal.SIGINT else ""), _name(signum))


def install() -> None:
    """The command-wide handler (see the module docstring); main thread only."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _raise_once)


def ignore() -> None:
    """From now on, SIGINT and SIGTERM do nothing: called once a command is stopping."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


class Flag:
    """``with Flag() as flag:`` — signals append their names to ``flag.got``; ``flag()`` is the
    first one's name or None. Off the main thread (where Python cannot handle signals) it
    never fires. The previous handlers come back when the block ends."""

    def __init__(self):
        self.got: list[str] = []
        self._old: dict = {}

    def __call__(self) -> str | None:
        return self.got[0] if self.got else None

    def __enter__(self) -> Flag:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.got.append(_name(signum))

    def __exit__(self, *exc) -> bool:
        if self.got:  # the command is stopping: a further signal must not raise mid-way
            ignore()
        else:
            for s, h in self._old.items():
                signal.signal(s, h)
        return False
