"""The package version: a leaf module, so anything may import it without importing lmfix
(``from . import __version__`` would make every importer depend on the package's __init__)."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's [project] version
