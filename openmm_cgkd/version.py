"""The package version (a module of its own, so that no module needs the root package for it)."""
__version__ = "0.1.0"
