"""mapc's own version, from the installed distribution (pyproject.toml is the one source)."""

from importlib.metadata import version

__version__ = version("mapc")
