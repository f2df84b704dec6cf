"""lmfix: LSTM language models with fixed word embeddings (Hoffer, Hubara & Soudry 2018).

``import lmfix`` is cheap (torch is not imported); ``lmfix.load(RUN_DIR)`` imports
:mod:`lmfix.inference` on first use and returns a :class:`~lmfix.inference.LanguageModel`.
"""

from ._version import __version__

__all__ = ["__version__", "load", "LanguageModel"]
_LAZY = ("load", "LanguageModel")


def __getattr__(name: str):
    """PEP 562: ``lmfix.load`` and ``lmfix.LanguageModel`` without importing torch up front."""
    if name in _LAZY:
        from . import inference
        return getattr(inference, name)
    raise AttributeError(f"module 'lmfix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
